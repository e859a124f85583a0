"""`python tools/benchmark.py --help`: every benchmark, from a checkout (benchmarks/cli.py): the library's own
(effdet-benchmark) and the comparisons with the reference and other tools, which are not installed."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its benchmarks/ and effdet/
from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
