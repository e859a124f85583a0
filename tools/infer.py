"""`python tools/infer.py --help`: the command line of effdet.cli.infer (also installed as effdet-infer)."""
import sys

from effdet.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
