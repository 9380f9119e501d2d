"""The package's import graph has no cycles: no module of specattn imports one that imports it back
(imports inside functions count too)."""

import ast
from pathlib import Path

import specattn

PACKAGE = Path(specattn.__file__).parent


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], package: Path = PACKAGE) -> set[str]:
    """specattn modules imported anywhere in ``path`` (``from .x import y`` counts y if it is a module)."""
    name = module_name(path, package)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(files)) for name, path in files.items()}
    cycles = []
    for start in graph:  # a module reaching itself again through its imports
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen and not (nxt.startswith(start + ".") or start.startswith(nxt + ".")):
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


#: the package's layers, bottom first: a module may import its own layer's packages and the layers below,
#: never a layer above (docs/architecture.md). Imports inside functions count.
LAYERS = (
    ("core",),
    ("gpu", "models", "data"),
    ("methods",),
    ("hooks",),
    ("eval", "decode", "align", "retrieval"),
    ("bench",),
    ("runs",),
    ("results",),
    ("experiments",),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def upward_imports(files: dict[str, Path], package: Path = PACKAGE) -> list[str]:
    """``module -> imported module`` pairs that go up the layers."""
    found = []
    for name, path in files.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in RANK:
            continue
        for target in imports(path, set(files), package):
            layer = target.split(".")[1] if target.count(".") else None
            if layer in RANK and RANK[layer] > RANK[parts[1]]:
                found.append(f"{name} -> {target}")
    return sorted(found)


def test_layers_import_downward_only():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    assert not upward_imports(files), "imports that go up the layers:\n" + "\n".join(upward_imports(files))


def test_layer_check_catches_an_upward_import(tmp_path):
    """The check itself: a core module importing a method is reported."""
    core = tmp_path / "specattn" / "core"
    methods = tmp_path / "specattn" / "methods"
    core.mkdir(parents=True)
    methods.mkdir()
    (core / "bad.py").write_text("from ..methods import nucleus\n")
    (methods / "nucleus.py").write_text("")
    files = {"specattn.core.bad": core / "bad.py", "specattn.methods.nucleus": methods / "nucleus.py"}
    assert upward_imports(files, tmp_path / "specattn") == ["specattn.core.bad -> specattn.methods.nucleus"]


def test_the_public_api_resolves_lazily():
    import subprocess
    import sys

    names = specattn.__all__
    code = ("import sys, specattn; assert 'torch' not in sys.modules; "
            f"[getattr(specattn, n) for n in {names!r}]; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_top_level_holds_only_subpackages():
    """``specattn/`` holds subpackages, ``__init__.py`` and nothing else (no loose modules)."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules at the top level of specattn/: {loose}"
    for package in RANK:
        assert (PACKAGE / package / "__init__.py").is_file(), f"specattn/{package}/ is not a package"


def test_every_triton_kernel_module_is_in_the_compile_check():
    """``python -m specattn.gpu.kernels.aot_check`` compiles every Triton kernel for sm_90 without a GPU (a compile
    error found there costs no device time): each kernel module defines ``_aot_check`` and the check lists it
    (nucleus.py's kernels are compiled by the check itself)."""
    kernels = PACKAGE / "gpu" / "kernels"
    check = ast.parse((kernels / "aot_check.py").read_text())  # read, not imported: this run has no triton
    [listed] = [ast.literal_eval(node.value) for node in check.body
                if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["MODULES"]]
    for path in sorted(kernels.glob("*.py")):
        if "@triton.jit" not in path.read_text() or path.name == "nucleus.py":
            continue
        tree = ast.parse(path.read_text())
        assert any(isinstance(node, ast.FunctionDef) and node.name == "_aot_check" for node in tree.body), path.name
        assert path.stem in listed, path.name
