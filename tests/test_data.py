"""Shipped books, the fixed split, and the cutting of documents into samples."""

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.data.gutenberg import (
    CALIBRATION_BOOKS,
    EVALUATION_BOOKS,
    GutenbergBooks,
    read_book,
)
from specattn.data.sources import Document, TextFiles
from specattn.data.windows import token_windows
from specattn.models.byte_tokenizer import byte_tokenizer


def test_shipped_books_are_complete_and_split_disjointly():
    assert len(EVALUATION_BOOKS) == 15 and len(CALIBRATION_BOOKS) == 3
    assert not set(EVALUATION_BOOKS) & set(CALIBRATION_BOOKS)
    moby = read_book("melville-moby_dick")
    assert moby.startswith("[Moby Dick by Herman Melville 1851]") and "\r" not in moby
    assert "Call me Ishmael" in moby and len(moby) > 1_200_000
    assert "è" in read_book("chesterton-ball")  # decoded from Latin-1
    names = [d.name for d in GutenbergBooks("calibration").documents()]
    assert names == list(CALIBRATION_BOOKS)
    with pytest.raises(SpecAttnError, match="split='test'"):
        GutenbergBooks("test")


def test_windows_go_round_robin_over_documents():
    tokenizer = byte_tokenizer()
    docs = [Document("a", "a" * 25), Document("b", "b" * 12), Document("c", "c" * 30)]
    samples = token_windows(docs, tokenizer, context_len=10, num_samples=6)
    assert [s.sample_id for s in samples] == ["a#0", "b#0", "c#0", "a#1", "c#1", "c#2"]
    assert all(s.input_ids.numel() == 10 for s in samples)
    assert tokenizer.decode(samples[3].input_ids) == "a" * 10
    with pytest.raises(SpecAttnError, match="only 6 windows"):
        token_windows(docs, tokenizer, context_len=10, num_samples=7)
    # first_sample: the windows after the first ones, the same windows a longer run takes there
    later = token_windows(docs, tokenizer, context_len=10, num_samples=2, first=3)
    assert [s.sample_id for s in later] == ["a#1", "c#1"]
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(later, samples[3:5]))
    with pytest.raises(SpecAttnError,
                       match="fewer than dataset.first_sample=5 \\+ dataset.num_samples=2.*lower dataset.first_sample"):
        token_windows(docs, tokenizer, context_len=10, num_samples=2, first=5)


def test_windows_from_a_long_book_are_exact_slices():
    tokenizer = byte_tokenizer()
    text = read_book("carroll-alice")
    samples = token_windows([Document("alice", text)], tokenizer, context_len=500, num_samples=3)
    ids = tokenizer(text[:2000])["input_ids"]
    assert samples[2].input_ids.tolist() == ids[1000:1500]


def test_text_files_glob(tmp_path):
    (tmp_path / "one.txt").write_text("first\r\nbook")
    (tmp_path / "two.txt").write_text("second")
    docs = TextFiles([str(tmp_path / "*.txt")]).documents()
    assert [(d.name, d.text) for d in docs] == [("one", "first\nbook"), ("two", "second")]
    with pytest.raises(SpecAttnError, match="matches no file"):
        TextFiles([str(tmp_path / "*.md")]).documents()


def test_hub_text_reads_a_datasets_folder(tmp_path):
    """The pg19/wikitext code path (``datasets.load_dataset``) on a local dataset folder."""
    import json

    from specattn.data.sources import HubText

    folder = tmp_path / "books"
    folder.mkdir()
    rows = [{"title": "first", "text": "one two"}, {"title": "second", "text": " three"}]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    books = HubText(str(folder), split="test", name_field="title").documents()
    assert [(d.name, d.text) for d in books] == [("first", "one two"), ("second", " three")]
    joined = HubText(str(folder), split="test", join_rows=True, name="local").documents()
    assert [(d.name, d.text) for d in joined] == [("local/test", "one two three")]
    with pytest.raises(SpecAttnError, match="could not load"):
        HubText(str(tmp_path / "missing"), split="test").documents()


def test_python_source_joins_each_package_into_one_document(tmp_path):
    from specattn.data.python_source import PythonSource

    files = {"pkg/a.py": "A = 1\n", "pkg/sub/b.py": "B = 2\n", "other/c.py": "C = 3\n", "top.py": "T = 4\n",
             "one.py": "O = 5\n", "pkg/tests/t.py": "skipped\n"}
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    per_file = PythonSource("eval", root=str(tmp_path)).documents() + PythonSource(
        "calibration", root=str(tmp_path)).documents()
    grouped = PythonSource("eval", root=str(tmp_path), documents="package").documents() + PythonSource(
        "calibration", root=str(tmp_path), documents="package").documents()
    version = per_file[0].name.split("/")[0]
    # every file in exactly one document, after its header line; tests/ left out as before
    texts = "\n".join(d.text for d in grouped)
    for relative, text in files.items():
        assert (f"# file: {relative}\n{text}" in texts) == ("tests/" not in relative)
    assert len(per_file) == 5
    package_of = {d.name: d for d in grouped}
    assert set(package_of) <= {f"{version}/pkg", f"{version}/other", f"{version}/<modules>"}
    assert any("# file: pkg/sub/b.py" in d.text and d.name == f"{version}/pkg" for d in grouped)
    # within a split, a package's files keep the per-file hash order
    for split in ("eval", "calibration"):
        names = [d.name.split("/", 1)[1] for d in PythonSource(split, root=str(tmp_path)).documents()]
        for doc in PythonSource(split, root=str(tmp_path), documents="package").documents():
            inside = [name for name in names if f"# file: {name}\n" in doc.text]
            assert [doc.text.index(f"# file: {name}") for name in inside] == sorted(
                doc.text.index(f"# file: {name}") for name in inside)
    # the grouping is part of the fingerprint; the per-file fingerprint is unchanged by the option
    assert PythonSource(root=str(tmp_path), documents="package").fingerprint() != PythonSource(
        root=str(tmp_path)).fingerprint()
    with pytest.raises(SpecAttnError, match="documents='module'"):
        PythonSource(root=str(tmp_path), documents="module")
