"""The worked example of docs/architecture.md: draft SnapKV, and through it the draft-row history every
draft-based method gets for free (the window over earlier steps, the rollback of rejected rows)."""

import torch

from specattn.core.layout import StepLayout
from specattn.methods import Budget, DraftSnapKV, LayerView, SampleContext


def context(decoding: bool) -> SampleContext:
    return SampleContext([0, 0], [1], 1, torch.Generator().manual_seed(0), torch.device("cpu"), decoding=decoding)


def rows_at(n_keys: int, hot: dict[int, int]) -> torch.Tensor:
    """``(1 head, R, n_keys)`` draft rows: row r puts almost all its mass on key ``hot[r]``."""
    probs = torch.full((1, len(hot), n_keys), 1e-4)
    for r, key in enumerate(hot.values()):
        probs[0, r, key] = 1.0
    return probs / probs.sum(-1, keepdim=True)


def view(layout: StepLayout, steps) -> LayerView:
    n = layout.n_positions
    return LayerView(1, torch.arange(n), torch.tensor(steps), torch.zeros(1, n, 2), torch.zeros(1, n, 2), 1.0)


def chosen(selection, step=0):
    return set(torch.nonzero(selection[step, 0]).flatten().tolist())


def test_the_window_joins_earlier_steps_rows_in_the_evaluator():
    # prefill 32, gamma 2, chunks of 4: steps start at 32, 35, 38; budget: one chunk per step
    layout = StepLayout(seq_len=42, prefill_len=32, gamma=2, chunk_size=4)
    for history, expected in ((0, {7}), (1, {1})):
        active = DraftSnapKV(Budget(token_budget=4), history=history).start(context(False))
        active.begin_steps(layout)
        active.observe_draft(0, rows_at(41, {32: 5, 33: 5}), torch.tensor([32, 33]))  # step 0: chunk 1, twice
        active.observe_draft(0, rows_at(41, {35: 30}), torch.tensor([35]))  # step 1: chunk 7 once
        selection = active.select(view(layout, [0, 1, 2]))
        assert chosen(selection, 1) == expected  # with history 1, step 0's two rows outweigh step 1's one


def decode_two_steps(accepted_until: int):
    """Step 1 (P = 40, rows 40-42) then, after committing ``accepted_until``, step 2's selection (P = 41)."""
    active = DraftSnapKV(Budget(token_budget=4), history=2).start(context(True))
    first = StepLayout(seq_len=44, prefill_len=40, gamma=3, chunk_size=4)
    active.begin_steps(first)
    active.observe_draft(0, rows_at(43, {40: 2, 41: 13, 42: 13}), torch.tensor([40, 41, 42]))
    assert chosen(active.select(view(first, [0]))) == {3}  # chunk 3 has two rows' mass
    active.commit(accepted_until)
    second = StepLayout(seq_len=45, prefill_len=41, gamma=3, chunk_size=4)
    active.begin_steps(second)
    active.observe_draft(0, rows_at(44, {41: 5, 42: 5, 43: 13}), torch.tensor([41, 42, 43]))
    return chosen(active.select(view(second, [0])))


def test_rejected_draft_rows_leave_the_history_in_the_decoder():
    # only position 40 accepted: rows 41 and 42 (computed on rejected tokens) leave; this step's chunk 1
    # (two rows) beats chunk 3 (one row) and chunk 0 (the history's row 40)
    assert decode_two_steps(41) == {1}
    # everything accepted: rows 41 and 42 stay in the history and chunk 3 (1 + 2 rows) wins
    assert decode_two_steps(43) == {3}
