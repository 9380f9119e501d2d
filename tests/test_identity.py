"""Run identity: the signature covers exactly the config keys a run's results depend on."""

import pytest
from omegaconf import OmegaConf

from specattn.runs.signature import result_keys, signature

from .conftest import CONF, compose_config, run_cli
from .conftest import tiny_sweep_args as tiny

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def leaves(node, prefix=""):
    """Dotted paths of every leaf of a config node (lists count as leaves)."""
    for key in node:
        path = f"{prefix}{key}"
        value = node._get_node(key)
        if OmegaConf.is_dict(value):
            yield from leaves(value, path + ".")
        else:
            yield path


def perturbed(value):
    if OmegaConf.is_list(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [*value, "x"]
    return f"{value}x"


def covers(keys, path):
    return any(path == key or path.startswith(key + ".") for key in keys)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_key_forks_runs_iff_the_results_depend_on_it(experiment):
    cfg = compose_config(f"experiment={experiment}")
    keys = result_keys(cfg)
    base = signature(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=False)
    for path in leaves(cfg):
        if path.startswith("hydra.") or path == "experiment.depends_on":
            continue
        changed = OmegaConf.create(resolved)
        OmegaConf.update(changed, path, perturbed(OmegaConf.select(cfg, path)), force_add=True)
        forks = signature(changed) != base
        if covers(keys, path):
            assert forks, f"{experiment}: {path} is a result key but does not change the signature"
        elif path != "p" and not path.startswith("align."):  # they reach results through interpolations
            assert not forks, f"{experiment}: {path} changes the signature but the results do not depend on it"


@pytest.mark.parametrize("same", [
    (["method=quest", "p=0.9"], ["method=quest", "p=0.95"]),  # quest reads no p
    (["experiment=paper_table"], ["experiment=paper_table", "method=quest"]),  # the table ignores the method group
    (["experiment.query_block=64"], ["experiment.query_block=512"]),  # a memory knob
    (["align.metric=js"], ["align.metric=kl"]),  # layer_map=proportional uses no calibration
    (["dataset.calibration.split=eval"], []),
    (["logger=none", "paths.outputs=/elsewhere", "rerun=true", "progress=false"], []),
    (["method=oracle_topp", "method.query_block=32"], ["method=oracle_topp"]),  # a memory knob of a method
])
def test_keys_that_cannot_change_results_do_not_fork_runs(same):
    assert signature(compose_config(*same[0])) == signature(compose_config(*same[1]))


@pytest.mark.parametrize("different", [
    (["p=0.9"], ["p=0.95"]),
    (["method=quest", "method.budget.token_budget=128"], ["method=quest"]),
    (["experiment=paper_table", "experiment.extra_rows=[draft_snapkv]"], ["experiment=paper_table"]),
    (["layer_map=auto", "align.metric=js"], ["layer_map=auto", "align.metric=kl"]),
    (["layer_map=auto", "dataset.calibration.split=eval"], ["layer_map=auto"]),
    (["experiment=paper_table", "experiment.p_values=[0.9]", "experiment.match_p=0.9"], ["experiment=paper_table"]),
    (["experiment.impl=sequential"], []),
    (["dataset.num_samples=3"], []),
    (["model=smollm2"], []),
])
def test_result_keys_fork_runs(different):
    assert signature(compose_config(*different[0])) != signature(compose_config(*different[1]))


def test_a_sweep_over_a_key_a_method_ignores_computes_it_once(tiny_model_dir, tmp_path):
    result = run_cli("-m", *tiny(tiny_model_dir, "logger=none", "method=quest,specattn", "p=0.6,0.8"),
                     env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    folders = sorted(path.parent.name for path in tmp_path.glob("ppl/*/results.parquet"))
    assert len(folders) == 3 and sum(name.startswith("quest-") for name in folders) == 1, folders
    assert "job #1 is the same run as job #0 (same signature)" in result.stdout  # launched once
