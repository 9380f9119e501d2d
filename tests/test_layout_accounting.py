"""Step geometry and KV-read accounting on hand-worked examples."""

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.core.kv_reads import KVReads
from specattn.core.layout import StepLayout


def test_steps_partition_the_scored_rows():
    layout = StepLayout(seq_len=21, prefill_len=4, gamma=3, chunk_size=4)
    # 20 input positions; scored rows 4..19 in steps of 4 rows
    assert layout.n_positions == 20 and layout.n_scored == 16
    assert layout.step_starts.tolist() == [4, 8, 12, 16]
    assert layout.step_ends.tolist() == [8, 12, 16, 20]
    assert layout.draft_rows.tolist() == [4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18]
    assert layout.step_of(torch.tensor([0, 3, 4, 7, 8, 19])).tolist() == [-1, -1, 0, 0, 1, 3]


def test_last_step_may_be_short():
    layout = StepLayout(seq_len=12, prefill_len=2, gamma=4, chunk_size=3)
    assert layout.step_starts.tolist() == [2, 7]
    assert layout.step_ends.tolist() == [7, 11]
    assert layout.draft_rows.tolist() == [2, 3, 4, 5, 7, 8, 9, 10]


def test_prefix_keys_per_chunk_counts_partial_chunks():
    layout = StepLayout(seq_len=21, prefill_len=5, gamma=2, chunk_size=4)
    # step 0 starts at 5: chunk 0 full (4 keys), chunk 1 holds key 4 only
    assert layout.prefix_keys_per_chunk[0, :3].tolist() == [4, 1, 0]
    assert layout.prefix_chunks[0, :3].tolist() == [True, True, False]


def test_kv_reads_hand_computed():
    layout = StepLayout(seq_len=13, prefill_len=4, gamma=1, chunk_size=4)
    # 12 positions, steps of 2 rows: [4,6) [6,8) [8,10) [10,12)
    steps = torch.arange(layout.n_steps)
    selection = torch.zeros(4, 1, layout.n_chunks, dtype=torch.bool)
    selection[:, 0, 0] = True  # keep only chunk 0 (keys 0..3)
    reads = KVReads()
    reads.add_layer(layout, steps, None, n_kv_heads=2)  # a dense layer
    reads.add_layer(layout, steps, selection, n_kv_heads=2)
    dense_per_layer = (6 + 8 + 10 + 12) * 2
    # sparse: prefix chunk 0 (4 keys, all in every prefix) + 2 tail keys, per step and head
    sparse = (4 + 2) * 4 * 2
    assert reads.dense_reads == 2 * dense_per_layer
    assert reads.reads == dense_per_layer + sparse
    assert reads.sparse_layer_reads == sparse
    assert reads.sparse_layer_reduction == pytest.approx(1 - sparse / dense_per_layer)
    assert reads.reduction == pytest.approx(1 - (dense_per_layer + sparse) / (2 * dense_per_layer))


def test_kv_reads_per_head_selection_and_partial_prefix_chunk():
    layout = StepLayout(seq_len=12, prefill_len=5, gamma=1, chunk_size=4)
    selection = torch.zeros(1, 2, layout.n_chunks, dtype=torch.bool)
    selection[0, 0, 1] = True  # head 0: chunk 1, of which only key 4 is in step 0's prefix
    selection[0, 1, 2] = True  # head 1: chunk 2, outside the prefix: reads nothing
    reads = KVReads()
    reads.add_layer(layout, torch.tensor([0]), selection, n_kv_heads=2)
    assert reads.sparse_layer_reads == (1 + 2) + (0 + 2)
    assert reads.sparse_layer_dense_reads == 7 * 2


def test_layout_refuses_degenerate_settings():
    with pytest.raises(SpecAttnError, match="gamma=0"):
        StepLayout(100, 10, 0, 16)
    with pytest.raises(SpecAttnError, match="chunk_size=0"):
        StepLayout(100, 10, 4, 0)
    with pytest.raises(SpecAttnError, match="leaves no scored position"):
        StepLayout(10, 9, 4, 16)
