"""Haystacks of exactly controlled length in tokens, with needles at given depths.

A prompt's token ids are the concatenation of separately tokenised pieces: the head (the chat
template's opening and the task's instruction), the haystack, and the tail (the question and the
template's generation prompt). The haystack is whole lines of a source text (filler; a line with the
blank lines after it), each tokenised on its own, with the needles (whole lines) inserted between
filler lines. Every piece ends with a line break, so the ids are those of tokenising the whole text
but at a few joins (where a tokenizer may merge across the break: on the real pair, the prompt's
text tokenised whole is within about 0.5% of its length), and the prompt holds exactly
``context_len`` tokens: the last filler line is cut to fit, and ends with a line break.

Depth: a needle's depth is the token offset of its first token within the haystack over the
haystack's length in tokens (0: the haystack's first token, 1: right before the tail). A needle
asked at depth ``d`` goes to the line boundary of the filler nearest to ``d`` times the filler's
length, so it lands within half a filler line of it (plus the needles placed before it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from ..core.errors import SpecAttnError
from ..data.sources import Document

MIN_FILLER_TOKENS = 32
TOKENISE_BATCH = 256  # lines tokenised per call


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens added (special tokens written in it are parsed)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class Line:
    text: str
    ids: tuple[int, ...]


class LineSource:
    """The lines of a text source's documents, from which haystacks are drawn."""

    def __init__(self, name: str, documents: list[Document], tokenizer, skip: tuple[str, ...] = ()):
        if not documents:
            raise SpecAttnError(f"haystack source {name} has no documents")
        self.name, self.documents, self.tokenizer, self.skip = name, documents, tokenizer, skip

    @cached_property
    def lines(self) -> list[list[str]]:
        """Each document's lines (line breaks kept), without lines holding a ``skip`` string; blank
        lines join the line before them (a tokenizer may merge consecutive line breaks)."""
        return [self._units(doc.text) for doc in self.documents]

    def _units(self, text: str) -> list[str]:
        units: list[str] = []
        for line in text.splitlines(keepends=True):
            if any(s in line for s in self.skip):
                continue
            if units and not line.strip():
                units[-1] += line
            else:
                units.append(line)
        return units

    def draw(self, rng: random.Random, n_tokens: int) -> tuple[list[Line], str]:
        """At least ``n_tokens`` tokens of consecutive lines from a random line of a random document on
        (continuing into the next documents, a blank line between), and where they start (``doc:line``)."""
        doc = rng.randrange(len(self.documents))
        line = rng.randrange(max(1, len(self.lines[doc])))
        origin = f"{self.documents[doc].name}:{line + 1}"
        lines: list[Line] = []
        total, wraps = 0, 0
        while total < n_tokens and wraps <= len(self.documents):
            batch = self.lines[doc][line : line + TOKENISE_BATCH]
            line += len(batch)
            if line >= len(self.lines[doc]):  # the document ends: a blank line, then the next one
                batch, doc, line, wraps = batch + ["\n"], (doc + 1) % len(self.documents), 0, wraps + 1
            texts = [text if text.endswith("\n") else text + "\n" for text in batch]
            for text, ids in zip(texts, self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
                lines.append(Line(text, tuple(ids)))
                total += len(ids)
        if total >= n_tokens:
            return lines, origin
        raise SpecAttnError(f"haystack source {self.name} holds fewer than {n_tokens} tokens")


@dataclass(frozen=True)
class Prompt:
    """A prompt's token ids and text, and where its haystack and needles are."""

    ids: tuple[int, ...]
    text: str
    haystack_start: int  # token position of the haystack's first token
    haystack_len: int  # tokens of the haystack (filler + needles)
    needle_positions: tuple[int, ...]  # token position of each needle's first token, in the task's order

    def depth_of(self, needle: int) -> float:
        """Actual depth of needle ``needle`` (see the module docstring)."""
        return (self.needle_positions[needle] - self.haystack_start) / self.haystack_len


def cut(lines: list[Line], n_tokens: int, newline: int, decode) -> list[Line]:
    """Whole ``lines`` while they fit in ``n_tokens``; the rest is the next line cut to fit, ending
    with the ``newline`` token (or newline tokens alone where one token is left)."""
    kept, total = [], 0
    for line in lines:
        if total + len(line.ids) > n_tokens:
            rest = n_tokens - total
            if rest:
                ids = line.ids[: rest - 1] + (newline,)
                kept.append(Line(decode(list(ids)), ids))
            return kept
        kept.append(line)
        total += len(line.ids)
    if total < n_tokens:
        raise SpecAttnError(f"cut: the lines hold {total} tokens, fewer than {n_tokens}")
    return kept


def assemble(head: Line, filler: list[Line], needles: list[tuple[Line, float]], tail: Line,
             context_len: int, newline: int, decode) -> Prompt:
    """The prompt of exactly ``context_len`` tokens: ``head``, the filler cut to fit with each
    ``(needle, depth)`` inserted at the filler line boundary nearest its depth, ``tail``."""
    budget = context_len - len(head.ids) - len(tail.ids) - sum(len(needle.ids) for needle, _ in needles)
    if budget < MIN_FILLER_TOKENS:
        raise SpecAttnError(f"a context length of {context_len} tokens leaves {budget} tokens of haystack once the "
                            f"template, question and needles ({context_len - budget} tokens) are in")
    lines = cut(filler, budget, newline, decode)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.ids))
    at = [min(range(len(offsets)), key=lambda b: (abs(offsets[b] - depth * budget), b)) for _, depth in needles]
    order = sorted(range(len(needles)), key=lambda i: (at[i], needles[i][1], i))
    pieces, positions = [head], {}
    position, next_needle = len(head.ids), 0
    for boundary in range(len(lines) + 1):
        while next_needle < len(order) and at[order[next_needle]] == boundary:
            index = order[next_needle]
            positions[index] = position
            pieces.append(needles[index][0])
            position += len(needles[index][0].ids)
            next_needle += 1
        if boundary < len(lines):
            pieces.append(lines[boundary])
            position += len(lines[boundary].ids)
    pieces.append(tail)
    ids = tuple(token for piece in pieces for token in piece.ids)
    assert len(ids) == context_len, (len(ids), context_len)
    return Prompt(ids, "".join(piece.text for piece in pieces), len(head.ids), context_len - len(head.ids) - len(tail.ids),
                  tuple(positions[i] for i in range(len(needles))))
