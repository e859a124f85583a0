#!/usr/bin/env python
"""Top-5 ImageNet classes of images with EfficientNet-Lite0/1/2 (effdet-classify)."""
from effdet.cli.classify import main

if __name__ == "__main__":
    raise SystemExit(main())
