"""Benchmarks of your own model (``effdet-benchmark``): one module per subcommand (``model``, ``predict``,
``postprocess``, ``loader``, ``scaling``), the subprocess runner (:mod:`.common`, :mod:`.workers`) and the official
figures (:mod:`.figures`). Everything here works from an installed wheel.

Comparisons with the reference ``effdet`` and other tools (training step, COCO-eval backends, convergence) are not
part of the library: they live in the repository's top-level ``benchmarks/`` package, run by ``tools/benchmark.py``
from a checkout, which builds on these modules. Nothing else in the library imports this package."""
