"""Benchmarks behind tools/benchmark.py (each module one kind of measurement)."""
