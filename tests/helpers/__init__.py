"""Test helpers that are not tests (importable as ``helpers``: tests/conftest.py puts tests/ on the path).

:mod:`.reference` runs code against the reference ``effdet`` 0.4.1 in a subprocess; ``reference_runner.py`` is the
script the parity tests run there. Neither ships with the package (``setup.py`` installs only effdet, backbones and
heads).
"""
