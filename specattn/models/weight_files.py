"""Cheap checks of weight files before anything loads: a damaged or incomplete file is one line
naming it, before a run folder is written or a model is de-quantised.

* a ``save_pretrained`` folder: ``config.json`` is a JSON object with a ``model_type``, the folder
  holds weights (``*.safetensors`` or ``pytorch_model*.bin``; a shard index's files all exist), and
  every ``.safetensors`` file is as long as its header says (a truncated download is the common case);
* a GGUF file: its header (metadata and tensor table) reads to the end, and the file holds the
  tensor data the table describes.

Only headers are read (a few MB for a GGUF's tokenizer metadata); no tensor is.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

from ..core.errors import SpecAttnError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
GGUF_DEFAULT_ALIGNMENT = 32
#: GGUF metadata value types -> struct format of a fixed-size value (8: string, 9: array)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _json_object(path: Path, role: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        raise SpecAttnError(f"{role}: {path} is not valid JSON ({type(error).__name__}: {str(error)[:80]}): "
                            "restore it from the model's source") from None
    if not isinstance(data, dict):
        raise SpecAttnError(f"{role}: {path} holds a {type(data).__name__}, not a JSON object: restore it from the "
                            "model's source")
    return data


def check_safetensors(path: Path, role: str) -> None:
    """Refuse a ``.safetensors`` file whose header is unreadable or whose data is shorter than it says."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        text = handle.read(length) if length is not None and 8 + length <= size else b""
    try:
        header = json.loads(text)
        end = max((int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError):
        raise SpecAttnError(f"{role}: {path} is not a safetensors file (its header cannot be read; {size} bytes): "
                            "download it again") from None
    expected = 8 + length + end
    if size < expected:
        raise SpecAttnError(f"{role}: {path} is truncated ({size} of {expected} bytes): download it again")


def check_saved_folder(folder: Path, role: str) -> None:
    """Refuse a folder that is no loadable ``save_pretrained`` folder: no or malformed ``config.json``,
    no weights, a missing shard, a truncated ``.safetensors`` file."""
    config = folder / "config.json"
    if not config.is_file():
        raise SpecAttnError(f"{role}={folder}: folder has no config.json (expected a save_pretrained folder)")
    if "model_type" not in _json_object(config, role):
        raise SpecAttnError(f"{role}: {config} has no model_type: it is not a transformers model config")
    for name in SHARD_INDEXES:
        if (folder / name).is_file():
            shards = sorted(set(map(str, _json_object(folder / name, role).get("weight_map", {}).values())))
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if not shards:
                raise SpecAttnError(f"{role}: {folder / name} lists no weight files: download the model again")
            if missing:
                raise SpecAttnError(f"{role}: {folder / name} lists {missing[0]}, which is missing"
                                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: download the "
                                    "model again")
    weights = [path for pattern in WEIGHT_PATTERNS for path in sorted(folder.glob(pattern)) if path.is_file()]
    if not weights:
        raise SpecAttnError(f"{role}={folder}: folder has a config.json but no weights (model.safetensors or "
                            "pytorch_model.bin): save the model with save_pretrained, or download it again")
    for path in weights:
        if path.suffix == ".safetensors":
            check_safetensors(path, role)


class _Cursor:
    """Reads GGUF's little-endian values from a memory map; reading past the end is ``struct.error``."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.data, self.at)[0]
        self.at += struct.calcsize("<" + fmt)
        return value

    def string(self) -> bytes:
        length = self.take("Q")
        start, self.at = self.at, self.at + length
        if self.at > len(self.data):
            raise struct.error("string past the end")
        return bytes(self.data[start:self.at])

    def skip(self, kind: int) -> None:
        """Step over one metadata value of type ``kind``."""
        if kind == _STRING:
            length = self.take("Q")
            self.at += length
        elif kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _GGUF_SCALARS:
                self.at += count * struct.calcsize("<" + _GGUF_SCALARS[item])
            else:
                for _ in range(count):
                    self.skip(item)
        elif kind in _GGUF_SCALARS:
            self.at += struct.calcsize("<" + _GGUF_SCALARS[kind])
        else:
            raise ValueError(f"unknown metadata type {kind}")
        if self.at > len(self.data):
            raise struct.error("value past the end")


def gguf_data_end(path: Path) -> int:
    """The byte count a GGUF file needs: its header, then its tensors' data as the tensor table
    places them. Raises ``struct.error`` / ``ValueError`` on a header that does not read."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        cursor.take("4s")
        version = cursor.take("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} (transformers reads versions 2 and 3)")
        n_tensors, n_values = cursor.take("Q"), cursor.take("Q")
        alignment = GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_values):
            key, kind = cursor.string(), cursor.take("I")
            if key == b"general.alignment" and kind == 4:
                alignment = cursor.take("I")
            else:
                cursor.skip(kind)
        end = 0
        for _ in range(n_tensors):
            cursor.string()
            dims = [cursor.take("Q") for _ in range(cursor.take("I"))]
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(cursor.take("I"))]
            offset = cursor.take("Q")
            end = max(end, offset + math.prod(dims) // block * type_size)
        return -(-cursor.at // alignment) * alignment + end


def check_gguf(path: Path, role: str) -> None:
    """Refuse a GGUF file whose header does not read or that is shorter than its tensors need."""
    size = path.stat().st_size
    try:
        needed = gguf_data_end(path)
    except struct.error:
        raise SpecAttnError(f"{role}={path} is truncated: it ends inside its GGUF header ({size} bytes): "
                            "download it again") from None
    except (ValueError, KeyError) as error:
        raise SpecAttnError(f"{role}={path}: its GGUF header is damaged or of an unknown kind ({type(error).__name__}: "
                            f"{str(error)[:80]}): download it again") from None
    if size < needed:
        raise SpecAttnError(f"{role}={path} is truncated ({size} of {needed} bytes): download it again")
