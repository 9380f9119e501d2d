"""The evaluator's memory stays bounded at long contexts: no (rows x keys) attention matrix of more
than a block of query rows is ever built, in the draft capture, the verifier's masked attention or
the oracle; full-length attention goes only through SDPA's causal path, which holds no such matrix.

A (rows x keys) float32 matrix per head at 16K tokens is 12 GB for the 1.5B verifier's 12 heads, so
this is what lets an 8K or 16K sample run on a 24 GB machine (docs/results.md has the measured peaks).
"""

import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.settings import Settings
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.hooks.draft_capture import DraftObserver
from specattn.methods import Dense, OracleTopP, SpecAttn


class AttentionShapes:
    """Records the (rows, keys) of every softmax and of every SDPA call with its mask, while active."""

    def __init__(self, monkeypatch):
        self.softmax: list[tuple[int, int]] = []
        self.sdpa: list[tuple[int, int, bool, bool]] = []  # rows, keys, has a mask, is_causal
        softmax, sdpa = torch.softmax, torch.nn.functional.scaled_dot_product_attention

        def recording_softmax(input, dim, *args, **kwargs):
            if input.dim() >= 2 and dim in (-1, input.dim() - 1):
                self.softmax.append((input.shape[-2], input.shape[-1]))
            return softmax(input, dim, *args, **kwargs)

        def recording_sdpa(query, key, value, attn_mask=None, *args, is_causal=False, **kwargs):
            self.sdpa.append((query.shape[-2], key.shape[-2], attn_mask is not None, bool(is_causal)))
            return sdpa(query, key, value, attn_mask, *args, is_causal=is_causal, **kwargs)

        monkeypatch.setattr(torch, "softmax", recording_softmax)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)


@pytest.mark.parametrize("impl", ["parallel", "sequential"])
def test_no_attention_matrix_beyond_a_query_block(tiny_pair, monkeypatch, impl):
    prepare(tiny_pair)
    mapping = layer_map.resolve("proportional", tiny_pair.n_draft_layers, tiny_pair.n_verifier_layers,
                                tiny_pair.draft_layers)
    seq_len, block = 700, 48
    ids = torch.randint(3, 259, (seq_len,), generator=torch.Generator().manual_seed(3))
    settings = Settings(4, 8, 2, "mean", tuple(mapping), query_block=block, prefill_frac=0.1, impl=impl)
    shapes = AttentionShapes(monkeypatch)
    dense, sparse, oracle = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(0.9), OracleTopP(0.9, query_block=32)],
                                            settings, coverage=True)
    assert dense.reads.reads == dense.reads.dense_reads  # the masked paths did run, for both selections:
    assert sparse.reads.reads < dense.reads.reads and oracle.reads.reads < dense.reads.reads
    draft_block = DraftObserver.query_block
    assert shapes.softmax and max(rows for rows, _ in shapes.softmax) <= max(block, draft_block)
    assert max(keys for _, keys in shapes.softmax) >= seq_len - 2  # ... over the whole context
    masked = [(rows, keys) for rows, keys, has_mask, _ in shapes.sdpa if has_mask]
    assert masked and max(rows for rows, _ in masked) <= block
    long_rows = [call for call in shapes.sdpa if call[0] > block]
    if impl == "parallel":  # full-length forwards exist, and only on the causal path with no mask matrix
        assert long_rows and all(not has_mask and causal for _, _, has_mask, causal in long_rows)
    else:
        assert all(not has_mask for _, _, has_mask, _ in long_rows)
