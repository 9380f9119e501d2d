"""The shipped public-domain books (``dataset=gutenberg``); provenance in ``books/PROVENANCE.md``.

The split is fixed: three books are held out for layer-alignment calibration, the other fifteen
are for evaluation, ordered so that the first samples mix authors and genres.
"""

from __future__ import annotations

import hashlib
import lzma
from importlib import resources

from ..core.errors import SpecAttnError
from ..core.stamps import digest
from .sources import Document

CALIBRATION_BOOKS = ("austen-persuasion", "chesterton-thursday", "whitman-leaves")
EVALUATION_BOOKS = (
    "melville-moby_dick", "austen-emma", "carroll-alice", "chesterton-brown", "milton-paradise",
    "shakespeare-hamlet", "edgeworth-parents", "bible-kjv", "austen-sense", "bryant-stories",
    "shakespeare-macbeth", "chesterton-ball", "burgess-busterbrown", "shakespeare-caesar", "blake-poems",
)
SPLITS = {"eval": EVALUATION_BOOKS, "calibration": CALIBRATION_BOOKS}


def book_file(name: str):
    """The compressed file of one shipped book."""
    path = resources.files(__package__) / "books" / f"{name}.txt.xz"
    if not path.is_file():
        known = ", ".join(sorted(EVALUATION_BOOKS + CALIBRATION_BOOKS))
        raise SpecAttnError(f"no shipped book named {name!r}; known books: {known}")
    return path


def read_book(name: str) -> str:
    """The full text of one shipped book (UTF-8, ``\\n`` line endings)."""
    return lzma.decompress(book_file(name).read_bytes()).decode("utf-8")


class GutenbergBooks:
    """Shipped books of one split (``eval`` or ``calibration``), or an explicit ``books`` list."""

    def __init__(self, split: str = "eval", books: list[str] | None = None, name: str = "gutenberg"):
        if books is None and split not in SPLITS:
            raise SpecAttnError(f"dataset.source.split={split!r}: allowed are {sorted(SPLITS)}")
        self.split = split
        self.books = tuple(books) if books is not None else SPLITS[split]
        self.name = name

    def documents(self) -> list[Document]:
        return [Document(book, read_book(book)) for book in self.books]

    def fingerprint(self) -> str:
        """The books' names and compressed contents (a few MB, hashed in milliseconds)."""
        return digest(f"{book}:{hashlib.sha256(book_file(book).read_bytes()).hexdigest()}" for book in self.books)
