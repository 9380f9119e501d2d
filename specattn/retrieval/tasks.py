"""The retrieval and aggregation tasks: what each plants in its haystack, what it asks, the gold answer.

Each task draws its needles with :class:`~specattn.retrieval.draws.Draws` (pseudo-words and 7-digit
values that do not occur in the haystack) and returns a :class:`TaskInstance`: the needles (each a
text of whole lines and a depth in [0, 1]; the first is the needle at the requested depth, the
others are placed at seeded random depths), the question, the gold answer and its scoring rule
(:mod:`specattn.retrieval.scoring`). The haystack is Python source (``code``) or prose (``prose``).

==============  =======  =====================================================================
task            text     what is planted and asked (as RULER's tasks, on the project's own texts)
==============  =======  =====================================================================
needle_code     code     ``NAME = 1234567``; the value of NAME
needle_prose    prose    "One of the special magic numbers for key is: 1234567."; the number
multikey        prose    4 such lines of 4 keys; the number of one key (3 distractor keys)
multivalue      prose    4 lines of one key; all 4 numbers
multiquery      code     4 constants; the values of 2 of them
vartrack        code     a chain ``A = v``, ``B = A``, ``C = B``, ``D = C`` spread from the depth
                         towards the end (and a 2-name distractor chain of another value); every
                         name bound to v
common_words    prose    ``Keyword: word`` lines: 3 words 6 times each, 6 others 1-3 times, all at
                         random depths (no depth axis); the 3 most frequent words
code_two_hop    code     ``def get_x():\n    return NAME`` at the depth and ``NAME = 1234567`` half
                         the haystack away; what get_x() returns (two distant places)
==============  =======  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .draws import Draws

INSTRUCTIONS = {
    "code": "Below is some Python source code. Read it carefully and answer the question after it.",
    "prose": "Below is a long text. Read it carefully and answer the question after it.",
}


@dataclass(frozen=True)
class Needle:
    text: str  # whole lines, ending with "\n"
    depth: float  # where it goes in the haystack, in [0, 1]


@dataclass(frozen=True)
class TaskInstance:
    """One drawn instance of a task."""

    needles: tuple[Needle, ...]  # the first one is at the requested depth (spread tasks: all random)
    question: str
    expected: tuple[str, ...]  # the gold answer's items (one for a single value)
    answer: str  # scoring rule: number | numbers | names | words
    universe: tuple[str, ...] = ()  # words: the planted words an answer may name


@dataclass(frozen=True)
class Task:
    name: str
    haystack: str  # code | prose
    spread: bool  # needles at random depths only: no depth axis (depth NaN)
    build: Callable[[Draws, float], TaskInstance]

    @property
    def instruction(self) -> str:
        return INSTRUCTIONS[self.haystack]


def magic(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}.\n"


def needle_code(draws: Draws, depth: float) -> TaskInstance:
    name, value = draws.name(), draws.value()
    return TaskInstance((Needle(f"{name} = {value}\n", depth),),
                        f"What value is assigned to the constant {name} in the code above? Answer with the number only.",
                        (value,), "number")


def needle_prose(draws: Draws, depth: float) -> TaskInstance:
    key, value = draws.key(), draws.value()
    return TaskInstance((Needle(magic(key, value), depth),),
                        f"What is the special magic number for {key} mentioned in the text above? "
                        "Answer with the number only.", (value,), "number")


def multikey(draws: Draws, depth: float, keys: int = 4) -> TaskInstance:
    pairs = [(draws.key(), draws.value()) for _ in range(keys)]
    needles = [Needle(magic(*pairs[0]), depth)] + [Needle(magic(*pair), draws.depth()) for pair in pairs[1:]]
    return TaskInstance(tuple(needles), f"What is the special magic number for {pairs[0][0]} mentioned in the text "
                        "above? Answer with the number only.", (pairs[0][1],), "number")


def multivalue(draws: Draws, depth: float, values: int = 4) -> TaskInstance:
    key = draws.key()
    numbers = [draws.value() for _ in range(values)]
    needles = [Needle(magic(key, numbers[0]), depth)] + [Needle(magic(key, v), draws.depth()) for v in numbers[1:]]
    return TaskInstance(tuple(needles), f"What are all the special magic numbers for {key} mentioned in the text "
                        "above? Answer with the numbers only, separated by commas.", tuple(numbers), "numbers")


def multiquery(draws: Draws, depth: float, constants: int = 4) -> TaskInstance:
    pairs = [(draws.name(), draws.value()) for _ in range(constants)]
    depths = [depth] + [draws.depth() for _ in pairs[1:]]
    needles = tuple(Needle(f"{name} = {value}\n", d) for (name, value), d in zip(pairs, depths))
    (a, va), (b, vb) = pairs[0], pairs[1]
    return TaskInstance(needles, f"What values are assigned to the constants {a} and {b} in the code above? "
                        "Answer with the two numbers only, separated by a comma.", (va, vb), "numbers")


def chain(names: list[str], value: str, depths: list[float]) -> list[Needle]:
    """``names[0] = value``, then each name bound to the one before, at ascending ``depths``."""
    sources = [value] + names[:-1]
    return [Needle(f"{name} = {source}\n", d) for name, source, d in zip(names, sources, depths)]


def vartrack(draws: Draws, depth: float, links: int = 4, distractors: int = 2) -> TaskInstance:
    value, other = draws.value(), draws.value()
    names = [draws.name() for _ in range(links)]
    decoys = [draws.name() for _ in range(distractors)]
    later = sorted(depth + (1.0 - depth) * draws.depth() for _ in names[1:])
    needles = chain(names, value, [depth, *later]) + chain(decoys, other, sorted(draws.depth() for _ in decoys))
    return TaskInstance(tuple(needles), f"Which constants in the code above hold the value {value}, assigned "
                        "directly or through other constants? Answer with all of their names only, separated by "
                        "commas.", tuple(names), "names")


def common_words(draws: Draws, depth: float, top: int = 3, top_count: int = 6, others: int = 6,
                 other_counts: tuple[int, int] = (1, 3)) -> TaskInstance:
    frequent = [draws.word() for _ in range(top)]
    rare = [draws.word() for _ in range(others)]
    planted = [w for w in frequent for _ in range(top_count)]
    planted += [w for w in rare for _ in range(draws.rng.randint(*other_counts))]
    needles = tuple(Needle(f"Keyword: {w}\n", draws.depth()) for w in planted)
    return TaskInstance(needles, f"Some lines of the text above have the form 'Keyword: <word>'. Which {top} "
                        f"keywords occur most often? Answer with the {top} words only, separated by commas.",
                        tuple(frequent), "words", tuple(frequent + rare))


def code_two_hop(draws: Draws, depth: float) -> TaskInstance:
    function, name, value = draws.function(), draws.name(), draws.value()
    other = depth + 0.5 if depth <= 0.5 else depth - 0.5
    needles = (Needle(f"def {function}():\n    return {name}\n", depth), Needle(f"{name} = {value}\n", other))
    return TaskInstance(needles, f"What number does calling {function}() in the code above return? "
                        "Answer with the number only.", (value,), "number")


TASKS = {task.name: task for task in (
    Task("needle_code", "code", False, needle_code),
    Task("needle_prose", "prose", False, needle_prose),
    Task("multikey", "prose", False, multikey),
    Task("multivalue", "prose", False, multivalue),
    Task("multiquery", "code", False, multiquery),
    Task("vartrack", "code", False, vartrack),
    Task("common_words", "prose", True, common_words),
    Task("code_two_hop", "code", False, code_two_hop),
)}
