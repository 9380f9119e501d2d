"""Issue 23's real table from the archived runs: the latest H100 run of every point (2K-32K, batch 1/4/16/32, every
mode: autoregressive and dense speculative decoding, SpecAttn p=0.9 and 0.95, StreamingLLM and Quest matched to
SpecAttn p=0.9, and SpecAttn p=0.9 with the first_window draft; every point with the draft's one launches,
qwen_coder's default since the thirty-sixth session, since the fortieth session), pooled by
``python -m specattn.results decoding --markdown``, the later run winning a point both hold.
With ``--policies``, the draft read policies' table instead (:data:`POLICY_RUNS`: first_window with its 2,048-key window
and reuse, every draft layer under the policy, under SpecAttn p=0.9, beside the same run's AR, dense speculative
decoding and SpecAttn p=0.9 / 0.95; batch 16 at 2K-32K and 32K batch 32, the thirty-first session's H100 runs).

The runs live in docs/data as flattened files (``<prefix>_modes.csv``, ``_prompts.csv``, ``_config.yaml``, ...); each
is laid out again as a run folder under a temporary directory. Usage (CPU, a few seconds):
``python scripts/real_table.py docs/data/real_table.md``, ``python scripts/real_table.py --policies
docs/data/policy_table.md`` (each also prints the pooled tables and the step fits; ``--figures DIR`` keeps the
figures: ``decoding_by_context.png``, a row a batch, and ``policy_tradeoff.png``, a panel a point; ``--prompts MODE``
adds MODE's tau loss by prompt and batch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"

#: (run name, flattened prefix under docs/data), oldest first: a point in two runs takes the later one's rows
RUNS = [
    ("h100-27th-16k-b16", "h100-real-2026-12-06b/decode_real_js_16k_b16_matched"),
    ("h100-27th-8k-2k-b16", "h100-real-2026-12-06b/decode_real_js_8k_2k_b16_matched"),
    ("h100-27th-32k-b32", "h100-real-2026-12-06b/decode_real_js_32k_b32_matched"),
    ("h100-28th-b4", "h100-real-2026-12-06c/decode_real_js_b4_matched"),
    ("h100-29th-32k-b16", "h100-real-2026-12-06d/decode_real_js_32k_b16_fold_matched"),
    ("h100-29th-b32", "h100-real-2026-12-06d/decode_real_js_b32_fold_matched"),
    ("h100-29th-b1", "h100-real-2026-12-06d/decode_real_js_b1_fold_matched"),
    ("h100-30th-32k-b16-b32", "h100-real-2026-12-06e/decode_real_js_32k_b16_b32_fold_matched"),
    ("h100-30th-b4", "h100-real-2026-12-06e/decode_real_js_b4_fold_matched"),
    ("h100-30th-b16", "h100-real-2026-12-06e/decode_real_js_b16_fold_matched"),
    ("h100-38th-32k-b16", "h100-real-2026-12-07c/decode_real_js_32k_b16_one_launch_matched_run1"),
    ("h100-38th-32k-b32", "h100-real-2026-12-07c/decode_real_js_32k_b32_one_launch_matched"),
    ("h100-39th-16k-b16", "h100-real-2026-12-07d/decode_real_js_16k_b16_one_launch_matched"),
    ("h100-39th-8k-b16", "h100-real-2026-12-07d/decode_real_js_8k_b16_one_launch_matched"),
    ("h100-39th-2k-b16", "h100-real-2026-12-07d/decode_real_js_2k_b16_one_launch_matched"),
    ("h100-39th-32k-b4", "h100-real-2026-12-07d/decode_real_js_32k_b4_one_launch_matched"),
    ("h100-39th-16k-b4", "h100-real-2026-12-07d/decode_real_js_16k_b4_one_launch_matched"),
    ("h100-39th-8k-b4", "h100-real-2026-12-07d/decode_real_js_8k_b4_one_launch_matched"),
    ("h100-39th-2k-b4", "h100-real-2026-12-07d/decode_real_js_2k_b4_one_launch_matched"),
    ("h100-39th-2k-b1", "h100-real-2026-12-07d/decode_real_js_2k_b1_one_launch_matched"),
    ("h100-40th-16k-b32", "h100-real-2026-12-07e/decode_real_js_16k_b32_one_launch_matched"),
    ("h100-40th-8k-b32", "h100-real-2026-12-07e/decode_real_js_8k_b32_one_launch_matched"),
    ("h100-40th-2k-b32", "h100-real-2026-12-07e/decode_real_js_2k_b32_one_launch_matched"),
    ("h100-40th-32k-b1", "h100-real-2026-12-07e/decode_real_js_32k_b1_one_launch_matched"),
    ("h100-40th-16k-b1", "h100-real-2026-12-07e/decode_real_js_16k_b1_one_launch_matched"),
    ("h100-40th-8k-b1", "h100-real-2026-12-07e/decode_real_js_8k_b1_one_launch_matched"),
]
#: the draft read policies under SpecAttn p=0.9 (scripts/gpu/breadth.sh, one run a point; H100, thirty-first session)
POLICY_RUNS = [(f"h100-31st-{point}", f"h100-real-2026-12-06f/decode_real_js_{point}_fold_policies")
               for point in ("32k_b16", "16k_b16", "8k_b16", "2k_b16", "32k_b32")]
FILES = ("modes.csv", "prompts.csv", "config.yaml")  # what the pooling reads: rows, per-prompt values, fold setting


def lay_out(folder: Path, runs_of: list[tuple[str, str]] | None = None) -> list[Path]:
    """Each archived run of ``runs_of`` (default :data:`RUNS`) as a run folder under ``folder``, in that order."""
    from specattn.results.run_files import run_file

    runs = []
    for name, prefix in RUNS if runs_of is None else runs_of:
        run = folder / name
        run.mkdir(parents=True)
        for file in FILES:
            source = run_file(DATA / prefix, file)
            if not source.is_file():
                raise FileNotFoundError(f"{source} is missing: the archived run {name} needs it")
            shutil.copy(source, run / file)
        runs.append(run)
    return runs


def main(argv: list[str]) -> int:
    from specattn.results.collect import main as results

    parser = argparse.ArgumentParser(prog="python scripts/real_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", action="store_true", help="the draft read policies' table instead")
    parser.add_argument("--figures", type=Path, default=None,
                        help="keep the figures (decoding_by_context.png, policy_tradeoff.png) in this folder")
    parser.add_argument("--prompts", metavar="MODE", help="also MODE's tau loss by prompt and batch (results "
                                                          "decoding --prompts), e.g. 'specattn p=0.9 draft=first_window'")
    parser.add_argument("table", type=Path, help="the markdown table to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = lay_out(Path(tmp) / "runs", POLICY_RUNS if args.policies else RUNS)
        figures = args.figures or Path(tmp) / "figures"
        by_prompt = ["--prompts", args.prompts] if args.prompts else []
        return results(["decoding", *map(str, runs), "-o", str(figures), "--markdown", str(args.table), *by_prompt])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
