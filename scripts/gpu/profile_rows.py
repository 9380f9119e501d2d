"""The draft-row recompute (``_rows_kernel``, the largest selection cost of SpecAttn's step: 0.95 ms at 32K batch 16
with 22 draft layers) at every launch of :data:`specattn.gpu.kernels.draft_rows.SWEEP`, at the real pair's draft
shapes (Qwen2.5-Coder-0.5B: 14 query heads over 2 KV heads, head dim 64, 24 layers, gamma 4 rows; bfloat16 random
inputs): 13 and 22 mapped layers (the js and proportional maps), 32K at batch 16 and 4, 8K at batch 16, the row
at P alone (R = 1: what the ``first_*`` policies compute after forward 0), and with the read masks applied by the
launch (:class:`specattn.gpu.draft_rows.RowReads`): ``first_window``'s four rows, its rows 1 .. alone (what the
verify phase launches), ``window``'s. Per launch: the median GPU time of 30 timed
calls (CUDA events, 5 warm-up calls excluded), its bandwidth (keys loaded + rows written over the time) and its
largest difference from the default launch's rows. Prints one table; run on the GPU machine:
``python3 scripts/gpu/profile_rows.py`` (about a minute)."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.gpu.draft_rows import RowReads, draft_rows  # noqa: E402
from specattn.gpu.kernels.draft_rows import SWEEP  # noqa: E402

HQ, HKV, D, NL, GAMMA = 14, 2, 64, 24, 4
DTYPE = torch.bfloat16
WARM, TIMED = 5, 30


def median_us(fn) -> float:
    for _ in range(WARM):
        fn()
    times = []
    for _ in range(TIMED):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


SHAPES = [(13, 16, 32768, GAMMA, ""), (13, 16, 32768, GAMMA, "first_window"), (13, 16, 32768, GAMMA - 1, "fw_rows1"),
          (13, 16, 32768, GAMMA, "window"), (22, 16, 32768, GAMMA, ""), (13, 4, 32768, GAMMA, ""),
          (13, 16, 8192, GAMMA, ""), (13, 16, 32768, 1, "")]
# (mapped draft layers, batch, keys, rows, mask): the read mask applied in the launch: "" none; "first_window" its
# four rows, row 0 dense; "fw_rows1" its rows 1 .. alone (row0 = 1: the verify phase's launch since row 0 moved to the
# draft phase), which load only the window's keys; "window" every row windowed
WINDOW = 1024


def main(shapes=SHAPES, timer=None) -> None:
    timer = timer or median_us
    gen = torch.Generator(device="cuda").manual_seed(0)
    print(f"{'slots':>5} {'B':>3} {'keys':>6} {'R':>2} {'mask':>12}  {'launch':18} {'us':>8} {'TB/s':>6} "
          f"{'max diff':>9}")
    for slots, batch, n_keys, rows, mask in shapes:
        cap = n_keys + 64
        keys = torch.randn(NL, batch, HKV, cap, D, device="cuda", generator=gen, dtype=DTYPE)
        q = torch.randn(slots, batch, HQ, rows, D, device="cuda", generator=gen, dtype=DTYPE)
        layers = torch.randperm(NL, device="cuda", generator=gen)[:slots].to(torch.int32)
        first = torch.full((batch,), n_keys - rows + 1, dtype=torch.int32, device="cuda")  # the launch's row 0's
        scale = D ** -0.5
        # each row's exact base-2 log-sum-exp, so the rows are real probabilities (sums 1 over the heads' mean)
        k = keys.index_select(0, layers.long())[:, :, :, :n_keys].float().repeat_interleave(HQ // HKV, dim=2)
        scores = torch.einsum("sbhrd,sbhwd->sbhrw", q.float(), k) * scale
        visible = torch.arange(n_keys, device="cuda") < (first[:, None] + torch.arange(rows, device="cuda"))[..., None]
        lse = torch.logsumexp(scores.masked_fill(~visible[None, :, None], float("-inf")), -1) / math.log(2)
        del k, scores
        width = n_keys
        reads, loaded = None, width
        if mask:  # the sinks' and the last WINDOW keys' chunks, every slot a policy layer
            window = torch.zeros((1, batch, -(-cap // 16)), dtype=torch.bool, device="cuda")
            window[..., :1] = True
            window[..., (n_keys - WINDOW) // 16:] = True
            row0 = int(mask == "fw_rows1")
            reads = RowReads(window, first - 1 - row0, torch.ones(slots, dtype=torch.bool, device="cuda"), 16,
                             int(mask != "window"), row0)
            loaded = width if mask == "first_window" else 16 + WINDOW + 16
        moved = slots * batch * (HKV * loaded * D * 2 + rows * width * 4)  # keys the launch loads + rows written
        reference = None
        for config in SWEEP:
            out = torch.zeros(slots, batch, rows, width, device="cuda")
            fn = lambda: draft_rows(q, lse.contiguous(), keys, layers, first, out, scale, "mean", config=config,  # noqa
                                    reads=reads)
            us = timer(fn)
            if reference is None:
                reference = out.clone()
            diff = (out - reference).abs().max().item()
            name = f"{config.block_n}x{config.blocks} w{config.warps} s{config.stages}"
            print(f"{slots:>5} {batch:>3} {n_keys:>6} {rows:>2} {mask or '-':>12}  {name:18} {us:>8.1f} "
                  f"{moved / us / 1e6:>6.2f} "
                  f"{diff:>9.2e}", flush=True)
        del keys, q, out, reference
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
