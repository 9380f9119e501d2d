"""Seeded draws of the needles' keys, names, words and values, none of which occurs in the haystack.

Every retrieval sample is a pure function of ``(seed, task, context length, depth, sample index)``
and the source texts: :func:`sample_rng` turns that tuple into a :class:`random.Random` through
SHA-256 (not Python's salted ``hash``), so the same tuple gives the same sample in every process.

Keys, names and words are pseudo-words of consonant-vowel syllables (``vorekal``): no English word
list is needed, and :class:`Draws` redraws any that occurs in the haystack text (case-insensitively)
or was drawn before for the same sample. Values are 7-digit numbers (no leading zero), redrawn when
they occur in the haystack.
"""

from __future__ import annotations

import hashlib
import random

from ..core.errors import SpecAttnError

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
MAX_TRIES = 1000


def sample_rng(seed: int, task: str, context_len: int, depth: float, index: int) -> random.Random:
    """The generator of one sample."""
    key = f"{seed}/{task}/{context_len}/{depth:.6f}/{index}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


class Draws:
    """Fresh pseudo-words and values for one sample, none in ``haystack`` nor drawn before."""

    def __init__(self, rng: random.Random, haystack: str):
        self.rng = rng
        self.haystack = haystack.casefold()
        self.used: set[str] = set()

    def _fresh(self, draw) -> str:
        for _ in range(MAX_TRIES):
            value = draw()
            if value.casefold() not in self.used and value.casefold() not in self.haystack:
                self.used.add(value.casefold())
                return value
        raise SpecAttnError("could not draw a needle that does not occur in the haystack: the haystack text is "
                            "too repetitive or too long for the pseudo-word generator")

    def _syllables(self, n: int) -> str:
        return "".join(self.rng.choice(CONSONANTS) + self.rng.choice(VOWELS) for _ in range(n)) + \
            self.rng.choice(CONSONANTS)

    def word(self, syllables: int = 2) -> str:
        """A lowercase pseudo-word such as ``vorekal`` (``syllables`` consonant-vowel pairs + a consonant)."""
        return self._fresh(lambda: self._syllables(syllables))

    def key(self) -> str:
        """A prose key such as ``vorek-talumis`` (two pseudo-words)."""
        return self._fresh(lambda: f"{self._syllables(2)}-{self._syllables(2)}")

    def name(self) -> str:
        """A Python constant name such as ``VOREK_TALUMIS`` (upper case, one underscore, no digits)."""
        return self._fresh(lambda: f"{self._syllables(2)}_{self._syllables(2)}".upper())

    def function(self) -> str:
        """A Python function name such as ``get_vorek_talumis``."""
        return self._fresh(lambda: f"get_{self._syllables(2)}_{self._syllables(2)}")

    def value(self) -> str:
        """A 7-digit number as text (no leading zero)."""
        return self._fresh(lambda: str(self.rng.randrange(1_000_000, 10_000_000)))

    def depth(self) -> float:
        """A depth in [0, 1] for a needle placed at random."""
        return self.rng.random()
