"""The package's import graph has no cycles: no module of specattn imports one that imports it back
(imports inside functions count too)."""

import ast
from pathlib import Path

import specattn

PACKAGE = Path(specattn.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """specattn modules imported anywhere in ``path`` (``from .x import y`` counts y if it is a module)."""
    name = module_name(path)
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
