"""`python tools/eval.py --help`: the command line of effdet.cli.eval (also installed as effdet-eval)."""
import sys

from effdet.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
