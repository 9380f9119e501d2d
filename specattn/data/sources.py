"""Text sources: each yields named documents (a book, a split, a file) and a cheap fingerprint of
what it would read, which decides whether a run's results are still current (:mod:`specattn.runs.run_folder`)."""

from __future__ import annotations

import codecs
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..core.checks import SettingError
from ..core.errors import SpecAttnError
from ..core.stamps import digest, file_stamp


@dataclass(frozen=True)
class Document:
    name: str
    text: str
    origin: str | None = None  # the file it was read from, for messages


class TextSource(Protocol):
    """Anything with a ``name``, ``documents()`` returning the documents in a fixed order, and
    ``fingerprint()``: a short string that changes when the documents would, computed without
    reading them where a look at the files suffices (no model, no network)."""

    name: str

    def documents(self) -> list[Document]: ...

    def fingerprint(self) -> str: ...


#: bytes of each file decoded when the files are listed (before anything loads); the rest when read
SNIFFED = 1 << 16
#: an upper bound of the special tokens a tokenizer adds to a text (BOS, EOS, SentencePiece's leading space)
SPECIAL_TOKENS = 4
#: UTF-8 bytes per byte of a file, at most, by its encoding (others: 4, one character of up to 4 bytes)
UTF8_BYTES_PER_BYTE = {"utf-8": 1, "utf-8-sig": 1, "ascii": 1}


def _wide_encoding(data: bytes) -> str | None:
    """``utf-32`` or ``utf-16`` if ``data`` starts with its byte-order mark, ``utf-16-le``/``-be`` if NUL
    bytes fill every other position (ASCII-range text in UTF-16 without a mark), else None."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    even, odd = data[0::2].count(0) / max(1, len(data) // 2), data[1::2].count(0) / max(1, len(data) // 2)
    if len(data) >= 8 and max(even, odd) > 0.5 and min(even, odd) < 0.1:
        return "utf-16-le" if odd > even else "utf-16-be"
    return None


def decode_text(data: bytes, encoding: str, path: Path, final: bool = True) -> str:
    """``data`` (a file's bytes, or its first bytes if not ``final``) decoded with ``\\n`` line endings;
    text in UTF-16/32 read as another encoding, a binary file or one not in ``encoding`` is a one-line
    error naming it and the fix."""
    wide = _wide_encoding(data)
    if wide and not codecs.lookup(encoding).name.startswith(wide[:6]):
        raise SpecAttnError(f"dataset.source.paths: {path} looks like {wide[:6].upper()} text (a byte-order mark or "
                            f"NUL bytes between the letters), not {encoding}: set dataset.source.encoding={wide}")
    binary = SpecAttnError(f"dataset.source.paths: {path} is not a text file (it holds NUL bytes): give text files only")
    try:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as error:
            if final or error.start < len(data) - 4:
                raise
            text = data[:error.start].decode(encoding)  # the first bytes end inside a character
    except UnicodeDecodeError as error:
        if b"\0" in data:
            raise binary from None
        raise SpecAttnError(
            f"dataset.source.paths: {path} is not {encoding} text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}): convert it, or set dataset.source.encoding=<its encoding> (e.g. latin-1)") from None
    if "\0" in text:
        raise binary
    return text.replace("\r\n", "\n")


def read_text_file(path: Path, encoding: str) -> str:
    """The text of ``path`` (:func:`decode_text`)."""
    return decode_text(path.read_bytes(), encoding, path)


class TextFiles:
    """Local text files given as paths or glob patterns (``dataset=text_files``), in ``encoding``.
    ``paths``: a list, or one path or pattern (``dataset.source.paths=/data/book.txt``)."""

    def __init__(self, paths: list[str] | str, encoding: str = "utf-8", name: str = "text_files"):
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise SettingError("encoding", encoding, "is not a text encoding Python knows", "latin-1") from None
        self.name, self.encoding = name, encoding
        self.paths = [paths] if isinstance(paths, str) else list(paths)

    def files(self) -> list[Path]:
        """The matched files in order; an empty file, a folder, a pattern matching nothing or a file
        whose first :data:`SNIFFED` bytes are no text in ``encoding`` is an error."""
        if not self.paths:
            raise SpecAttnError("dataset=text_files needs dataset.source.paths=[file1.txt,'dir/*.txt']")
        files: list[Path] = []
        for pattern in self.paths:
            matched = [Path(m) for m in sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))]
            if not matched:
                raise SpecAttnError(f"dataset.source.paths: {pattern!r} matches no file")
            found = [path for path in matched if not path.is_dir()]
            if not found:
                raise SpecAttnError(f"dataset.source.paths: {pattern!r} matches only folders ({matched[0]}): "
                                    f"give the files, e.g. '{matched[0]}/*.txt'")
            for path in found:
                if not path.is_file():
                    raise SpecAttnError(f"dataset.source.paths: {path} is not a regular file")
                if path.stat().st_size == 0:
                    raise SpecAttnError(f"dataset.source.paths: {path} is empty")
                with path.open("rb") as handle:
                    decode_text(handle.read(SNIFFED), self.encoding, path, final=path.stat().st_size <= SNIFFED)
            files.extend(found)
        return files

    def documents(self) -> list[Document]:
        return [Document(f.stem, read_text_file(f, self.encoding), str(f)) for f in self.files()]

    def fingerprint(self) -> str:
        return digest([self.encoding, *(file_stamp(f) for f in self.files())])

    def max_tokens(self) -> list[tuple[Path, int]]:
        """Each file with an upper bound of its tokens under any tokenizer, known before one loads: a
        token holds at least one byte of the UTF-8 text (byte-level BPE, SentencePiece's byte
        fallback), plus :data:`SPECIAL_TOKENS`."""
        per_byte = UTF8_BYTES_PER_BYTE.get(codecs.lookup(self.encoding).name, 4)
        return [(path, per_byte * path.stat().st_size + SPECIAL_TOKENS) for path in self.files()]


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

    def fingerprint(self) -> str:
        """The split's identity (hub datasets are fixed per path, config and split)."""
        return digest(map(str, (self.path, self.config_name, self.split, self.max_documents, self.text_field,
                                self.name_field, self.join_rows)))

    def documents(self) -> list[Document]:
        import datasets

        from ..core.hub import hub_reachable

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
