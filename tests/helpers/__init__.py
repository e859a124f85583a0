"""What the tests share, and are not tests: :mod:`.env` (the repository root, the environment of a tool run in a
subprocess, the test dependencies that `make test` installs), :mod:`.parity` (the parity policy: needs_reference),
:mod:`.reference` (code run against the reference ``effdet`` 0.4.1 in a subprocess; ``reference_runner.py`` is the
script the parity tests run there), :mod:`.checkpoints` (checkpoints written with our own writers),
:mod:`.datasets` (small COCO datasets), ``ddp_fit.py`` (a real DDP fit, run as a script by
tests/e2e/test_distributed.py).

Importable as ``tests.helpers``: pytest.ini puts the checkout on the path (``pythonpath = .``). Nothing here ships
with the package (``setup.py`` installs only effdet, backbones and heads).
"""
