"""`python tools/check_data.py --help`: the command line of effdet.cli.check_data (also installed as effdet-check-data)."""
import sys

from effdet.cli.check_data import main

if __name__ == "__main__":
    sys.exit(main())
