"""``python -m specattn.align SIMILARITY.npy --max-draft-layers K [--dense-layers N] [--out layer_map.yaml]``: the
monotone layer map of a saved similarity matrix (``similarity.npy`` of ``experiment=align``, ``similarity_<metric>.npy``
of ``align_study``, or the ``layer_map=auto`` cache), with at most K distinct draft layers over the verifier layers
from N on (the layers that select from draft rows; the decoder recomputes each distinct draft layer's rows from its
keys every step, so K bounds that read). Prints the bounded and the unbounded map, each one's distinct draft layers and
mean chosen similarity; ``--out`` writes the bounded one as a ``layer_map=<path>`` file. No model is loaded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..core.errors import SpecAttnError
from .calibrate import write_layer_map
from .dp import monotonic_alignment


def describe(similarity: np.ndarray, mapping: list[int], dense_layers: int) -> str:
    """One line: the map, its distinct draft layers past ``dense_layers`` and its mean chosen similarity there."""
    sparse = mapping[dense_layers:]
    chosen = [similarity[i, j] for j, i in enumerate(mapping)][dense_layers:]
    return (f"{mapping}: {len(set(sparse))} distinct draft layers past the first {dense_layers}, mean similarity "
            f"{float(np.mean(chosen)) if chosen else float('nan'):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specattn.align", description=__doc__.split("\n\n")[0])
    parser.add_argument("similarity", type=Path, help="a (n_draft, n_verifier) .npy similarity matrix")
    parser.add_argument("--max-draft-layers", type=int, required=True, help="distinct draft layers at most")
    parser.add_argument("--dense-layers", type=int, default=2, help="the first verifier layers (dense; not counted)")
    parser.add_argument("--out", type=Path, help="write the bounded map here (a layer_map=<path> file)")
    args = parser.parse_args(argv)
    try:
        if args.max_draft_layers < 1:
            raise SpecAttnError(f"--max-draft-layers={args.max_draft_layers} must be >= 1")
        if not args.similarity.is_file():
            raise SpecAttnError(f"{args.similarity} does not exist: give the similarity .npy of an align run")
        similarity = np.load(args.similarity)
        bounded = monotonic_alignment(similarity, args.max_draft_layers, args.dense_layers)
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"unbounded: {describe(similarity, monotonic_alignment(similarity), args.dense_layers)}")
    print(f"at most {args.max_draft_layers}: {describe(similarity, bounded, args.dense_layers)}")
    if args.out is not None:
        info = {"similarity": str(args.similarity), "max_draft_layers": args.max_draft_layers,
                "dense_layers": args.dense_layers}
        write_layer_map(args.out, bounded, info)
        print(f"layer_map: {args.out}  (use with layer_map={args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
