"""Every benchmark, from a checkout: the library's (effdet-benchmark: your own model) and the comparisons with
the reference effdet and other tools (this package).

    python tools/benchmark.py model [--variants efficientdet_d0 ...] [--runs 10] [--threads 2]
    python tools/benchmark.py train  [--runs 10]     # ours vs the reference effdet, D0 @512 batch 2 and 8, + bf16
    python tools/benchmark.py predict [--runs 20]    # end-to-end predict, ours vs DetBenchPredict
    python tools/benchmark.py predict --runtime all --compare-reference   # every deployment path vs the reference
    python tools/benchmark.py postprocess | loader | cocoeval
    python tools/benchmark.py all [--out FILE]
    python tools/benchmark.py scaling --plot scaling.png [--step 0.5] [--time-up-to 3]   # not part of `all`
    python tools/benchmark.py convergence --compare-reference [--epochs 16] [--data DIR ...]   # val AP per epoch
    python tools/benchmark.py convergence --seeds 5 --arms ours reference --kinds small --out RESULTS  # seeds, paired
    python tools/benchmark.py slicing --weights CKPT [--sahi] [--big 12000]   # large images: whole vs sliced vs SAHI
    python tools/benchmark.py tiling [--seeds 0 1] [--steps 300] [--out runs/tiling]   # whole-image vs tiled training

Every figure is a median over --runs runs after warm-up, with the spread (min–max). Each measurement
runs in a fresh subprocess so its peak memory (max RSS) is its own. The reference package is imported
only in those subprocesses, from EFFDET_PARITY_PATH or .parity/ (`make parity-env`), never in ours.
A subcommand is a module with a `run(args) -> list[str]` (markdown rows), registered in SUBCOMMANDS below: the
library's (effdet.benchmark, see effdet/cli/benchmark.py) or one of this package.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from effdet.cli import benchmark as library

# name -> module with run(args) -> list[str]; in the order `all` runs them
SUBCOMMANDS: dict[str, str] = {
    "model": library.SUBCOMMANDS["model"],
    "train": "benchmarks.train",
    "predict": "benchmarks.predict",  # the library's, plus the reference
    "postprocess": library.SUBCOMMANDS["postprocess"],
    "loader": library.SUBCOMMANDS["loader"],
    "cocoeval": "benchmarks.cocoeval",
    "scaling": library.SUBCOMMANDS["scaling"],
}
NOT_IN_ALL: frozenset[str] = library.NOT_IN_ALL
STANDALONE: dict[str, str] = {
    **library.STANDALONE,
    "convergence": "benchmarks.convergence",  # training quality per epoch, ours vs the reference
    "slicing": "benchmarks.slicing",  # large images: whole image vs sliced vs SAHI, AP and speed
    "tiling": "benchmarks.tiling",  # large images: whole-image vs tiled training, scored whole / sliced / sliced + full
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return library.main(argv, subcommands=SUBCOMMANDS, not_in_all=NOT_IN_ALL, standalone=STANDALONE,
                        prog="tools/benchmark.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
