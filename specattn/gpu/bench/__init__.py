"""Benchmark library code (GPU). ``python -m specattn.bench.kernel_bench`` prints the kernel tables."""
