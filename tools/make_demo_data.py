"""`python tools/make_demo_data.py --help`: the command line of effdet.cli.make_demo_data (also installed as effdet-make-demo-data)."""
import sys

from effdet.cli.make_demo_data import main

if __name__ == "__main__":
    sys.exit(main())
