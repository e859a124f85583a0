#!/usr/bin/env python
"""Export a checkpoint to ONNX: raw outputs or detections with NMS in the graph, fp16/int8 (effdet-export)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from effdet.cli.export import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
