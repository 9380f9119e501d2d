"""When each program of the split kernel starts, learns its lists and ends (issue 23: where the split's 8-10 us above a
streaming read of the same bytes go: the launch's spread, each program's start-up, or the tail).

The tree's ``sparse_attn.py`` with three clock reads in ``_split_kernel`` (``%globaltimer_lo``, ns, and ``%smid``) and a
count of the units and ranges each program took is loaded beside it (:func:`timed_source`: patched at fixed anchors, so
the timed kernel is the tree's; the reads add registers: 206 -> 212 at decode_real's launch, and the dynamic-range
kernel spills 56 bytes with them, aot_check); each program stores, in the workspace's ticket buffer (unused without the
fused merge), its start, the time its lists are known (the first dependent loads done), the end of its last block's
arithmetic, its SM, its units and its ranges. At one kernel-benchmark shape (32K keys, T = 5, random bf16 inputs and
chunks, decode_real's sparse launch, with each ``--steal`` setting at ``--steal-ranges``) it prints, over ``--calls``
eager calls (medians): the programs' start spread, each program's start-up (start -> lists known), duration and end
relative to the first start, the span, a least-squares fit of a program's duration against its units (the intercept: a
program's fixed cost; the slope: a unit's time at that load; flat where every program has the same units), and the
median duration of programs alone on their SM and of those sharing it; ``--dump DIR``: every call's per-program table as
a CSV a setting (:func:`programs`: program, start, lists known, end in us from the call's first start, SM, units,
ranges), for what a median hides (which programs are slow: their SMs, their place in the unit order). Run on the GPU
machine: ``python3 scripts/gpu/split_timeline.py llama-3.1-8b 4 0.1 0.25 0.5 --steal 0 25 [--dump DIR]``."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_kernel import load_base, use  # noqa: E402  (profile_kernel, imported there, puts the repository on the path)
from profile_kernel import CONFIGS, kernel_us, ours, random_case  # noqa: E402

import specattn.gpu.kernels.sparse_attn as kernels_tree  # noqa: E402
from specattn.bench.attention import MODELS  # noqa: E402

SLOTS = 8  # int32 words a program's record takes: start, lists known, end, SM, units, ranges taken
CLOCK = '''@triton.jit
def _clock(after):
    """(globaltimer low word in ns, SM id), read once ``after`` (any int32 scalar) is known."""
    t = tl.inline_asm_elementwise("mov.u32 $0, %globaltimer_lo; // $1", "=r,r", [after], dtype=tl.int32,
                                  is_pure=False, pack=1)
    s = tl.inline_asm_elementwise("mov.u32 $0, %smid; // $1", "=r,r", [after], dtype=tl.int32, is_pure=False, pack=1)
    return t, s


'''
SPLIT = '@triton.jit(do_not_specialize=["T", "cap", "P", "min_units", "BH"])\ndef _split_kernel('
START = "    p = tl.program_id(0)\n    if PDL:"
RANGES = "    w0, d0, w1, n_ranges = _ranges(total, P, min_units, STEAL, STEAL_RANGES)\n"
UNITS = "        u, u1 = _range_units(r, P, w0, d0, w1, total)\n"
END = "    if FUSED:  # a list of no chunks has no split program"
PATCHES = [  # (anchor, its replacement)
    (SPLIT, CLOCK + SPLIT),
    (START, "    p = tl.program_id(0)\n    t_start, _ = _clock(p)\n    if PDL:"),
    (RANGES, RANGES + "    t_lists, _ = _clock(n_ranges)\n    done = 0\n    taken = 0\n"),
    (UNITS, UNITS + "        done += tl.maximum(u1 - u, 0)\n        taken += 1\n"),
    (END, f"    t_end, sm = _clock(done)\n    rec = tk_ptr + p * {SLOTS}\n    tl.store(rec, t_start)\n"
          "    tl.store(rec + 1, t_lists)\n    tl.store(rec + 2, t_end)\n    tl.store(rec + 3, sm)\n"
          "    tl.store(rec + 4, done)\n    tl.store(rec + 5, taken)\n" + END),
]


def timed_source(source: str) -> str:
    """``sparse_attn.py``'s text with the clock reads and the record's stores in ``_split_kernel`` (each anchor must
    occur once: a kernel change that moves one fails here, not silently)."""
    for anchor, replacement in PATCHES:
        if source.count(anchor) != 1:
            raise ValueError(f"split_timeline: anchor not found once in sparse_attn.py: {anchor.splitlines()[0]!r}")
        source = source.replace(anchor, replacement)
    return source


def timed_module():
    """The tree's kernel module with the clock reads (:func:`timed_source`), loaded beside it."""
    path = Path(tempfile.mkdtemp()) / "sparse_attn_timed.py"
    path.write_text(timed_source(Path(kernels_tree.__file__).read_text()))
    return load_base(str(path), "_timed")


COLUMNS = ("program", "start", "lists", "end", "sm", "units", "ranges")  # :func:`programs`' columns


def programs(rec):
    """One call's records ``(P, SLOTS)`` int32 (host) -> ``(n, 7)`` float64, a row per program that did work:
    :data:`COLUMNS`, the times in microseconds from the first program's start (the timer's low word may wrap inside a
    call)."""
    import numpy as np

    live = np.flatnonzero(rec[:, 4] > 0)
    rec = rec[live]
    start = rec[:, 0].astype("int64")
    t0 = start.min()
    times = [((rec[:, i].astype("int64") - t0) % (1 << 32)) / 1e3 for i in range(3)]
    return np.column_stack([live, *times, rec[:, 3], rec[:, 4], rec[:, 5]]).astype("float64")


def summary(table) -> dict:
    """One call's :func:`programs` table -> microseconds over the programs that did work: start spread,
    start-up, duration and end quantiles (min, median, max), the span, the duration fit (intercept, slope per unit),
    units and ranges a program took, SMs used, and the median duration of the programs alone on their SM and of
    those sharing it."""
    import numpy as np

    _, s, known, e, sm, units, ranges = table.T
    dur = e - s
    q = lambda x: (float(x.min()), float(statistics.median(x)), float(x.max()))  # noqa: E731
    slope, icpt = _fit(units, dur)
    sms, per_sm = np.unique(sm, return_counts=True)
    alone = np.isin(sm, sms[per_sm == 1])
    med = lambda x: float(statistics.median(x)) if len(x) else float("nan")  # noqa: E731
    return {"programs": len(sm), "units": q(units), "ranges": q(ranges), "start": q(s), "startup": q(known - s),
            "duration": q(dur), "end": q(e), "span": float(e.max()), "fit": (icpt, slope), "sms": len(sms),
            "alone|shared": (med(dur[alone]), med(dur[~alone]))}


def sm_halves(tables) -> dict:
    """Is a slow program's SM slow in every call? Over calls' :func:`programs` tables (>= 2): each SM's median program
    duration in the even and in the odd calls, and their correlation across SMs (``r``: near 1 where the SMs' speeds
    are fixed, a static split weighted by SM could even the ends out; near 0 where which program is slow changes from
    call to call, only a split decided at run time can), with the per-SM medians' (min, median, max) over all calls."""
    import numpy as np

    def per_sm(part):
        rows = np.concatenate(part)
        sm, dur = rows[:, 4], rows[:, 3] - rows[:, 1]
        sms = np.unique(sm)
        return sms, np.array([np.median(dur[sm == m]) for m in sms])

    sm_even, even = per_sm(tables[0::2])
    sm_odd, odd = per_sm(tables[1::2])
    both, ie, io = np.intersect1d(sm_even, sm_odd, return_indices=True)
    r = float(np.corrcoef(even[ie], odd[io])[0, 1]) if len(both) > 2 and even[ie].std() and odd[io].std() else 0.0
    _, every = per_sm(tables)
    return {"sm r": round(r, 3), "sm medians": (float(every.min()), float(np.median(every)), float(every.max()))}


def _fit(x, y) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on x (slope 0 where x does not vary)."""
    mx, my = x.mean(), y.mean()
    vx = ((x - mx) ** 2).sum()
    slope = float(((x - mx) * (y - my)).sum() / vx) if vx > 0 else 0.0
    return slope, float(my - slope * mx)


def main() -> None:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("batch", type=int)
    ap.add_argument("kept", type=float, nargs="+")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--steal", type=int, nargs="+", default=[0], help="SplitConfig.steal values to time (percent)")
    ap.add_argument("--steal-ranges", type=int, default=2, help="SplitConfig.steal_ranges with a steal setting")
    ap.add_argument("--dump", type=Path, help="a folder for every call's per-program table (one CSV a setting)")
    args = ap.parse_args()
    hq, hkv, d = MODELS[args.model]
    module = timed_module()
    gen, cgen = torch.Generator(device="cuda").manual_seed(0), torch.Generator().manual_seed(0)
    print(f"{args.model} batch {args.batch}, 32K, T=5, {CONFIGS['sparse128']}; us, (min, median, max) over programs, "
          f"medians of {args.calls} calls")
    for kept in args.kept:
        s, lists, _ = random_case(hq, hkv, d, args.batch, 5, kept, gen, cgen)  # every steal setting on one case
        for steal in args.steal:
            config = dataclasses.replace(CONFIGS["sparse128"], steal=steal, steal_ranges=args.steal_ranges)
            ws = module.make_workspace(args.batch, hkv, hq // hkv, 5, d, config, "cuda")
            ws = dataclasses.replace(ws, tickets=torch.zeros(ws.programs * SLOTS, dtype=torch.int32, device="cuda"))
            use(module)
            call = ours(s, lists, 16, kept, ws, config)
            split_us = {k: v for k, v in kernel_us(call).items() if "split" in k}
            rows, tables = [], []
            for i in range(args.calls):
                call()
                torch.cuda.synchronize()
                table = programs(ws.tickets.view(-1, SLOTS).cpu().numpy())
                rows.append(summary(table))
                tables.append(table)
            use(kernels_tree)
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                np.savetxt(args.dump / f"timeline_{args.model}_b{args.batch}_kept{kept}_steal{steal}.csv",
                           np.concatenate([np.column_stack([np.full(len(t), i), t]) for i, t in enumerate(tables)]),
                           delimiter=",", fmt="%.3f", header=",".join(("call",) + COLUMNS), comments="")
            med = {k: tuple(np.median([r[k] for r in rows], axis=0).round(2).tolist())
                   if isinstance(rows[0][k], tuple) else round(float(np.median([r[k] for r in rows])), 2)
                   for k in rows[0]}
            if args.calls > 1:
                med.update({k: (tuple(round(x, 2) for x in v) if isinstance(v, tuple) else v)
                            for k, v in sm_halves(tables).items()})
            split = ", ".join(f"{v:.1f}" for v in split_us.values())
            print(f"kept {kept} steal {steal}: split kernel (CUPTI) {split}; "
                  + "; ".join(f"{k} {v}" for k, v in med.items()), flush=True)


if __name__ == "__main__":
    main()
