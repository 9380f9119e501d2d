"""GPU benchmarks: the kernels (``python run.py experiment=kernel_bench``, :mod:`.kernel_bench`) and
end-to-end decoding (``experiment=decode_bench``, :mod:`.decode_bench`)."""
