"""Write a synthetic COCO-format dataset: the shapes demo, many small objects, or 10 look-alike classes.

    python tools/make_demo_data.py --out demo_data [--kind shapes|small|similar|aerial] [--num-train 400 --num-val 80 --seed 0]

Kinds: see effdet/data/synthetic.py (``shapes`` is the demo set of ``make demo``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..data.synthetic import KINDS, make_synthetic_dataset


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="effdet-make-demo-data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--num-train", type=int, default=400, help="training images (default 400)")
    parser.add_argument("--num-val", type=int, default=80, help="validation images (default 80)")
    parser.add_argument("--kind", choices=sorted(KINDS), default="shapes",
                        help="shapes (the demo), small (many 16-40 px objects), similar (digits 0-9), aerial (1,500-3,000 px "
                             "scenes with 50-400 objects of 12-40 px)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    args = parser.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        parser.error("--num-train and --num-val must be >= 0")
    paths = make_synthetic_dataset(args.kind, args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    for key, value in paths.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
