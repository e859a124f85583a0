"""`python tools/benchmark.py --help`: the command line of effdet.cli.benchmark (also installed as effdet-benchmark)."""
import sys

from effdet.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
