"""Parity with the reference effdet 0.4.1 (needs .parity/, made by `make parity-env`) and its policy."""
