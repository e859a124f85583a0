#!/usr/bin/env python
"""Check a COCO-format dataset (see effdet/cli/check_data.py)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702
from effdet.cli.check_data import main  # noqa: E402
if __name__ == "__main__":
    sys.exit(main())
