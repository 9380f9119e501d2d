"""Cut documents into samples of exactly ``context_len`` tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import SpecAttnError
from .sources import Document

CHARS_PER_TOKEN_GUESS = 6


@dataclass(frozen=True)
class Sample:
    """One evaluation sample: ``input_ids`` is ``(context_len,)`` long."""

    sample_id: str
    input_ids: torch.Tensor


def _tokens(tokenizer, text: str, needed: int) -> tuple[list[int], bool]:
    """At least ``needed`` leading tokens of ``text`` (or all of them), tokenising only a prefix.

    Returns ``(ids, complete)``; ``complete`` is True when the whole text was tokenised.
    """
    chars = needed * CHARS_PER_TOKEN_GUESS
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=True)["input_ids"]
        if chars >= len(text):
            return ids, True
        # drop the last few tokens of a cut prefix: the cut can split a word differently
        if len(ids) - 8 >= needed:
            return ids[: len(ids) - 8], False
        chars *= 2


def token_windows(documents: list[Document], tokenizer, context_len: int, num_samples: int,
                  source_name: str = "dataset", first: int = 0, *, count_key: str = "dataset.num_samples",
                  length_key: str = "dataset.context_len", asked: str | None = None,
                  fix: str | None = None) -> list[Sample]:
    """``num_samples`` non-overlapping windows, round-robin over documents, from window ``first`` on.

    Sample ``k`` is window ``k // D`` of document ``k % D`` among the ``D`` documents still long
    enough: the first samples are the opening ``context_len`` tokens of each document in order
    (the PG-19 protocol of the paper and Quest), later rounds take each document's next window.
    ``first`` skips that many of them (``dataset.first_sample``): a later run then measures the windows an
    earlier run of ``first`` samples did not, and the two pool into one sample set
    (``python -m specattn.results intervals --pool``). Too few windows: one error naming the config keys that set
    ``num_samples`` and ``context_len`` (``count_key``, ``length_key``); a caller whose count is not a key of its own
    says what asked for it and the fix instead (``asked``, ``fix``: e.g. windows derived from a token budget).
    """
    wanted = first + num_samples
    samples: list[Sample] = []
    cache: dict[int, tuple[list[int], bool]] = {}  # by position: two documents may share a name
    round_index = 0
    while len(samples) < wanted:
        needed = (round_index + 1) * context_len
        took_any = False
        for position, doc in enumerate(documents):
            if len(samples) == wanted:
                break
            ids, complete = cache.get(position, ([], False))
            if len(ids) < needed and not complete:
                ids, complete = cache[position] = _tokens(tokenizer, doc.text, needed)
            if len(ids) < needed:
                continue
            window = torch.tensor(ids[needed - context_len : needed], dtype=torch.long)
            samples.append(Sample(f"{doc.name}#{round_index}", window))
            took_any = True
        if not took_any:
            if asked is None:
                asked = f"dataset.first_sample={first} + {count_key}={num_samples}" if first else \
                    f"{count_key}={num_samples}"
            if fix is None:
                fix = f"lower {'dataset.first_sample or ' if first else ''}{count_key} or {length_key}"
            raise SpecAttnError(
                f"dataset {source_name} holds only {len(samples)} windows of {length_key}={context_len} tokens, "
                f"fewer than {asked}{_too_short(documents, cache, context_len)}: {fix}"
            )
        round_index += 1
    return samples[first:]


def check_enough_text(source, context_len: int, num_samples: int, source_name: str, length_key: str,
                      first: int = 0) -> None:
    """Refuse, before any tokenizer loads, a source whose files cannot hold ``first + num_samples`` windows of
    ``context_len`` tokens even at the most tokens they can hold (sources that can tell: ``max_tokens()``)."""
    bounds = getattr(source, "max_tokens", None)
    if bounds is None:
        return
    sizes = bounds()
    windows = sum(tokens // context_len for _, tokens in sizes)
    if windows >= first + num_samples:
        return
    short = [f"{path}: {path.stat().st_size} bytes, at most {tokens} tokens" for path, tokens in sizes
             if tokens < context_len]
    more = f" and {len(short) - 3} more" if len(short) > 3 else ""
    detail = f" (shorter than one window: {', '.join(short[:3])}{more})" if short else ""
    asked = f"dataset.first_sample={first} + dataset.num_samples={num_samples}" if first else \
        f"dataset.num_samples={num_samples}"
    raise SpecAttnError(f"dataset {source_name} holds at most {windows} windows of {length_key}={context_len} tokens, "
                        f"fewer than {asked}{detail}: lower dataset.{'first_sample or dataset.' if first else ''}"
                        f"num_samples or {length_key}, or give more text")


def _too_short(documents: list[Document], cache: dict[int, tuple[list[int], bool]], context_len: int) -> str:
    """``" (shorter than one window: a.txt: 12 tokens, ...)"`` for the documents without a single window."""
    lengths = {position: len(ids) for position, (ids, complete) in cache.items() if complete}
    short = [f"{doc.origin or doc.name}: {lengths[position]} tokens" for position, doc in enumerate(documents)
             if lengths.get(position, context_len) < context_len]
    if not short:
        return ""
    more = f" and {len(short) - 3} more" if len(short) > 3 else ""
    return f" (shorter than one window: {', '.join(short[:3])}{more})"
