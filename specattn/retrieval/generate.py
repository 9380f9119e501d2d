"""Retrieval samples: the grid of (task, context length, depth, index) and the prompt of each.

A sample is a pure function of ``(seed, task, context_len, depth, index)`` and the source texts
(:func:`~specattn.retrieval.draws.sample_rng`): its filler starts at a seeded random line of a seeded
random document of the task's haystack source, its needles are drawn so that none occurs in that
filler, and the prompt is assembled to exactly ``context_len`` tokens
(:mod:`~specattn.retrieval.haystack`). Context length is the whole prompt the model reads: chat
template, instruction, haystack, question and the assistant turn's opening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import SpecAttnError
from ..data.sources import Document
from .draws import Draws, sample_rng
from .haystack import Line, LineSource, Prompt, assemble, encode
from .tasks import TASKS, Task, TaskInstance
from .template import FENCES, frame

SKIP = {"code": ("```",), "prose": ()}  # filler lines that would break the prompt's fences


@dataclass(frozen=True)
class Item:
    """One sample of the grid. A spread task (needles at random depths only) ignores ``depth`` but for
    seeding, so the samples of runs over different depths are different samples."""

    task: str
    context_len: int
    depth: float
    index: int

    @property
    def needle_depth(self) -> float:
        """The depth of the sample's first needle: ``depth``, or NaN for a spread task."""
        return math.nan if TASKS[self.task].spread else self.depth

    @property
    def sample_id(self) -> str:
        spread = "spread@" if TASKS[self.task].spread else ""
        return f"{self.task}/{self.context_len}/{spread}d{self.depth:g}/#{self.index}"


def grid(tasks: list[str], lengths: list[int], depths: list[float], samples: int) -> list[Item]:
    """Every sample of a run, shortest length first, then by sample index, depth and task (so that a
    run stopped early has every task); ``samples`` per (task, length, depth) cell, so a spread task has
    ``samples * len(depths)`` per length."""
    return [Item(task, length, float(depth), index) for length in lengths for index in range(samples)
            for depth in depths for task in tasks]


@dataclass(frozen=True)
class RetrievalSample:
    item: Item
    task: Task
    instance: TaskInstance
    prompt: Prompt
    origin: str  # where the filler starts: document:line


class SampleFactory:
    """Builds the samples of a run from its tokenizer, its haystack sources and its seed."""

    def __init__(self, tokenizer, sources: dict[str, list[Document]], seed: int):
        self.tokenizer, self.seed = tokenizer, seed
        self.sources = {name: LineSource(name, documents, tokenizer, SKIP[name]) for name, documents in sources.items()}
        newline = encode(tokenizer, "\n")
        if len(newline) != 1:
            raise SpecAttnError(f"the tokenizer writes a line break as {len(newline)} tokens; retrieval needs one")
        self.newline = newline[0]

    def _line(self, text: str) -> Line:
        return Line(text, tuple(encode(self.tokenizer, text)))

    def make(self, item: Item) -> RetrievalSample:
        task = TASKS[item.task]
        if task.haystack not in self.sources:
            raise SpecAttnError(f"task {task.name} needs a {task.haystack} haystack: add experiment.haystacks.{task.haystack}")
        rng = sample_rng(self.seed, item.task, item.context_len, item.depth, item.index)
        filler, origin = self.sources[task.haystack].draw(rng, item.context_len)
        instance = task.build(Draws(rng, "".join(line.text for line in filler) + "".join(FENCES[task.haystack])),
                              item.needle_depth)
        text = frame(self.tokenizer, task.haystack, task.instruction, instance.question)
        needles = [(self._line(needle.text), needle.depth) for needle in instance.needles]
        decode = self.tokenizer.decode
        try:
            prompt = assemble(self._line(text.head), filler, needles, self._line(text.tail), item.context_len,
                              self.newline, decode)
        except SpecAttnError as error:
            raise SpecAttnError(f"experiment.lengths: task {task.name}: {error}: use longer lengths") from None
        return RetrievalSample(item, task, instance, prompt, origin)
