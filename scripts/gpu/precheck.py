"""Check a GPU command's overrides here, before a device session spends time on it: compose, validate and plan
the run(s) exactly as ``run.py`` does before loading weights (``specattn.runs.preflight``), with CUDA reported
present so ``device=cuda`` passes. One line per job: ``ok`` or the error a run would stop with.

    python scripts/gpu/precheck.py model=qwen_coder device=cuda experiment=paper_table dataset.first_sample=30 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.core.errors import SpecAttnError  # noqa: E402
from specattn.runs.preflight import check_job, jobs  # noqa: E402
from specattn.runs.validate import register_resolvers  # noqa: E402


def main(overrides: list[str]) -> int:
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    register_resolvers()
    multirun = "-m" in overrides
    overrides = [o for o in overrides if o != "-m"]
    failed = 0
    for job, _ in jobs(overrides, multirun):
        try:
            check_job(job, ROOT / "conf", "config", multirun)
            print("ok", " ".join(job))
        except SpecAttnError as error:
            failed += 1
            print("FAIL", " ".join(job), "->", error)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
