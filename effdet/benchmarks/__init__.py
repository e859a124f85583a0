"""Benchmarks (``tools/benchmark.py`` / ``effdet-benchmark``): one module per subcommand, the subprocess
runner (:mod:`.common`, :mod:`.workers`), the reference runner shared with the tests (:mod:`.reference`)
and the official figures (:mod:`.figures`). Nothing in the library imports this package."""
