"""Benchmarks behind ``tools/benchmark.py`` (measurements, not library code paths)."""
