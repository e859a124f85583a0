"""Command-line front ends: each module has ``main(argv=None) -> int`` (argument parsing, one library call,
printing). ``tools/<name>.py`` and the console scripts ``effdet-<name>`` (setup.py) both run it."""
