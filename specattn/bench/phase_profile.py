"""Where a decoding phase's GPU time goes: one CUDA-graph replay's kernels by class, against the bytes each class
must read.

A phase of the graph decoder (its draft or its verify phase, one graph replay) is a chain of kernels on one stream.
Its time splits into each class's kernel time (:data:`KERNEL_CLASSES`: the GEMMs that read the weights, the attention
kernels that read the KV cache, the selection kernels, the layers' fused glue, PyTorch's own ops), the idle gaps
between consecutive kernels (the GPU's launch latency inside a graph) and the replay's own start and end (its wall
time less the kernels' span). A kernel that overlaps the one before it (the merge launched as the split's
programmatic dependent waits inside it) counts only its time past the kernels that started before it, so the classes'
times add up to the GPU's busy time. Each class's floor is the bytes the roofline charges to it
(:func:`specattn.decode.roofline.step_bytes`' components, :data:`FLOOR_PARTS`) over the measured read bandwidth; a
class's time above its floor, the gaps and the replay's overhead are what the roofline does not count: the step's
fixed time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

#: (class, pattern of kernel names), first match wins; a kernel matching none is a PyTorch op ("pytorch ops")
KERNEL_CLASSES = (
    ("attention", r"_split_kernel|_merge_kernel"),
    ("gemm", r"gemm|gemv|nvjet|xmma|cutlass|splitKreduce|_skinny_kernel|_qkv_rope_kernel|_gate_up_silu_kernel"),
    ("selection", r"_rows_kernel|nucleus|_onchip_kernel|_seg_stats_kernel|_decide_kernel|_compact_kernel|"
                  r"_finish_kernel|_chunk_max_kernel|_chunk_union_kernel|_list_kernel|_budget_top_kernel|"
                  r"_quest_bound_kernel|_quest_fold_kernel|_bsr_kernel"),
    ("layer glue", r"_rope_cache_kernel|_silu_mul_kernel|_rmsnorm_kernel"),
)
OTHER = "pytorch ops"
CLASSES = tuple(name for name, _ in KERNEL_CLASSES) + (OTHER,)

#: roofline component -> (phase, class) that reads its bytes (the graph decoder: the draft's weights, KV and its own
#: selection (``first_dense``) and the row at P from saved scores (``first_*``) in the draft phase; the verifier's
#: weights and KV and SpecAttn's selection (the draft rows over the draft's keys, the nucleus) in the verify phase)
FLOOR_PARTS = {
    "draft_weights": ("draft", "gemm"), "draft_kv": ("draft", "attention"),
    "draft_select_k": ("draft", "selection"), "draft_select": ("draft", "selection"),
    "row0_scores": ("draft", "selection"),
    "verifier_weights": ("verify", "gemm"), "verifier_kv": ("verify", "attention"),
    "draft_rows_k": ("verify", "selection"), "selection": ("verify", "selection"),
}
GAPS = "gaps between kernels"
REPLAY = "replay start and end"


@dataclass(frozen=True)
class Kernel:
    """One kernel of a replay: its name and its start and end on the GPU (us, any common origin)."""

    name: str
    start_us: float
    end_us: float


def kernel_class(name: str) -> str:
    """The class (:data:`KERNEL_CLASSES`) of a kernel by its name."""
    for label, pattern in KERNEL_CLASSES:
        if re.search(pattern, name):
            return label
    return OTHER


def exclusive_us(kernels: list[Kernel]) -> list[float]:
    """Each kernel's time not covered by the kernels that started before it (us; in start order of the input's
    order): their sum is the union of the kernels' intervals, the GPU's busy time."""
    out, covered = [0.0] * len(kernels), float("-inf")
    for i in sorted(range(len(kernels)), key=lambda i: (kernels[i].start_us, kernels[i].end_us)):
        k = kernels[i]
        out[i] = max(0.0, k.end_us - max(k.start_us, covered))
        covered = max(covered, k.end_us)
    return out


def floor_bytes(parts: dict[str, float], phase: str) -> dict[str, float]:
    """Bytes each class of ``phase`` must read, from :func:`~specattn.decode.roofline.step_bytes`' components
    (``total`` ignored; a component :data:`FLOOR_PARTS` does not place raises: no byte goes uncounted)."""
    unknown = set(parts) - set(FLOOR_PARTS) - {"total"}
    if unknown:
        raise ValueError(f"roofline components {sorted(unknown)} have no phase and class in FLOOR_PARTS")
    out = dict.fromkeys(CLASSES, 0.0)
    for part, value in parts.items():
        if part in FLOOR_PARTS and FLOOR_PARTS[part][0] == phase:
            out[FLOOR_PARTS[part][1]] += value
    return out


def phase_breakdown(kernels: list[Kernel], wall_ms: float, floors: dict[str, float], bandwidth: float) -> pd.DataFrame:
    """One row per class, then the gaps and the replay's overhead, then ``total``: ``kernels`` (count), ``ms`` (the
    class's exclusive time), ``floor_ms`` (its bytes in ``floors`` over ``bandwidth``, bytes/s) and
    ``above_floor_ms``; the total's ``ms`` is ``wall_ms`` (the replay's median wall time)."""
    if not kernels:
        raise ValueError("no kernels in the replay: was it profiled on the GPU?")
    excl = exclusive_us(kernels)
    labels = [kernel_class(k.name) for k in kernels]
    rows = []
    for label in CLASSES:
        mine = [e for c, e in zip(labels, excl) if c == label]
        floor = floors.get(label, 0.0) / bandwidth * 1e3
        rows.append({"part": label, "kernels": len(mine), "ms": sum(mine) / 1e3, "floor_ms": floor})
    span = max(k.end_us for k in kernels) - min(k.start_us for k in kernels)
    busy = sum(excl)
    rows.append({"part": GAPS, "kernels": len(kernels) - 1, "ms": (span - busy) / 1e3, "floor_ms": 0.0})
    rows.append({"part": REPLAY, "kernels": 0, "ms": wall_ms - span / 1e3, "floor_ms": 0.0})
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {"part": "total", "kernels": len(kernels), "ms": wall_ms,
                             "floor_ms": table["floor_ms"].sum()}
    table["above_floor_ms"] = table["ms"] - table["floor_ms"]
    return table


def top_kernels(kernels: list[Kernel], n: int = 12, width: int = 70) -> pd.DataFrame:
    """The ``n`` kernel names with the most exclusive time: class, calls, total ms and mean us a call."""
    table = pd.DataFrame({"name": [k.name[:width] for k in kernels], "class": [kernel_class(k.name) for k in kernels],
                          "us": exclusive_us(kernels)})
    out = table.groupby(["name", "class"], as_index=False).agg(calls=("us", "size"), ms=("us", "sum"),
                                                               mean_us=("us", "mean"))
    out["ms"] /= 1e3
    return out.sort_values("ms", ascending=False).head(n).reset_index(drop=True)


def fixed_time_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per mode (rows of :func:`phase_breakdown` tables with ``mode`` and ``phase`` columns, e.g. a CSV of
    ``scripts/gpu/profile_real.py --csv``): the step's phases summed, ``ms``, ``floor_ms``, ``kernels``, then each
    part's ms above its floor over both phases, the ``total`` above the floor last; where the rows carry them (the CSVs
    since the thirty-third session), the step's ms in the timed decoding (``step_ms``) and the read bandwidth the floors
    used (``read_tbs``, TB/s) first."""
    totals = rows[rows["part"] == "total"].groupby("mode", sort=False)[["ms", "floor_ms", "kernels"]].sum()
    carried = [c for c in ("step_ms", "read_tbs") if c in rows.columns]
    if carried:
        totals = pd.concat([rows.groupby("mode", sort=False)[carried].first(), totals], axis=1)
    above = rows.pivot_table(index="mode", columns="part", values="above_floor_ms", aggfunc="sum", sort=False)
    order = [c for c in (*CLASSES, GAPS, REPLAY, "total") if c in above.columns]
    return pd.concat([totals, above[order]], axis=1)


def versus_table(base: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Per mode both profiles have (their :func:`fixed_time_table` rows), ``other`` minus ``base``: each column's
    difference (ms a step, kernels, each part's ms above its floor); ``read_tbs`` (a run's own draw) left out."""
    a, b = fixed_time_table(base), fixed_time_table(other)
    modes = [m for m in a.index if m in b.index]
    columns = [c for c in a.columns if c in b.columns and c != "read_tbs"]
    return b.loc[modes, columns] - a.loc[modes, columns]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m specattn.bench.phase_profile",
                                     description="A step's ms above its byte floor by part, per mode, from the CSVs "
                                                 "of scripts/gpu/profile_real.py --csv.")
    parser.add_argument("csv", nargs="+", help="breakdown rows (part, kernels, ms, floor_ms, above_floor_ms, mode, "
                                               "phase)")
    parser.add_argument("--versus", metavar="CSV", help="a profile of the same point under other settings: print "
                                                        "each CSV's differences from it (theirs minus its)")
    args = parser.parse_args(argv)
    for path in args.csv:
        print(f"{path}: ms a step (both phases) and ms above the byte floor by part")
        print(fixed_time_table(pd.read_csv(path)).to_string(float_format=lambda x: f"{x:.3f}"))
        if args.versus:
            print(f"{path} minus {args.versus}:")
            print(versus_table(pd.read_csv(args.versus), pd.read_csv(path)).to_string(
                float_format=lambda x: f"{x:+.3f}"))


if __name__ == "__main__":
    main()
