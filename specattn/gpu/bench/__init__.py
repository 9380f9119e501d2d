"""GPU benchmarks behind ``python run.py experiment=kernel_bench`` (:mod:`.kernel_bench`)."""
