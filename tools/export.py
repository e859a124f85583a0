"""`python tools/export.py --help`: the command line of effdet.cli.export (also installed as effdet-export)."""
import sys

from effdet.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
