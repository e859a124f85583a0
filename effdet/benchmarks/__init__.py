"""Benchmarks that are more than a timing: the convergence benchmark (training quality vs the reference)."""
