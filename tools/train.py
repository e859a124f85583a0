"""`python tools/train.py --help`: the command line of effdet.cli.train (also installed as effdet-train)."""
import sys

from effdet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
