"""FlashInfer's attention for one verification step, the baselines next to our kernels: dense, and the
sparse selection as a page table (:class:`FlashInferPageTable`).

Each variant reads a paged copy of the cache (HND pages of ``page_size`` keys: ``(pages, Hkv, page,
D)``), is planned once on the host for the step's lengths and replayed as a CUDA graph
(``use_cuda_graph=True``, fixed buffers), so its time is GPU time only:

- ``decode_tc``: ``BatchDecodeWithPagedKVCacheWrapper(use_tensor_cores=True)`` with
  ``q_len_per_req = T`` (the speculative-verification mode: T causal rows per request, split-KV,
  FA2 tensor-core kernel);
- ``decode``: the CUDA-core decode kernel with the T rows as T requests of lengths ``P+1 .. P+T``;
- ``prefill``: ``BatchPrefillWithPagedKVCacheWrapper`` (backend ``auto``), T causal rows per request.

Each result is checked against our dense kernel's output (relative error reported).
"""

from __future__ import annotations

import torch

VARIANTS = ("decode_tc", "decode", "prefill")


def paged_cache(k: torch.Tensor, page: int) -> torch.Tensor:
    """HF ``(B, Hkv, K_cap, D)`` -> contiguous HND pages ``(B * ceil(K_cap / page), Hkv, page, D)``."""
    b, h, n, d = k.shape
    pages = -(-n // page)
    if pages * page != n:
        k = torch.nn.functional.pad(k, (0, 0, 0, pages * page - n))
    return k.view(b, h, pages, page, d).permute(0, 2, 1, 3, 4).reshape(b * pages, h, page, d).contiguous()


def _tables(lengths: list[int], pages_per_seq: int, page: int, device):
    """indptr, indices, last_page_len (int32, device) of requests reading sequence ``i``'s first
    ``lengths[i]`` keys (the list may repeat a sequence: ``(seq, length)`` pairs)."""
    indptr, indices, last = [0], [], []
    for seq, n in lengths:
        used = -(-n // page)
        indices += range(seq * pages_per_seq, seq * pages_per_seq + used)
        indptr.append(len(indices))
        last.append(n - (used - 1) * page)
    as_t = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    return as_t(indptr), as_t(indices), as_t(last)


class FlashInferDense:
    """One variant planned for a batch of B sequences of ``n_keys`` keys each (T step rows)."""

    def __init__(self, variant: str, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, n_keys: int,
                 pages_per_seq: int, page: int, workspace: torch.Tensor):
        import flashinfer

        b, hq, t, d = q.shape
        hkv = kc.shape[1]
        self.q = q.transpose(1, 2).reshape(b * t, hq, d).contiguous()  # (B*T, Hq, D), request-major
        self.kv = (kc, vc)
        self.out = torch.empty_like(self.q)
        dt = q.dtype
        if variant == "decode":  # row i of sequence s is a request over the first P + i + 1 keys
            reqs = [(s, n_keys - t + i + 1) for s in range(b) for i in range(t)]
        else:
            reqs = [(s, n_keys) for s in range(b)]
        indptr, indices, last = _tables(reqs, pages_per_seq, page, q.device)
        if variant in ("decode_tc", "decode"):
            self.wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                workspace, "HND", use_cuda_graph=True, use_tensor_cores=variant == "decode_tc",
                paged_kv_indptr_buffer=torch.empty_like(indptr), paged_kv_indices_buffer=torch.empty_like(indices),
                paged_kv_last_page_len_buffer=torch.empty_like(last))
            extra = {"q_len_per_req": t} if variant == "decode_tc" else {}
            self.wrapper.plan(indptr, indices, last, hq, hkv, d, page, q_data_type=dt, kv_data_type=dt, **extra)
        elif variant == "prefill":
            qo = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=q.device)
            self.wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(
                workspace, "HND", use_cuda_graph=True, qo_indptr_buf=torch.empty_like(qo),
                paged_kv_indptr_buf=torch.empty_like(indptr), paged_kv_indices_buf=torch.empty_like(indices),
                paged_kv_last_page_len_buf=torch.empty_like(last))
            self.wrapper.plan(qo, indptr, indices, last, hq, hkv, d, page, causal=True, q_data_type=dt,
                              kv_data_type=dt)
        else:
            raise ValueError(f"unknown FlashInfer variant {variant!r}: one of {VARIANTS}")

    def __call__(self) -> torch.Tensor:
        return self.wrapper.run(self.q, self.kv, out=self.out)

    def as_hf(self, b: int, t: int) -> torch.Tensor:
        """The last output as ``(B, T, Hq, D)``."""
        return self.out.view(b, t, *self.out.shape[1:])


class FlashInferPageTable:
    """The sparse baseline: FlashInfer's tensor-core decode kernel (``q_len_per_req = T``) reading, per
    sequence, the selected chunks as pages (page = chunk) followed by the pages of the step's own keys.

    ``lists``: our :class:`~specattn.gpu.attention.sparse.ChunkLists` ``(B, 1, cap)`` of selected prefix
    chunks (host-read once here: FlashInfer's ``plan`` runs on the host, timed apart as ``plan_ms``). The
    page holding the first step key also holds the prefix keys before it in that chunk, which FlashInfer
    reads whatever the selection: :meth:`same_selection` gives the lists with that chunk added, the
    selection our kernel must read for an equal comparison.
    """

    def __init__(self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, n_keys: int, pages_per_seq: int,
                 page: int, lists, workspace: torch.Tensor):
        import time

        import flashinfer

        b, hq, t, d = q.shape
        hkv = kc.shape[1]
        self.q = q.transpose(1, 2).reshape(b * t, hq, d).contiguous()
        self.kv = (kc, vc)
        self.out = torch.empty_like(self.q)
        prefix = n_keys - t
        tail = list(range(prefix // page, (n_keys - 1) // page + 1))
        ids, n = lists.ids[:, 0].tolist(), lists.n[:, 0].tolist()
        indptr, indices, last = [0], [], []
        self.selected = []
        for s in range(b):
            chosen = sorted(set(ids[s][: n[s]]) | {tail[0]})
            self.selected.append(chosen)
            pages = [c for c in chosen if c < tail[0]] + tail
            indices += [s * pages_per_seq + c for c in pages]
            indptr.append(len(indices))
            last.append(n_keys - tail[-1] * page)
        as_t = lambda x: torch.tensor(x, dtype=torch.int32, device=q.device)  # noqa: E731
        indptr, indices, last = as_t(indptr), as_t(indices), as_t(last)
        self.wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "HND", use_cuda_graph=True, use_tensor_cores=True,
            paged_kv_indptr_buffer=torch.empty_like(indptr), paged_kv_indices_buffer=torch.empty_like(indices),
            paged_kv_last_page_len_buffer=torch.empty_like(last))
        torch.cuda.synchronize()
        tick = time.perf_counter()
        self.wrapper.plan(indptr, indices, last, hq, hkv, d, page, q_data_type=q.dtype, kv_data_type=q.dtype,
                          q_len_per_req=t)
        torch.cuda.synchronize()
        self.plan_ms = (time.perf_counter() - tick) * 1e3

    def same_selection(self, capacity: int):
        """Our lists of the chunks FlashInfer reads before the step's page: the selection + the step's chunk."""
        from ..gpu.attention.sparse import ChunkLists

        ids = torch.zeros((len(self.selected), 1, capacity), dtype=torch.int32)
        for s, chosen in enumerate(self.selected):
            ids[s, 0, : len(chosen)] = torch.tensor(chosen, dtype=torch.int32)
        n = torch.tensor([[len(c)] for c in self.selected], dtype=torch.int32)
        return ChunkLists(ids.to(self.q.device), n.to(self.q.device))

    def __call__(self) -> torch.Tensor:
        return self.wrapper.run(self.q, self.kv, out=self.out)

    def as_hf(self, b: int, t: int) -> torch.Tensor:
        return self.out.view(b, t, *self.out.shape[1:])


def warm_up(num_qo_heads: int = 32, num_kv_heads: int = 8, head_dim: int = 128,
            dtype: torch.dtype = torch.bfloat16) -> None:
    """Build every variant's FlashInfer module once on a tiny problem (their JIT compilation takes
    minutes on a fresh machine; run this in the background while other work uses the GPU)."""
    b, t, n, page = 1, 5, 64, 16
    q = torch.randn((b, num_qo_heads, t, head_dim), device="cuda", dtype=dtype)
    kc, vc = (torch.randn((b * n // page, num_kv_heads, page, head_dim), device="cuda", dtype=dtype) for _ in range(2))
    ws = torch.zeros(64 << 20, dtype=torch.uint8, device="cuda")
    for variant in VARIANTS:
        FlashInferDense(variant, q, kc, vc, n, n // page, page, ws)()
    torch.cuda.synchronize()
