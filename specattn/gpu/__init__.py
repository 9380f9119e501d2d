"""GPU-only code: kernels, sparse verification attention backends, the per-layer SpecAttn step and
the draft rows of the graph decoder (the kernel benchmarks are :mod:`specattn.bench`).

Nothing here is imported by ``import specattn``; each subpackage imports Triton, FlashInfer or CUDA
only inside the functions that need them, so ``import specattn.gpu.attention`` works on a CPU
machine (the ``torch`` reference backend runs there).

- :mod:`.kernels`: Triton/CUDA kernels (exact nucleus selection, chunk lists and BSR arrays, the
  split-KV sparse verification attention, FlashInfer's tail merge).
- :mod:`.attention`: the verification attention interface and its backends (``torch``,
  ``triton``, ``flashinfer``), the chunk-mask -> BSR / chunk-list builders.
- :mod:`.step`: one verifier layer's whole SpecAttn step on the device (draft rows -> nucleus ->
  chunk mask -> chunk list -> sparse attention), eager or captured in a CUDA graph.
- :mod:`.draft_rows`, :mod:`.rmsnorm`: the draft's head-aggregated rows and a one-launch RMSNorm.
"""
