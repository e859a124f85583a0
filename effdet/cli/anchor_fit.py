"""The anchor check of a training config, without training (effdet-anchor-fit).

    python tools/anchor_fit.py CONFIG.yaml [section.key=value ...]
    effdet-anchor-fit configs/demo.yaml data.root=demo_data model.anchor_scale=3

Reads the training boxes of the config (the same YAML and section.key=value overrides as tools/train.py), letterboxes
them to the training size and prints the best possible recall of the model's anchors, the boxes no anchor can match,
and a better-fitting `model.anchor_scale` / `model.aspect_ratios` (effdet/engine/anchor_fit.py; tools/train.py runs the same
check at start-up, `data.anchor_fit`). `python -m effdet.anchor_fit`, the old form, still works for one release.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..logs import setup_console_logging

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effdet-anchor-fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training config (YAML, see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. data.root=demo_data model.anchor_scale=3")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    setup_console_logging(logging.WARNING)
    from ..engine.anchor_fit import config_report
    from ..engine.schema import load_train_config

    try:
        print(config_report(load_train_config(args.config, args.overrides)))
    except (OSError, ValueError) as error:  # ConfigError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
