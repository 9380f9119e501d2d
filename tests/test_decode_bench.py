"""experiment=decode_bench: its config, the roofline model, the tables and crossover, and a whole run on
a tiny pair (CPU eager here; CUDA graphs on the GPU)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from specattn.bench import decode_bench as DB
from specattn.bench.decode_tables import crossover, render, tables
from specattn.core.errors import SpecAttnError
from specattn.decode import roofline
from specattn.experiments.decode_bench import config_from
from specattn.results.plots import plot_decode_throughput

from .availability import HAS_CUDA, needs_gpu
from .conftest import CONF, compose_config


def bench_config(*overrides, **changes):
    cfg = config_from(compose_config("experiment=decode_bench", *overrides))
    return replace(cfg, **changes)


def test_config_comes_from_the_experiment_yaml():
    cfg = bench_config("experiment.batches=[2]", "gamma=3", "p=0.9")
    assert cfg.batches == (2,) and cfg.gamma == 3 and cfg.p == 0.9 and cfg.tau == 3.0
    assert cfg.pairs == ("tinyllama-llama2", "llama3.2-llama3.1") and cfg.contexts[:2] == (32768, 131072)
    assert cfg.device == "cuda" and cfg.dtype == "bfloat16"


def test_run_all_refuses_unknown_pairs_and_no_gpu():
    with pytest.raises(SpecAttnError, match="experiment.pairs"):
        DB.run_all(bench_config(pairs=("gpt5",)))
    assert bench_config().fold_norms and not bench_config("experiment.fold_norms=false").fold_norms
    if not HAS_CUDA:
        with pytest.raises(SpecAttnError, match="CUDA GPU"):
            DB.run_all(bench_config())


def test_the_qwen_pair_has_the_real_pairs_shapes_with_its_biases_and_tied_heads():
    """The random ``qwen-coder`` pair (launch A/Bs without the staged weights) is built as the real pair is: Qwen2
    layers (q/k/v biases), tied embeddings, the layer counts of conf/model/qwen_coder.yaml and the attention shapes of
    the kernel benchmark's real-pair rows; 0.49 and 1.54 billion parameters (built on the meta device: no memory)."""
    import torch
    import yaml

    from specattn.bench.attention import MODELS

    model_cfg = yaml.safe_load((CONF / "model" / "qwen_coder.yaml").read_text())
    draft, verifier = (DB.build_model(n, "meta", torch.bfloat16) for n in DB.PAIRS["qwen-coder"])
    for model, name, layers in ((draft, DB.PAIRS["qwen-coder"][0], model_cfg["draft_num_layers"]),
                                (verifier, DB.PAIRS["qwen-coder"][1], model_cfg["num_layers"])):
        shape = roofline.ModelShape.from_config(model.config, 2)
        assert type(model).__name__ == "Qwen2ForCausalLM" and shape.layers == layers and shape.tied
        assert (shape.heads, shape.kv_heads, shape.head_dim) == MODELS[name]
        attention = model.model.layers[0].self_attn
        assert all(getattr(attention, f"{x}_proj").bias is not None for x in "qkv") and attention.o_proj.bias is None
    assert round(sum(p.numel() for p in draft.parameters()) / 1e9, 2) == 0.49
    assert round(sum(p.numel() for p in verifier.parameters()) / 1e9, 2) == 1.54


@pytest.mark.parametrize("tied", [False, True])
def test_weight_bytes_are_the_parameters_a_forward_reads(tied):
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    shape = roofline.ModelShape.from_config(config, dtype_bytes=2)
    params = sum(p.numel() for p in model.parameters())  # tied: the embedding is the head, counted once
    embedding = 0 if tied else model.get_input_embeddings().weight.numel()
    assert shape.weight_bytes == 2 * (params - embedding)
    assert shape.kv_bytes_per_token == 2 * 3 * 2 * 16 * 2 and shape.k_bytes_per_token_layer == 2 * 16 * 2


def test_step_bytes_by_hand():
    v = roofline.ModelShape(layers=4, hidden=8, intermediate=8, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=False,
                            dtype_bytes=2)
    d = replace(v, layers=2)
    layer_kv = 2 * 4 * 2  # K + V of one token in one layer
    ar = roofline.step_bytes(v, None, batch=3, prefix=100, gamma=0)
    assert ar["verifier_kv"] == 3 * (4 * 101 * layer_kv + 1 * 4 * layer_kv) and set(ar) == {
        "verifier_weights", "verifier_kv", "total"}
    dense = roofline.step_bytes(v, d, batch=1, prefix=100, gamma=2)
    assert dense["draft_kv"] == ((101 + 102) + 2) * 2 * layer_kv and dense["draft_weights"] == 2 * d.weight_bytes
    sparse = roofline.step_bytes(v, d, batch=1, prefix=100, gamma=2, kept=0.25, dense_layers=1, needed_layers=2,
                                 chunk_size=16)
    assert roofline.kept_keys(100, 0.25, 16) == 32  # round(0.25 * 7) = 2 chunks
    assert sparse["verifier_kv"] == (1 * 103 + 3 * (32 + 3)) * layer_kv + 3 * 4 * layer_kv
    assert sparse["draft_rows_k"] == 2 * 102 * 8
    assert sparse["selection"] == 2 * 2 * 102 * 3 * 4 + 2 * 2 * 7 * 2 * 4
    assert sparse["total"] == sum(v for k, v in sparse.items() if k != "total")
    assert roofline.kept_keys(100, 0.0, 16) == 16 and roofline.kept_keys(100, 1.0, 16) == 100


def test_crossover_is_the_first_context_from_which_specattn_stays_ahead():
    rows = [("a", 1, 0.25, [1024, 2048, 4096, 8192], [0.8, 1.1, 0.95, 1.2]),
            ("a", 4, 0.25, [1024, 2048], [1.3, 1.5]),
            ("b", 1, 0.1, [1024, 2048], [0.5, 0.9])]
    table = pd.DataFrame([{"pair": p, "batch": b, "kept": k, "context": c, "speedup": s}
                          for p, b, k, cs, ss in rows for c, s in zip(cs, ss)])
    cross = crossover(table, margin=0.35)
    assert cross.crossover.tolist() == ["8K", "<= 1K", "not within 2K"]
    assert cross.crossover_margin.tolist() == ["not within 8K", "2K", "not within 2K"]


def test_a_tiny_run_on_the_cpu_gives_every_table(tmp_path):
    cfg = bench_config(pairs=("tiny",), batches=(1, 2), contexts=(160, 64), kept=(0.5, 0.25), warmup_steps=1,
                       reps=2, steps=4, profile_reps=2, device="cpu", dtype="float32", max_mem_gib=1.0)
    res = tables(DB.run_all(cfg, log=lambda msg: None, out_csv=tmp_path / "modes.csv"))
    results = res["results"]
    assert results["error"].isna().all(), results["error"].dropna().tolist()
    assert len(results) == 2 * 2 * 4 and pd.read_csv(tmp_path / "modes.csv").shape[0] == len(results)
    assert set(results["mode"]) == {"ar", "dense", "specattn"}
    spec = results[results["mode"] != "ar"]
    assert (spec["tokens_per_step"] == spec["batch"] * 3).all()  # forced tau = 3
    ar = results[results["mode"] == "ar"]
    assert (ar["tokens_per_step"] == ar["batch"]).all()
    sa = results[results["mode"] == "specattn"]
    assert ((sa["forced_frac"] - sa["kept"]).abs() < 0.1).all() and sa["select_ms"].gt(0).all()
    assert results["roof_frac"].gt(0).all() and results["draft_ms"].dropna().gt(0).all()
    table = res["speedups"]
    assert len(table) == 2 * 2 * 2 and (table["predicted"] > 1).all()
    assert set(res["crossover"]["batch"]) == {1, 2}
    summary = render(res)
    assert "## Crossover" in summary and "forced tau=3" in summary
    assert plot_decode_throughput(results, tmp_path / "plot.png").stat().st_size > 0


def test_memory_limit_skips_points():
    cfg = bench_config(pairs=("tiny",), batches=(1,), contexts=(64,), kept=(0.5,), device="cpu", dtype="float32",
                       max_mem_gib=1e-6)
    res = DB.run_all(cfg, log=lambda msg: None)
    assert res["results"].empty and len(res["skipped"]) == 1


@needs_gpu
def test_a_tiny_run_on_the_gpu_with_graphs(tmp_path):
    cfg = bench_config(pairs=("tiny",), batches=(1, 3), contexts=(4096, 1000), kept=(0.25,), warmup_steps=1,
                       reps=2, steps=4, profile_reps=2, max_mem_gib=4.0)
    res = tables(DB.run_all(cfg, log=print, out_csv=tmp_path / "modes.csv"))
    results = res["results"]
    assert results["error"].isna().all(), results["error"].dropna().tolist()
    assert (results[results["mode"] != "ar"]["tokens_per_step"] == results[results["mode"] != "ar"]["batch"] * 3).all()
    assert math.isfinite(res["bandwidth_TBps"]) and res["bandwidth_TBps"] > 0.5


def test_draft_read_policies_run_with_forced_densities_on_the_cpu(tmp_path):
    cfg = bench_config(pairs=("tiny",), batches=(2,), contexts=(160,), kept=(0.25,), warmup_steps=1, reps=1, steps=3,
                       profile_reps=1, device="cpu", dtype="float32", max_mem_gib=1.0,
                       draft_reads=("first_dense", "reuse", "window"), draft_window=32, draft_sinks=4)
    res = tables(DB.run_all(cfg, log=lambda msg: None))
    results = res["results"]
    assert results["error"].isna().all(), results["error"].dropna().tolist()
    policies = results[results["draft_reads"] != "dense"].set_index("draft_reads")
    assert set(policies.index) == {"first_dense", "reuse", "window"}
    dense_sa = results[(results["mode"] == "specattn") & (results["draft_reads"] == "dense")]
    for reads in ("first_dense", "reuse", "window"):  # the roofline sees the draft's thinner reads
        assert policies.loc[reads, "bytes_draft_kv"] < dense_sa["bytes_draft_kv"].iloc[0], reads
    assert set(res["speedups"]["draft_reads"]) == {"dense", "first_dense", "reuse", "window"}
    assert set(res["crossover"]["draft_reads"]) == {"dense", "first_dense", "reuse", "window"}
