"""Export a checkpoint to ONNX (effdet-export): raw head outputs, or detections with NMS in the graph.

    effdet-export --weights runs/demo/checkpoints/best.ckpt --out demo.onnx --nms
    effdet-export --weights tf_efficientdet_d0_34-f153e0cf.pth --out d0.onnx --image-size 512 --dynamic-batch
    effdet-export --weights best.ckpt --out demo-int8.onnx --nms --int8 --calibration demo_data/val   # NNCF
    effdet-export --weights best.ckpt --out ort-int8.onnx --nms --int8 --quantizer onnxruntime --calibration DIR
    effdet-export --model efficientdet_lite0 --out lite0.onnx      # random weights (testing, benchmarks)

Any checkpoint the Predictor reads works (ours, converted and reference checkpoints, tf_ ports included).
eval.key=value arguments (as for tools/train.py) override the post-processing stored in the checkpoint
(eval.score_threshold, eval.iou_threshold, eval.pre_nms_top_k, eval.max_detections; the graph always uses hard NMS).
The old form without `eval.` (max_detections=50) still works for one release, with a deprecation message.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..logs import setup_console_logging
from ..export.quantize import QUANTIZERS

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effdet-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="eval.key=value",
                        help="post-processing overrides, e.g. eval.max_detections=50 eval.score_threshold=0.05")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="checkpoint: ours (.ckpt / exported), converted or reference (.pth)")
    source.add_argument("--model", help="variant name with random weights (no checkpoint), e.g. efficientdet_d0")
    parser.add_argument("--num-classes", type=int, default=None, help="with --model: class count (default 90)")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--image-size", default=None, help="N or HxW, multiples of 8 (default: the model's)")
    parser.add_argument("--nms", action="store_true", help="final detections with decode + NMS in the graph")
    parser.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (default 1)")
    parser.add_argument("--half", action="store_true", help="float16 weights/activations (GPU runtimes)")
    parser.add_argument("--int8", action="store_true", help="int8 post-training static quantization")
    parser.add_argument("--calibration", help="with --int8: folder of representative images (your data)")
    parser.add_argument("--quantizer", choices=QUANTIZERS, default="nncf",
                        help="with --int8: nncf (default; keeps the AP, fastest on OpenVINO) or onnxruntime "
                             "(convolutions only; faster than nncf's file on onnxruntime)")
    parser.add_argument("--calibration-images", type=int, default=64, help="images used to calibrate (default 64)")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep batch norms as separate nodes")
    parser.add_argument("--no-check", action="store_true", help="skip onnx.checker and the onnxruntime comparison")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling")
    return parser


def parse_image_size(text: str | None) -> list[int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--image-size must be N or HxW, got {text!r}") from None
    if len(sizes) not in (1, 2):
        raise ValueError(f"--image-size must be N or HxW, got {text!r}")
    return sizes * 2 if len(sizes) == 1 else sizes


def load_source(args: argparse.Namespace, overrides: dict):
    """(model, class names, category ids, post-processing settings) from --weights or --model."""
    from ..modeling.factory import create_model
    from ..modeling.postprocess_settings import make_postprocess_settings
    from ..inference.predictor import Predictor

    if args.model:
        model = create_model(args.model, num_classes=args.num_classes or 90).eval()
        ids = list(range(1, model.config.num_classes + 1))
        return model, [str(i) for i in ids], ids, make_postprocess_settings(None, dict({"nms": "hard"}, **overrides))
    predictor = Predictor.from_checkpoint(args.weights, device="cpu", fuse_bn=False,
                                          trust_checkpoint=args.trust_checkpoint, **overrides)
    return predictor.model, predictor.class_names, predictor.category_ids, predictor.settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides anywhere, as for the other tools
    if args.int8 and not args.calibration:
        parser.error("--int8 needs --calibration DIR (a folder of images like the ones the model will see)")
    if args.int8 and args.half:
        parser.error("--int8 and --half exclude each other")
    setup_console_logging(logging.WARNING)
    from ..export.verify import ExportMismatchError
    from ..export.onnx import export_onnx
    from ..engine.schema import postprocess_options

    try:
        overrides, _ = postprocess_options(args.overrides, "effdet-export")
        image_size = parse_image_size(args.image_size)
        model, names, ids, settings = load_source(args, overrides)
        out = Path(args.out)
        meta = export_onnx(model, out, image_size=image_size, outputs="detections" if args.nms else "raw",
                           class_names=names, category_ids=ids, settings=settings, dynamic_batch=args.dynamic_batch,
                           half=args.half, fold_bn=not args.no_fold_bn, verify=not args.no_check)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): {meta['model']} at "
              f"{meta['image_size'][0]}x{meta['image_size'][1]}, {meta['outputs']} outputs, "
              f"{len(meta['class_names'])} classes" + (", dynamic batch" if args.dynamic_batch else ""))
        if meta["max_abs_diff"] is not None:
            print(f"checked: onnx.checker passed; onnxruntime matches PyTorch (max |diff| {meta['max_abs_diff']:.2e})")
        if args.int8:
            from ..export.quantize import quantize_file

            report = quantize_file(out, out, args.calibration, max_images=args.calibration_images,
                                   quantizer=args.quantizer)
            print(f"quantized to int8 ({report['quantizer']}, {report['format']}, {report['images']} calibration "
                  f"images from {args.calibration}; {report['float_convs']} prediction/stem convolutions kept in "
                  f"float32): {out.stat().st_size / 2**20:.1f} MiB")
    except (FileNotFoundError, ValueError, ExportMismatchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
