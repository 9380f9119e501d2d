"""Gather every finished run under an outputs folder into one table.

    python -m specattn.results collect outputs/                  # -> outputs/collected.parquet (+ .csv)
    python -m specattn.results collect outputs/ -o sweep.parquet
    python -m specattn.results collect outputs/paper_table/run-a outputs/paper_table/run-b -o chosen.parquet
    python -m specattn.results plots outputs/collected.parquet   # -> outputs/figures/*.png (specattn.results.plots)
    python -m specattn.results notebook                          # notebooks/analysis.ipynb -> outputs/analysis.ipynb
    python -m specattn.results decoding RUN... -o figures/        # decode_real runs pooled: speedup, tau, cont ppl
    python -m specattn.results decoding RUN... -o figures/ --markdown table.md  # + the docs' table, runs named
    python -m specattn.results decoding A B -o figures/ --tags a b --versus a  # B's modes against A's: a launch A/B
    python -m specattn.results decoding RUN... -o figures/ --prompts MODE  # + MODE's tau loss by prompt and batch
    python -m specattn.results archive RUN docs/data/FOLDER/PREFIX  # a decode_real run as PREFIX_modes.csv, ...

A run folder is one holding ``config.yaml`` and ``results.parquet`` (runs without results are
unfinished and left out; Hydra's ``.hydra/`` and W&B's ``wandb/`` folders are not runs). The table has every row of every run's ``results.parquet`` (one per
sample and method setting for ``experiment=ppl`` and ``paper_table``), plus ``run`` (the folder,
relative to the outputs folder it was found under; a run folder given itself: its name), ``signature`` and one ``config.<dotted key>`` column per key of the
run's resolved config (lists as JSON text).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
import yaml

from ..core.errors import SpecAttnError
from ..runs.outputs import RESULTS, write_table
from .run_files import read_prompts, run_file

CONFIG = "config.yaml"


def flatten(config: dict, prefix: str = "config.") -> dict:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"config.a.b": 1, "config.c": "[1, 2]"}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def run_folders(root: Path) -> tuple[list[Path], list[Path]]:
    """``(finished, unfinished)`` run folders under ``root`` (``root`` itself included)."""
    folders = sorted(path.parent for path in root.rglob(CONFIG)
                     if not any(part.startswith(".") or part == "wandb" for part in path.relative_to(root).parts[:-1]))
    finished = [folder for folder in folders if (folder / RESULTS).is_file()]
    return finished, [folder for folder in folders if folder not in finished]


def _uniform_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing text and numbers across runs become text (parquet needs one type per column)."""
    for column in frame.columns[frame.dtypes == object]:
        kinds = {type(value) for value in frame[column].dropna()}
        if len(kinds) > 1:
            frame[column] = frame[column].map(lambda value: value if value is None or pd.isna(value) else str(value))
    return frame


def collect(*roots: Path) -> pd.DataFrame:
    """One table of every finished run under ``roots`` (outputs trees or single run folders; see the
    module docstring)."""
    frames = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise SpecAttnError(f"{root}: no such outputs folder")
        finished, _ = run_folders(root)
        if not finished:
            raise SpecAttnError(f"{root}: no finished run (a folder with {CONFIG} and {RESULTS}) under it")
        for folder in finished:
            results = pd.read_parquet(folder / RESULTS)
            config = flatten(yaml.safe_load((folder / CONFIG).read_text()) or {})
            run = str(folder.relative_to(root)) if folder != root else folder.name
            identity = {"run": run, "signature": folder.name.rsplit("-", 1)[-1]}
            frames.append(results.assign(**identity, **config))
    return _uniform_types(pd.concat(frames, ignore_index=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specattn.results", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect", help="gather every finished run into one parquet table")
    gather.add_argument("outputs", type=Path, nargs="+",
                        help="outputs folders or run folders (searched recursively)")
    gather.add_argument("-o", "--out", type=Path, help="output parquet (default: <first outputs>/collected.parquet)")
    draw = commands.add_parser("plots", help="write every plot of a collected table as PNG files")
    draw.add_argument("collected", type=Path, help="a table written by `collect`")
    draw.add_argument("-o", "--out", type=Path, help="output folder (default: figures/ beside the table)")
    book = commands.add_parser("notebook", help="run notebooks/analysis.ipynb into a copy and print what it shows")
    book.add_argument("--outputs", type=Path, default=Path(os.environ.get("SPECATTN_OUTPUTS", "outputs")),
                      help="the runs to analyse (default: $SPECATTN_OUTPUTS or outputs)")
    book.add_argument("-o", "--out", type=Path, help="the executed copy (default: <outputs>/analysis.ipynb)")
    spread = commands.add_parser("intervals", help="per-setting means and 95%% bootstrap intervals of table runs")
    spread.add_argument("runs", type=Path, nargs="+",
                        help="paper_table/ppl run folders (a cut run: its parts) or files of their per-sample rows")
    spread.add_argument("--pool", action="store_true",
                        help="one table over all the runs' samples (same rows, disjoint windows: dataset.first_sample)")
    spread.add_argument("--join", action="store_true",
                        help="one table over runs of other settings on the same windows (e.g. one run per "
                             "chunk_size): their rows labelled by what differs, so --versus pairs them")
    spread.add_argument("--pareto", type=Path, metavar="FOLDER",
                        help="also draw each run's Pareto figure (with the paper's points) into FOLDER")
    spread.add_argument("--versus", metavar="SETTING|COLUMN=VALUE",
                        help="also, paired over samples, every sparse setting minus SETTING (e.g. 'specattn p=0.9 "
                             "heads=mean'), or each setting minus the same one under COLUMN=VALUE (e.g. "
                             "layer_map=proportional in an align_study run)")
    decoding = commands.add_parser("decoding", help="pool experiment=decode_real runs: per-point table and figures")
    decoding.add_argument("runs", type=Path, nargs="+",
                          help="decode_real run folders, or archived runs' file prefixes (docs/data: <prefix>_modes.csv"
                               ", ...); a point in two: the later one")
    decoding.add_argument("-o", "--out", type=Path, required=True, metavar="FOLDER",
                          help="where policy_tradeoff.png and decoding_by_context.png go")
    decoding.add_argument("--title", default="", help="the figures' title")
    decoding.add_argument("--tags", nargs="+", metavar="TAG",
                          help="one per run: the runs side by side instead of pooled (runs of other settings at the "
                               "same point), each mode labelled 'mode [TAG]' against its own run's dense speculative "
                               "decoding; only the tradeoff figure")
    decoding.add_argument("--only", metavar="TEXT", help="with --tags: only the modes whose label holds TEXT (e.g. "
                                                         "'draft=': the draft read policies), and dense")
    decoding.add_argument("--versus", metavar="TAG",
                          help="with --tags: each mode of the other runs against the same mode of run TAG (a launch "
                               "setting's A/B): step and its change, and, paired over prompts, tau and continuation "
                               "ppl with 95%% intervals (specattn.results.decoding_versus)")
    decoding.add_argument("--markdown", type=Path, metavar="FILE",
                          help="also write the table as docs/benchmarks.md prints it (one row per point and mode, "
                               "intervals, the run each point comes from, whether its norms were folded and whether the "
                               "draft's projections ran as one launches) to FILE")
    decoding.add_argument("--prompts", metavar="MODE",
                          help="also, per prompt, MODE's tau over dense speculative decoding's at every batch a "
                               "context ran, and how the batches agree (a property of the prompt or of the batch? "
                               "specattn.results.prompt_ratios), e.g. 'specattn p=0.9 draft=first_window'")
    keep = commands.add_parser("archive", help="copy a decode_real run's tables to files of one prefix (docs/data)")
    keep.add_argument("run", type=Path, help="a finished experiment=decode_real run folder")
    keep.add_argument("prefix", type=Path, help="where its files go: PREFIX_modes.csv, PREFIX_prompts.csv, ... (an "
                                                "existing one is never overwritten)")
    args = parser.parse_args(argv)
    try:
        if args.command == "archive":
            from .run_files import archive_run

            written = archive_run(args.run, args.prefix)
            print("\n".join(map(str, written)))
            print(f"archived {len(written)} files: `python -m specattn.results decoding {args.prefix} -o FOLDER` reads "
                  "them")
        elif args.command == "collect":
            if args.out is None and (args.outputs[0] / CONFIG).is_file():
                raise SpecAttnError(f"{args.outputs[0]} is a run folder, which a collected table must not be "
                                    "written into: name the table with -o (e.g. -o collected.parquet)")
            table = collect(*args.outputs)
            out = args.out or args.outputs[0] / "collected.parquet"
            write_table(table, out)
            folders = [run_folders(root) for root in args.outputs]
            finished, unfinished = sum(len(f) for f, _ in folders), sum(len(u) for _, u in folders)
            print(f"collected {len(table)} rows from {finished} runs ({unfinished} unfinished left out): {out}")
        elif args.command == "intervals":
            from ..bench.decode_tables import markdown_table
            from ..core.run_rows import read_samples
            from .intervals import interval_table, join_samples, paired_versus, plot_run, pool_samples

            runs = [(run, *read_samples(run)) for run in args.runs]
            if args.pool and args.join:
                raise SpecAttnError("--pool (other windows, same settings) and --join (same windows, other "
                                    "settings) exclude each other: pick one")
            if args.pool or args.join:
                combine, word = (pool_samples, "pooled") if args.pool else (join_samples, "joined")
                combined = combine([samples for _, samples, _ in runs], [str(run) for run, _, _ in runs])
                runs = [(Path(f"{word}-" + "+".join(run.stem for run, _, _ in runs)), combined,
                         all(finished for _, _, finished in runs))]
            for run, samples, finished in runs:
                table = interval_table(samples)
                versus = paired_versus(samples, args.versus) if args.versus else None
                print(f"\n{run} ({'finished' if finished else 'cut: the samples so far'})")
                print(markdown_table(table, floatfmt=".3f"))
                if versus is not None:
                    print(f"\nminus {args.versus}, paired over samples (percent points, 95% bootstrap intervals)")
                    print(markdown_table(versus, floatfmt=".3f"))
                if args.pareto is not None:
                    print(f"figure: {plot_run(run, samples, table, args.pareto)}")
        elif args.command == "decoding":
            from ..bench.decode_tables import markdown_table
            from .plots import (
                plot_decoding_by_context,
                plot_policy_tradeoff,
                policy_points,
                pool_decode_runs,
                repeated_points,
            )
            from .decoding_intervals import prompt_intervals
            from .decoding_table import run_settings, table_lines
            from .prompt_ratios import batch_agreement, prompt_tau_ratios
            from .step_costs import step_costs, with_step_times

            missing = [str(run) for run in args.runs if not run_file(run, "modes.csv").is_file()]
            if missing:
                raise SpecAttnError(f"no modes.csv in {', '.join(missing)}: name experiment=decode_real run folders "
                                    "(or archived runs' prefixes: <prefix>_modes.csv)")
            if args.versus is not None and args.tags is None:
                raise SpecAttnError(f"--versus {args.versus} needs --tags: one tag per run, {args.versus} among them")
            if args.tags is not None:
                return _tagged_decoding(args)
            frames = [pd.read_csv(run_file(run, "modes.csv")).assign(run=run.name, **run_settings(run))
                      for run in args.runs]
            rows = pool_decode_runs(frames)
            for line in repeated_points(frames):
                print(line)
            prompts = None
            if all(run_file(run, "prompts.csv").is_file() for run in args.runs):
                prompts = pd.concat([read_prompts(run) for run in args.runs], ignore_index=True)
                prompts = prompts.drop_duplicates(["context", "batch", "mode", "prompt"], keep="last")  # one window
                rows = with_step_times(rows, prompts)
            ratios = None
            if args.prompts is not None:
                if prompts is None:
                    raise SpecAttnError(f"--prompts {args.prompts!r} needs every run's prompts.csv: runs from before "
                                        "decode_real wrote it cannot say which prompt lost what")
                ratios = prompt_tau_ratios(prompts, args.prompts)
            print(markdown_table(policy_points(rows), floatfmt=".3f"))
            intervals = None
            if prompts is not None:
                intervals = prompt_intervals(prompts, int(rows["new_tokens"].iloc[0]))
                print("\npaired over prompts, 95% bootstrap intervals (specattn.results.decoding_intervals):")
                print(markdown_table(intervals, floatfmt=".4f"))
            if ratios is not None:
                print(f"\nper prompt: {args.prompts}'s tau over dense speculative decoding's, a column a batch:")
                print(markdown_table(ratios.reset_index(), floatfmt=".3f"))
                print("\nhow the batches agree over the prompts both ran (specattn.results.prompt_ratios):")
                print(markdown_table(batch_agreement(ratios), floatfmt=".3f"))
            if args.markdown is not None:
                args.markdown.write_text("\n".join(table_lines(rows, intervals)) + "\n")
                print(f"table: {args.markdown}")
            costs = step_costs(rows)
            if not costs.empty:
                print("\nstep time = fixed + bytes / bandwidth, fitted over the contexts (specattn.results.step_costs):")
                print(markdown_table(costs, floatfmt=".2f"))
            print(f"figure: {plot_policy_tradeoff(rows, args.out / 'policy_tradeoff.png', args.title)}")
            print(f"figure: {plot_decoding_by_context(rows, args.out / 'decoding_by_context.png', args.title, intervals=intervals)}")
        elif args.command == "notebook":
            from .notebook import NOTEBOOK, execute, shown

            out = args.out or args.outputs / "analysis.ipynb"
            for text in shown(execute(NOTEBOOK, out, args.outputs)):
                print(text)
            print(f"\nexecuted notebook (tables and plots): {out}")
        else:
            from .plots import write_plots

            if not args.collected.is_file():
                raise SpecAttnError(f"{args.collected}: no such table (write one with `collect`)")
            for path in write_plots(pd.read_parquet(args.collected), args.out or args.collected.parent / "figures").values():
                print(path)
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _tagged_decoding(args) -> int:
    """``decoding --tags``: each run's points and prompt intervals against its own dense speculative decoding,
    modes labelled by the run's tag, and one tradeoff figure of them all."""
    from ..bench.decode_tables import markdown_table
    from .decoding_intervals import prompt_intervals
    from .plots import plot_points_tradeoff, tagged_policy_points
    from .step_costs import with_step_times

    if len(args.tags) != len(args.runs):
        raise SpecAttnError(f"--tags names {len(args.tags)} runs, {len(args.runs)} were given: one tag per run")
    if args.versus is not None and args.versus not in args.tags:
        raise SpecAttnError(f"--versus {args.versus} is not one of --tags {' '.join(args.tags)}: name the reference "
                            "run's tag")
    loaded, intervals = [], []  # (rows, prompts, tag) a run
    for run, tag in zip(args.runs, args.tags):
        rows, prompts = pd.read_csv(run_file(run, "modes.csv")), None
        if run_file(run, "prompts.csv").is_file():
            prompts = read_prompts(run)
            rows = with_step_times(rows, prompts)
            spread = prompt_intervals(prompts, int(rows["new_tokens"].iloc[0]))
            spread = spread[~spread["mode"].isin(["ar", "dense"])].assign(mode=lambda f: f["mode"] + f" [{tag}]")
            intervals.append(spread)
        loaded.append((rows, prompts, tag))
    points = tagged_policy_points([(rows, tag) for rows, _, tag in loaded])
    spread = pd.concat(intervals, ignore_index=True) if intervals else None
    if args.only:
        points = points[(points["mode"] == "dense") | points["mode"].str.contains(args.only, regex=False)]
        spread = spread[spread["mode"].str.contains(args.only, regex=False)] if spread is not None else None
    print(markdown_table(points, floatfmt=".3f"))
    if spread is not None:
        print("\npaired over prompts, 95% bootstrap intervals (specattn.results.decoding_intervals):")
        print(markdown_table(spread, floatfmt=".4f"))
    if args.versus is not None:
        from .decoding_versus import versus_table

        reference = next((rows, prompts) for rows, prompts, tag in loaded if tag == args.versus)
        for rows, prompts, tag in loaded:
            if tag != args.versus:
                print(f"\n[{tag}] against [{args.versus}], mode by mode (tau_ratio and ppl paired over prompts, 95% "
                      "bootstrap intervals; specattn.results.decoding_versus):")
                print(markdown_table(versus_table(rows, prompts, *reference), floatfmt=".4f"))
    print(f"figure: {plot_points_tradeoff(points, args.out / 'policy_tradeoff.png', args.title)}")
    return 0
