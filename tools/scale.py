#!/usr/bin/env python
"""Compound scaling: the largest model for a latency/multiply-add budget, and the α·β·γ search (effdet-scale)."""
from effdet.cli.scale import main

if __name__ == "__main__":
    raise SystemExit(main())
