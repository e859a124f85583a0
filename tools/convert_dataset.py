"""`python tools/convert_dataset.py --help`: the command line of effdet.cli.convert_dataset (also installed as effdet-convert-dataset)."""
import sys

from effdet.cli.convert_dataset import main

if __name__ == "__main__":
    sys.exit(main())
