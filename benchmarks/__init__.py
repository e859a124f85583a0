"""Comparisons with the reference ``effdet`` 0.4.1 and with other tools, run from a checkout by
``tools/benchmark.py`` (this package is not installed: ``setup.py`` packages only ``effdet``, ``backbones`` and
``heads``).

One module per subcommand that the library's ``effdet-benchmark`` (:mod:`effdet.benchmark`, about your own model)
does not have: ``train`` (a training step, ours against the reference), ``cocoeval`` (pycocotools against
faster-coco-eval), ``convergence`` (val AP per epoch, ours against the reference) and ``predict`` (the library's,
plus the reference's DetBenchPredict); :mod:`.cli` puts them together with the library's subcommands. The reference
runs only in subprocesses whose import path holds nothing of this project (:mod:`.common`, :mod:`.workers`,
:mod:`.reference_train`).
"""
