"""Text sources: each yields named documents (a book, a split, a file)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import SpecAttnError


@dataclass(frozen=True)
class Document:
    name: str
    text: str


class TextSource(Protocol):
    """Anything with a ``name`` and ``documents()`` returning the documents in a fixed order."""

    name: str

    def documents(self) -> list[Document]: ...


class TextFiles:
    """Local UTF-8 text files given as paths or glob patterns (``dataset=text_files``)."""

    def __init__(self, paths: list[str], name: str = "text_files"):
        self.name = name
        self.paths = list(paths)

    def documents(self) -> list[Document]:
        if not self.paths:
            raise SpecAttnError("dataset=text_files needs dataset.source.paths=[file1.txt,'dir/*.txt']")
        files: list[Path] = []
        for pattern in self.paths:
            matched = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
            if not matched:
                raise SpecAttnError(f"dataset.source.paths: {pattern!r} matches no file")
            files.extend(Path(m) for m in matched if Path(m).is_file())
        return [Document(f.stem, f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")) for f in files]


class HubText:
    """A Hugging Face ``datasets`` split (``dataset=pg19``, ``dataset=wikitext``).

    ``join_rows=False``: each row is a document (PG-19: one book per row, named by ``name_field``).
    ``join_rows=True``: all rows are concatenated into one document (WikiText lines).
    """

    def __init__(self, path: str, split: str, text_field: str = "text", config_name: str | None = None,
                 name_field: str | None = None, join_rows: bool = False, max_documents: int | None = None,
                 name: str | None = None):
        self.path, self.split, self.config_name = path, split, config_name
        self.text_field, self.name_field = text_field, name_field
        self.join_rows, self.max_documents = join_rows, max_documents
        self.name = name or path

    def documents(self) -> list[Document]:
        import datasets

        from ..hub import hub_reachable

        split = self.split if self.max_documents is None else f"{self.split}[:{self.max_documents}]"
        if not hub_reachable():
            datasets.config.HF_HUB_OFFLINE = True  # read the local datasets cache only, no network retries
        try:
            rows = datasets.load_dataset(self.path, self.config_name, split=split)
        except Exception as error:  # datasets raises many types for offline/missing
            raise SpecAttnError(
                f"dataset {self.name}: could not load {self.path!r} split {self.split!r} from the Hugging Face hub "
                f"({type(error).__name__}); it needs internet or the HF datasets cache. Offline, use "
                "dataset=gutenberg (shipped) or dataset=text_files dataset.source.paths=[...]"
            ) from error
        texts = rows[self.text_field]
        if self.join_rows:
            return [Document(f"{self.name}/{self.split}", "".join(texts))]
        names = rows[self.name_field] if self.name_field else [f"{self.name}/{self.split}/{i}" for i in range(len(texts))]
        return [Document(str(n), t) for n, t in zip(names, texts)]
