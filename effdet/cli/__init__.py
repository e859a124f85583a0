"""Command-line front ends (``main(argv=None)`` each), shared by ``tools/*.py`` and the console scripts."""
