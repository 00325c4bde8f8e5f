"""Benchmarks: ratio tables (run as modules) and pytest-benchmark suites (test_bench_*.py)."""
