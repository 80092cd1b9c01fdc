"""Benchmarks (`make bench`). Each ``bench_*.py`` module has ``run() -> list[Measurement]``.

Every measurement names the baseline it was compared with in the same run; the harness prints
ratios, never absolute targets alone, because machines differ.
"""
