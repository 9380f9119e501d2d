"""The graph decoder (specattn.decode.graph_engine): token for token the CPU engine's greedy output,
dense and SpecAttn, on the CPU (torch fallbacks) and on CUDA (float32 with CUDA graphs; bfloat16
kernels, graph replay equal to eager execution); autoregressive decoding equal to dense speculative
decoding; the forced-acceptance and forced-density controls; the masked torch attention it falls back
to against the reference."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from specattn.core import layer_maps as layer_map
from specattn.core.errors import SpecAttnError
from specattn.core.settings import Settings
from specattn.decode.engine import (
    SpeculativeDecoder,
    prepare_for_decoding,
)
from specattn.decode.graph_engine import GraphDecoder, GraphSettings, forced_schedule
from specattn.gpu.attention.sparse import chunk_lists, sparse_verify_torch
from specattn.hooks.graph_attention import masked_verify_torch
from specattn.methods import Dense, SpecAttn
from specattn.models.pair import load_pair

from .availability import needs_gpu
from .conftest import CONF

GAMMA, NEW, CHUNK = 4, 24, 8


def load(model_dir, device, dtype=torch.float32):
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path = str(model_dir)
    return load_pair(cfg, torch.device(device), dtype)


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    return load(tiny_model_dir, "cpu")


def mapping(pair):
    return tuple(layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers))


def prompts(batch, length, seed):
    return torch.randint(3, 259, (batch, length), generator=torch.Generator().manual_seed(seed))


def cpu_engine(pair, batch, method, gamma=GAMMA, new=NEW):
    """The CPU engine's traces (tokens, steps, kept) for ``batch`` with one ``method()`` per sequence."""
    prepare_for_decoding(pair)
    dec = SpeculativeDecoder(pair, Settings(gamma, CHUNK, 2, "mean", mapping(pair), max_new_tokens=new))
    traces = dec.generate(dec.prefill(batch), [method() for _ in range(batch.shape[0])]).traces
    return [t.tokens for t in traces], [t.steps for t in traces], [t.kept for t in traces]


def graph_engine(pair, batch, gamma=GAMMA, new=NEW, p=None, graphs=False, **kwargs):
    settings = GraphSettings(gamma, CHUNK, 2, "mean", mapping(pair), p, **kwargs)
    dec = GraphDecoder(pair.draft, pair.verifier, settings, batch.shape[0], batch.shape[1] + new + 2 * (gamma + 2) + 8)
    if graphs:
        dec.prefill(batch)
        dec.capture()
    out = dec.generate(batch, new)
    return out.tokens, out.steps, out.kept


def check_against_cpu_engine(pair, device_pair, graphs, seed):
    batch = prompts(3, 50, seed)
    for p, method in ((None, Dense), (0.6, lambda: SpecAttn(0.6)), (0.9, lambda: SpecAttn(0.9))):
        want = cpu_engine(pair, batch, method)
        got = graph_engine(device_pair, batch, p=p, graphs=graphs)
        assert got == want, f"p={p}"
    dense_tokens = want[0] if p is None else cpu_engine(pair, batch, Dense)[0]
    ar = graph_engine(device_pair, batch, gamma=0, graphs=graphs)
    assert ar[0] == dense_tokens and ar[2] == [0, 0, 0] and ar[1] == [NEW] * 3


def test_graph_decoder_on_the_cpu_equals_the_cpu_engine(pair):
    check_against_cpu_engine(pair, pair, graphs=False, seed=1)


@pytest.mark.parametrize("gamma", [1, 2])
def test_short_speculation_equals_the_cpu_engine(pair, gamma):
    batch = prompts(2, 30, 7 + gamma)
    assert graph_engine(pair, batch, gamma=gamma, p=0.7) == cpu_engine(pair, batch, lambda: SpecAttn(0.7), gamma=gamma)


def test_forced_acceptance_follows_its_schedule(pair):
    schedule = forced_schedule(3.0, GAMMA)
    assert len(schedule) == 16 and all(0 <= k <= GAMMA for k in schedule) and sum(schedule) == 2 * 16
    assert sum(forced_schedule(2.5, GAMMA, 8)) == 12 and forced_schedule(1.0, GAMMA, 4) == (0, 0, 0, 0)
    with pytest.raises(SpecAttnError, match="forced tau"):
        forced_schedule(6.0, GAMMA)
    batch = prompts(2, 40, 3)
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.9, forced_kept=(1, 4, 0))
    dec = GraphDecoder(pair.draft, pair.verifier, settings, 2, 120)
    assert settings.tau == pytest.approx(1 + 5 / 3)
    dec.prefill(batch)
    seen = []
    for _ in range(6):
        dec.step()
        seen.append(dec.kept.tolist())
        dec.record(seen[-1])
    assert seen == [[1, 1], [4, 4], [0, 0]] * 2
    assert dec.last.tolist() == [39 + 2 * (5 + 3)] * 2 == dec.host_last
    assert dec.v_cache.lengths.tolist() == dec.last.tolist()


def test_forced_density_reads_a_fixed_fraction_of_the_prefix(pair):
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.9, forced_density=0.25)
    dec = GraphDecoder(pair.draft, pair.verifier, settings, 2, 300)
    dec.d_cache.keys.normal_()
    dec.d_cache.values.normal_()
    dec.v_cache.keys.normal_()
    dec.v_cache.values.normal_()
    dec.reset_to(200)
    n_cols = math.ceil(200 / CHUNK)
    forced = dec.forced_lists
    assert forced.n.eq(round(0.25 * n_cols)).all()
    ids = forced.ids[..., : round(0.25 * n_cols)]
    assert (ids[..., 1:] > ids[..., :-1]).all() and ids.max() < n_cols
    dec.step()
    assert dec.lists.n.gt(forced.n).all()  # the selection ran (near-uniform rows keep most chunks) ...
    for j, lists in dec.v_plan.lists.items():  # ... but every sparse layer reads the forced lists
        assert lists.ids.data_ptr() == forced.ids[dec.slots[settings.layer_map[j]]].data_ptr()
    assert set(dec.v_plan.lists) == set(range(2, pair.n_verifier_layers))


def test_the_draft_forwards_take_draft_split_and_the_verifier_split(pair):
    """``GraphSettings.draft_split`` is the draft's dense layers' launch (its one-row reads differ from the
    verifier's T = gamma + 1); None leaves the draft on ``split``, and the verifier is on ``split`` either way."""
    from specattn.gpu.kernels.split_config import SplitConfig

    split, drafted = SplitConfig(block_n=32, min_chunks=2), SplitConfig(block_n=128, stages=3, min_chunks=16)
    for draft_split, want in ((drafted, drafted), (None, split)):
        settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.7, split=split, draft_split=draft_split)
        dec = GraphDecoder(pair.draft, pair.verifier, settings, 2, 128)
        assert all(dec._draft_plan(f).split == want for f in range(GAMMA)) and dec.v_plan.split == split


def test_bad_settings_are_refused(pair):
    with pytest.raises(SpecAttnError, match="head_agg='kv_group'"):
        GraphDecoder(pair.draft, pair.verifier, GraphSettings(GAMMA, CHUNK, 2, "kv_group", mapping(pair), 0.9), 1, 64)
    with pytest.raises(SpecAttnError, match="layer_map has 3 entries"):
        GraphDecoder(pair.draft, pair.verifier, GraphSettings(GAMMA, CHUNK, 2, "mean", (0, 1, 2), 0.9), 1, 64)
    dec = GraphDecoder(pair.draft, pair.verifier, GraphSettings(GAMMA, CHUNK), 1, 64)
    with pytest.raises(SpecAttnError, match="do not fit"):
        dec.prefill(prompts(1, 60, 0))
    with pytest.raises(SpecAttnError, match="CUDA graphs"):
        dec.capture()


@pytest.mark.parametrize("t,lengths,h_sel", [(1, [33, 1], 1), (3, [40, 3, 17], 2), (5, [25], 1)])
def test_masked_torch_attention_matches_the_reference(t, lengths, h_sel):
    g = torch.Generator().manual_seed(t)
    b, hq, hkv, d, k_cap, c = len(lengths), 4, 2, 8, 41, 4
    q = torch.randn(b, hq, t, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, hkv, k_cap, d, generator=g, dtype=torch.float64) for _ in range(2))
    lens = torch.tensor(lengths, dtype=torch.int32)
    n_cols = math.ceil(k_cap / c)
    lists = chunk_lists(torch.rand(b, h_sel, n_cols, generator=g) < 0.5, capacity=n_cols + 3, impl="torch")
    lists.ids[..., -1] = 10_000  # junk past n: ignored
    lists.ids[0, 0, 0] = -1 if lists.n[0, 0] > 0 else 0  # a negative id selects nothing
    for sel in (lists, None):
        lse, want_lse = torch.zeros(b, hq, dtype=torch.float64), torch.zeros(b, hq)
        ids = sel.ids if sel is not None else torch.arange(n_cols, dtype=torch.int32).expand(b, 1, -1)
        n = sel.n if sel is not None else torch.full((b, 1), n_cols, dtype=torch.int32)
        want = sparse_verify_torch(q, k, v, lens, ids, n, c, 0.3, lse_out=want_lse)
        got = masked_verify_torch(q, k, v, lens, c, 0.3, sel, lse_out=lse)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lse.float(), want_lse, rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------------------------- GPU
@needs_gpu
def test_cuda_graph_decoder_in_float32_equals_the_cpu_engine(pair, tiny_model_dir):
    """float32 on CUDA: torch attention fallbacks + GPU nucleus kernels, both phases as CUDA graphs."""
    check_against_cpu_engine(pair, load(tiny_model_dir, "cuda"), graphs=True, seed=2)


@needs_gpu
@pytest.mark.parametrize("p", [None, 0.7])
@pytest.mark.parametrize("gamma", [0, 1, 4])
def test_cuda_graph_replay_equals_eager_in_bfloat16(tiny_model_dir, p, gamma):
    """bfloat16: the Triton kernels (attention, lse, draft rows, selection); graph replay == eager."""
    if gamma == 0 and p is not None:
        pytest.skip("autoregressive decoding has no selection")
    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    batch = prompts(3, 70, 11 + gamma)
    eager = graph_engine(cuda_pair, batch, gamma=gamma, p=p, new=30)
    graph = graph_engine(cuda_pair, batch, gamma=gamma, p=p, new=30, graphs=True)
    assert graph == eager
    assert sum(map(len, graph[0])) == 90


@needs_gpu
def test_cuda_graph_step_with_forced_controls(tiny_model_dir):
    """The benchmark's configuration: forced acceptance and density, graphs, random caches."""
    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(cuda_pair), 0.95, forced_schedule(3.0, GAMMA),
                             forced_density=0.1)
    dec = GraphDecoder(cuda_pair.draft, cuda_pair.verifier, settings, 4, 600)
    for cache in (dec.v_cache, dec.d_cache):
        cache.keys.normal_()
        cache.values.normal_()
    dec.reset_to(500)
    dec.capture()
    dec.reset_to(500)
    for _ in range(16):
        dec.step()
        dec.record(dec.kept.tolist())
    assert dec.host_last == [500 + 16 * 3] * 4 == dec.last.tolist()
    assert dec.forced_lists.n.eq(round(0.1 * math.ceil(500 / CHUNK))).all()


@needs_gpu
def test_cuda_graph_decoder_takes_kernel_launches(tiny_model_dir):
    """``GraphSettings.rows``: the draft rows are computed key by key in the same order at every launch, so the
    tokens equal the default launch's; ``split``: a launch whose partials the workspace must be sized for
    (more programs per SM, fewer chunks per program) captures and replays as it runs eagerly; so does
    ``sparse_split``, the list layers' launch (both models' under a windowed draft)."""
    from specattn.gpu.kernels.rows_config import RowsConfig
    from specattn.gpu.kernels.split_config import SplitConfig

    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    batch = prompts(3, 90, 5)
    default = graph_engine(cuda_pair, batch, p=0.7, new=30, graphs=True)
    assert graph_engine(cuda_pair, batch, p=0.7, new=30, graphs=True, rows=RowsConfig(16, 3, 4, 2)) == default
    split = SplitConfig(block_n=32, warps=2, stages=2, ctas_per_sm=4, min_chunks=2)
    eager = graph_engine(cuda_pair, batch, p=0.7, new=30, split=split)
    assert graph_engine(cuda_pair, batch, p=0.7, new=30, graphs=True, split=split) == eager
    assert sum(map(len, eager[0])) == 90
    # sparse_split: the list layers' launch in a workspace of its own (here a grid twice the dense layers')
    sparse = dict(p=0.7, new=30, sparse_split=split, draft_reads="first_window", draft_window=32, draft_sinks=4)
    assert graph_engine(cuda_pair, batch, graphs=True, **sparse) == graph_engine(cuda_pair, batch, **sparse)
    # draft_split: the draft's dense layers' launch in a workspace of its own, under a windowed draft's first forward
    drafted = dict(sparse, sparse_split=None, draft_split=SplitConfig(block_n=128, stages=3, min_chunks=16))
    assert graph_engine(cuda_pair, batch, graphs=True, **drafted) == graph_engine(cuda_pair, batch, **drafted)
