"""Answer extraction and exact-match scoring of a generated answer, robust to an Instruct model's formatting.

:func:`normalise` removes code fences (their content stays), backticks, ``**`` / ``__`` emphasis and
thousands separators (``7,345,912`` -> ``7345912``: a comma between digits followed by exactly three
digits). Then, by the task's rule:

* ``number``: the answer is the *first* run of at least 4 digits (shorter numbers such as list
  markers are no answers); exact iff it equals the gold value;
* ``numbers``: the *set* of runs of at least 4 digits; exact iff it equals the gold set (order-free;
  a missing or an extra number is wrong);
* ``names``: the set of identifiers holding an underscore (``VOREK_TALUMIS``; English words have
  none), case-folded; exact iff it equals the gold set (a missing or an extra name is wrong);
* ``words``: the set of the sample's planted words (its ``universe``) that occur as whole words,
  case-folded; exact iff it equals the gold set (words never planted are ignored).

``score`` is the partial credit, reported beside the headline exact match: the share of the gold
items found anywhere in the normalised answer (RULER's metric: for ``number``, whether the gold
value occurs among the answer's numbers at all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"```[\w+-]*")
EMPHASIS = re.compile(r"\*\*|__(?=\w)|(?<=\w)__")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
NUMBER = re.compile(r"\d{4,}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORD = re.compile(r"[A-Za-z]+")
RULES = ("number", "numbers", "names", "words")


@dataclass(frozen=True)
class Score:
    answer: tuple[str, ...]  # what was extracted (sorted for the set rules)
    correct: bool  # exact match
    score: float  # partial credit in [0, 1]


def normalise(text: str) -> str:
    """The answer without code fences, backticks, emphasis and thousands separators."""
    text = FENCE.sub(" ", text).replace("`", " ")
    text = EMPHASIS.sub("", text)
    return THOUSANDS.sub("", text)


def extract(text: str, rule: str, universe: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The answer items of ``text`` under ``rule`` (see the module docstring)."""
    text = normalise(text)
    if rule == "number":
        found = NUMBER.search(text)
        return (found.group(0),) if found else ()
    if rule == "numbers":
        return tuple(sorted(set(NUMBER.findall(text))))
    if rule == "names":
        return tuple(sorted({name.casefold() for name in IDENTIFIER.findall(text) if "_" in name.strip("_")}))
    if rule == "words":
        planted = {word.casefold() for word in universe}
        return tuple(sorted({word.casefold() for word in WORD.findall(text)} & planted))
    raise ValueError(f"unknown answer rule {rule!r}: allowed are {', '.join(RULES)}")


def score(text: str, rule: str, expected: tuple[str, ...], universe: tuple[str, ...] = ()) -> Score:
    """Exact match and partial credit of the generated ``text`` against the gold ``expected`` items."""
    answer = extract(text, rule, universe)
    gold = {item.casefold() for item in expected}
    if rule == "number":
        found = set(NUMBER.findall(normalise(text)))
        return Score(answer, answer == tuple(expected), float(expected[0] in found))
    if rule == "names":
        found = {name.casefold() for name in IDENTIFIER.findall(normalise(text))}
    else:
        found = set(answer)
    return Score(answer, set(answer) == gold, len(gold & found) / len(gold))
