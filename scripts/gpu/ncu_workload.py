"""A workload for Nsight Compute (issue 23): our split + merge at decode_real's sparse launch and FlashInfer's page
table over the same random chunks at one kernel-benchmark shape (32K keys, T = 5, random bf16 inputs), each called
``calls`` times in turn, nothing else on the GPU. Profile one call of each kernel after the first round, e.g.
``ncu --kernel-name regex:"_split_kernel|BatchPrefillWithPagedKVCache" --launch-skip 2 --launch-count 2
--section SpeedOfLight --section Occupancy python3 scripts/gpu/ncu_workload.py llama-2-7b 16 0.1``
(scripts/gpu/background.sh does, with the stall reasons). Arguments: model (``specattn.bench.attention.MODELS``),
batch, kept fraction of the chunks (0: one chunk a list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import CONFIGS, page_table, random_case  # noqa: E402  (it puts the repository on the path)

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.gpu.attention.sparse import sparse_verify  # noqa: E402
from specattn.gpu.kernels.sparse_attn import make_workspace  # noqa: E402

SPARSE_LAUNCH = CONFIGS["sparse128"]  # decode_real's sparse launch
CHUNK, KEYS, STEP = 16, 32768, 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("batch", type=int)
    ap.add_argument("kept", type=float)
    ap.add_argument("--calls", type=int, default=4)
    args = ap.parse_args()
    hq, hkv, d = MODELS[args.model]
    gen, cgen = torch.Generator(device="cuda").manual_seed(0), torch.Generator().manual_seed(0)
    s, lists, nc = random_case(hq, hkv, d, args.batch, STEP, args.kept, gen, cgen, CHUNK, KEYS)
    fi = page_table(s, lists, CHUNK, KEYS, torch.zeros(256 << 20, dtype=torch.uint8, device="cuda"))
    same = fi.same_selection(nc)
    ws = make_workspace(args.batch, hkv, hq // hkv, STEP, d, SPARSE_LAUNCH, "cuda")
    for _ in range(args.calls):
        fi()
        sparse_verify(s.q, s.k, s.v, s.lengths, same.ids, same.n, CHUNK, out=s.out, workspace=ws, config=SPARSE_LAUNCH)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
