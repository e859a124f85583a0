"""`python tools/anchor_fit.py --help`: the command line of effdet.cli.anchor_fit (also installed as effdet-anchor-fit)."""
import sys

from effdet.cli.anchor_fit import main

if __name__ == "__main__":
    sys.exit(main())
