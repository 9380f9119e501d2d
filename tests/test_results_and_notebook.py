"""Tables and plots of collected runs (specattn.results.plots), and notebooks/analysis.ipynb executed headless."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from specattn.results import plots
from specattn.results.collect import collect
from specattn.runs.outputs import write_table

from .conftest import ROOT, run_cli
from .test_paper_table import SETTINGS

nbformat = pytest.importorskip("nbformat", reason="the notebook's checks need nbformat (make install has it; the GPU "
                               "image does not, where `pytest -m gpu tests` collects this file)")


def kernel_bench_run(folder):
    """A run folder as ``experiment=kernel_bench`` writes it (GPU only), with made-up timings."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"experiment": {"name": "kernel_bench"}, "p": 0.95}))
    rows = [{"part": "selection", "rows": r, "L": n, "ours_threshold_ms": 0.01 * n / 2048 * r / 32,
             "sort_threshold_ms": 0.05 * n / 2048 * r / 32} for r in (32, 256) for n in (2048, 8192, 32768)]
    rows += [{"part": "attention", "model": "llama-3.1-8b", "L": n, "density": d, "pipeline_speedup": n / 8192 / d / 4}
             for n in (2048, 8192, 32768) for d in (0.25, 0.1)]
    write_table(pd.DataFrame(rows), folder / "results.parquet")


@pytest.fixture(scope="module")
def analysis_outputs(killed_sweep, paper_run, tiny_model_dir, tmp_path_factory):
    """An outputs folder with a 12-run sweep, a paper_table run, an align run and a kernel_bench run."""
    outputs = tmp_path_factory.mktemp("analysis")
    shutil.copytree(killed_sweep[0] / "ppl", outputs / "ppl")
    shutil.copytree(paper_run[0] / "paper_table", outputs / "paper_table")
    align = run_cli("experiment=align", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                    "align.num_tokens=600", "align.context_len=300", "logger=none", "progress=false",
                    env={"SPECATTN_OUTPUTS": str(outputs)})
    assert align.returncode == 0, align.stderr
    kernel_bench_run(outputs / "kernel_bench" / "default-0123456789")
    return outputs


def test_ppl_settings_are_the_run_summaries(analysis_outputs):
    settings = plots.ppl_settings(collect(analysis_outputs))
    assert set(settings.experiment) == {"ppl", "paper_table"} and settings.run.nunique() == 13
    paper = settings[settings.experiment == "paper_table"].set_index("setting")
    summary = pd.read_parquet(next(analysis_outputs.glob("paper_table/*/summary.parquet"))).set_index("setting")
    for column in ("ppl", "ppl_rel_increase", "kv_reduction", "kv_reduction_sparse_layers"):
        pd.testing.assert_series_equal(paper[column], summary[column], check_names=False)
    assert paper.loc["specattn p=0.97", "p"] == 0.97 and paper.context_len.iloc[0] == 300


def test_paper_table_puts_rows_in_the_papers_order(analysis_outputs):
    settings = plots.ppl_settings(collect(analysis_outputs))
    paper = settings[settings.experiment == "paper_table"].sample(frac=1, random_state=0)  # shuffled
    table = plots.paper_table(paper)
    assert table.method.tolist() == SETTINGS
    lines = plots.paper_table_markdown(table).splitlines()
    assert lines[0] == "| method | ppl | rel. increase | KV reduction | KV reduction (sparse layers) |"
    assert lines[2].startswith("| dense | ") and lines[2].endswith(" | - | - | - |")
    quest = table.set_index("method").loc["quest match=specattn p=0.95"]
    assert f"| {100 * quest['rel. increase']:+.2f}% | {100 * quest['KV reduction']:.2f}% |" in lines[4]


def test_collect_chosen_run_folders(analysis_outputs, tmp_path):
    """``collect`` over run folders given one by one: exactly those runs, named by their folders."""
    paper = next((analysis_outputs / "paper_table").iterdir())
    ppl_runs = sorted(folder.parent for folder in (analysis_outputs / "ppl").rglob("results.parquet"))[:2]
    whole = collect(analysis_outputs)
    chosen = collect(paper, *ppl_runs)
    assert sorted(chosen.run.unique()) == sorted(folder.name for folder in [paper, *ppl_runs])
    assert len(chosen) == whole.run.str.rsplit("/", n=1).str[-1].isin(chosen.run.unique()).sum()
    out = tmp_path / "chosen.parquet"
    result = subprocess.run([sys.executable, "-m", "specattn.results", "collect", str(paper), str(ppl_runs[0]),
                             "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "from 2 runs" in result.stdout and set(pd.read_parquet(out).run) == {paper.name, ppl_runs[0].name}
    missing = subprocess.run([sys.executable, "-m", "specattn.results", "collect", str(paper), str(tmp_path / "nope"),
                              "-o", str(tmp_path / "missing.parquet")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such outputs folder" in missing.stderr
    into_run = subprocess.run([sys.executable, "-m", "specattn.results", "collect", str(paper)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert into_run.returncode == 2 and "name the table with -o" in into_run.stderr
    assert not (paper / "collected.parquet").exists()


def test_per_layer_rows_of_other_experiments_are_no_perplexity_settings(analysis_outputs):
    """layer_coverage rows carry an ``nll`` per layer but no context length: collected beside perplexity
    runs they leave the settings table as it is."""
    collected = collect(analysis_outputs)
    coverage = pd.DataFrame({"run": ["coverage-x"] * 2, "config.experiment.name": ["layer_coverage"] * 2,
                             "nll": [1.0, 2.0], "layer": [2, 3], "setting": ["specattn p=0.95"] * 2})
    both = pd.concat([collected, coverage], ignore_index=True)
    pd.testing.assert_frame_equal(plots.ppl_settings(both), plots.ppl_settings(collected))


def test_write_plots_and_the_cli(analysis_outputs, tmp_path):
    collected = collect(analysis_outputs)
    written = plots.write_plots(collected, tmp_path / "figures")
    align_run = next((analysis_outputs / "align").iterdir()).name
    assert set(written) == {"pareto-tiny_random-gutenberg-100", "pareto-tiny_random-gutenberg-300",
                            "context_length-tiny_random-gutenberg", f"alignment-{align_run}", "kernel_scaling"}
    assert all(path.stat().st_size > 10_000 for path in written.values())
    table = tmp_path / "collected.parquet"
    write_table(collected, table)
    result = subprocess.run([sys.executable, "-m", "specattn.results", "plots", str(table)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(str(tmp_path / "figures" / path.name) for path in written.values())


def test_the_analysis_notebook_runs_top_to_bottom_into_a_copy(analysis_outputs, tmp_path):
    """``python -m specattn.results notebook`` (``make notebook``): the tracked notebook executed headless
    into a copy, its tables printed; the tracked file is not touched."""
    tracked = (ROOT / "notebooks" / "analysis.ipynb").read_bytes()
    copy = tmp_path / "analysis.ipynb"
    result = subprocess.run([sys.executable, "-m", "specattn.results", "notebook", "--outputs", str(analysis_outputs),
                             "-o", str(copy)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "SPECATTN_FIGURES": str(tmp_path / "figures")})
    assert result.returncode == 0, result.stderr
    assert (ROOT / "notebooks" / "analysis.ipynb").read_bytes() == tracked
    notebook = nbformat.read(copy, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 5  # two Pareto plots, the context-length plot, the alignment heatmap, the kernel plot
    texts = " ".join(output.get("data", {}).get("text/markdown", "") for output in outputs)
    assert "| quest match=specattn p=0.95 |" in texts
    assert len(list((tmp_path / "figures").glob("*.png"))) == 5
    assert "| quest match=specattn p=0.95 |" in result.stdout and result.stdout.count("[figure]") == 5
    assert result.stdout.strip().endswith(f"executed notebook (tables and plots): {copy}")
    empty = subprocess.run([sys.executable, "-m", "specattn.results", "notebook", "--outputs", str(tmp_path / "none"),
                            "-o", str(tmp_path / "none.ipynb")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert empty.returncode == 2 and empty.stderr.strip() == (
        f"error: analysis.ipynb stopped in a cell: SpecAttnError: {tmp_path / 'none'}: no such outputs folder")
    assert not (tmp_path / "none.ipynb").exists()


def test_context_length_plot_takes_the_largest_run_per_length(tmp_path):
    import pandas as pd

    from specattn.results.plots import one_run_per_length, plot_context_length

    rows = [{"method": method, "setting": f"{method} p={p}", "p": p, "context_len": length, "samples": samples,
             "kv_reduction_sparse_layers": 0.1 * length / 1024, "ppl_rel_increase": 0.01 * samples}
            for method in ("specattn", "oracle_topp") for p in (0.9, 0.95)
            for length, samples in ((1024, 2), (2048, 4), (2048, 1), (4096, 1))]
    chosen = one_run_per_length(pd.DataFrame(rows))
    assert len(chosen) == 12 and list(chosen[chosen.context_len == 2048].samples.unique()) == [4]
    assert chosen.context_len.is_monotonic_increasing
    path = plot_context_length(pd.DataFrame(rows), tmp_path / "context.png", "test")
    assert path.is_file() and path.stat().st_size > 10_000


def test_pareto_draws_one_curve_per_distinct_run_setting(analysis_outputs, tmp_path):
    """The 12-run sweep (p x chunk_size) at 100 tokens: one SpecAttn curve per chunk_size through its four
    p; runs of another sample count are curves of their own; one run's settings are named by method only."""
    settings = plots.ppl_settings(collect(analysis_outputs))
    sweep = settings[settings.context_len == 100]
    assert plots.curve_keys(sweep) == ["config.chunk_size"]
    curves = plots.pareto_curves(sweep)
    assert list(curves) == ["specattn chunk_size=4", "specattn chunk_size=8", "specattn chunk_size=16"]
    for label, curve in curves.items():
        assert sorted(curve.p) == [0.6, 0.7, 0.8, 0.9] and curve.chunk_size.nunique() == 1, label
        assert curve.kv_reduction.is_monotonic_increasing
    more = sweep.assign(**{"config.dataset.num_samples": 5, "run": sweep.run + "-more"})
    both = plots.pareto_curves(pd.concat([sweep, more], ignore_index=True))
    assert len(both) == 6 and "specattn chunk_size=8 num_samples=5" in both and "specattn chunk_size=8 num_samples=1" in both
    paper = plots.pareto_curves(settings[settings.experiment == "paper_table"])
    assert list(paper) == ["streaming", "quest", "specattn", "oracle_topp"]
    assert plots.curve_label("specattn", ["config.model.verifier.path", "config.model.draft.path"], ("/a", "/b")) == \
        "specattn model.verifier.path=/a model.draft.path=/b"  # the same last name: the whole key


def test_a_single_point_gets_plain_axes_around_the_origin():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots._sane_axes(ax, pd.Series([25.77]), pd.Series([0.28]))
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear" and low < 0 < 0.28 < high < 0.4
    assert ax.get_xlim()[0] < 0 < 25.77 < ax.get_xlim()[1] < 30
    labels = [ax.yaxis.get_major_formatter()(tick) for tick in ax.get_yticks()]
    assert all(float(label) == pytest.approx(tick) for label, tick in zip(labels, ax.get_yticks()))  # no 10^x offsets
    plots._sane_axes(ax, pd.Series([40.0, 60.0]), pd.Series([16.0, 43.0]))
    assert ax.get_yscale() == "symlog"
    plt.close(fig)


def test_pareto_draws_the_papers_operating_points_inside_its_axes(monkeypatch, tmp_path):
    """The paper's three points as crosses, inside the limits even when every measured point is small."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    settings = pd.DataFrame({"method": ["dense", "specattn", "specattn"], "p": [None, 0.95, 0.9],
                             "kv_reduction": [0.0, 0.25, 0.45], "ppl_rel_increase": [0.0, 0.001, 0.005]})
    for paper in (True, False):
        plots.plot_pareto(settings, tmp_path / "p.png", paper=paper)
        ax = figures[-1].axes[0]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert any(label.startswith("paper") for label in labels) == paper
        inside = ax.get_xlim()[1] > 78.4 and ax.get_ylim()[1] > 15.29
        assert inside == paper
