"""Train an EfficientDet on a COCO-format dataset.

    python tools/train.py CONFIG.yaml [section.key=value ...]

The YAML is merged with the command-line overrides (section.key=value: trainer.max_epochs=10, eval.nms=hard, seed=1;
the grammar every command shares, effdet.engine.schema.split_overrides) into one validated config (unknown keys fail here,
naming the key and the valid choices). Training again with the same output_dir resumes from
checkpoints/last.ckpt; pass resume=false to start fresh (the old run is moved aside, not deleted).
"""
from __future__ import annotations

import argparse
import logging
import sys

from typing import Sequence

from ..checkpoint.io import MissingPackageError
from ..logs import setup_console_logging
from ..engine.schema import ConfigError, load_train_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="effdet-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. trainer.max_epochs=10 eval.nms=hard")
    args = parser.parse_intermixed_args(argv)
    setup_console_logging(logging.INFO, lightning=True)
    try:
        cfg = load_train_config(args.config, args.overrides)
        from ..engine.runner import train

        train(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MissingPackageError as error:  # an optional package (extra) is not installed: the message says which
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
