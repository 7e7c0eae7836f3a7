"""Benchmarks: each `bench/bench_<area>.py` runs as `python -m bench.bench_<area> [--quick]`."""
