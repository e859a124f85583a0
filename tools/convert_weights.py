"""`python tools/convert_weights.py --help`: the command line of effdet.cli.convert_weights (also installed as effdet-convert-weights)."""
import sys

from effdet.cli.convert_weights import main

if __name__ == "__main__":
    sys.exit(main())
