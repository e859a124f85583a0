"""End-to-end runs: the tools, console scripts and the wheel, run in a subprocess as a user runs them."""
