"""Command-line front ends; ``tools/<name>.py`` and the ``effdet-<name>`` console scripts call ``main(argv)``."""
