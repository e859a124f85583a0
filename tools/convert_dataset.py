#!/usr/bin/env python
"""Convert a Pascal VOC or YOLO dataset to COCO JSON (see effdet/cli/convert_dataset.py)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702
from effdet.cli.convert_dataset import main  # noqa: E402
if __name__ == "__main__":
    sys.exit(main())
