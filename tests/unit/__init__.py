"""Unit tests: effdet's modules and its library API, in process (a few run a tool's main(argv))."""
