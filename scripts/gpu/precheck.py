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

from specattn.runs.preflight import check_jobs  # noqa: E402
from specattn.runs.validate import register_resolvers  # noqa: E402


def main(overrides: list[str]) -> int:
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    register_resolvers()
    checked = check_jobs([o for o in overrides if o != "-m"], ROOT / "conf", "-m" in overrides)
    for job, error in checked:
        print("ok" if error is None else "FAIL", " ".join(job), *(["->", error] if error is not None else []))
    return 1 if any(error is not None for _, error in checked) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
