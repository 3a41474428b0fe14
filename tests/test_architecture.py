"""The import contract of the package (docs/architecture.md): the layers of ``pipeline/``
depend one way, the pure core imports no platform library, and no module imports another
in a cycle, counting the imports inside functions."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
# lowest first: a module may import its own layer and the layers before it
LAYERS = ("pipeline.allocator", "pipeline.errors", "pipeline.core", "pipeline.data", "pipeline.config", "pipeline.reporting",
          "pipeline.adapters", "pipeline.studies")
CORE_FORBIDDEN = ("ray", "mlflow", "pyarrow")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement of a file; ``from a
    import b`` counts as importing ``a.b`` when that is a module of the package."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in MODULES else node.module, id(node) in inside))
    return found


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if m != "pipeline" and not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert loose == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers_and_the_core_imports_no_platform(module):
    if module == "pipeline":
        return
    bad = []
    for target, _ in imports(MODULES[module]):
        top = target.split(".")[0]
        if target in MODULES and target != "pipeline" and layer(target) > layer(module):
            bad.append(target)
        if module.startswith("pipeline.core") and top in CORE_FORBIDDEN:
            bad.append(target)
    assert bad == [], f"{module} imports {bad}, above its layer {LAYERS[layer(module)]}"


def test_the_core_has_no_function_level_imports_of_the_package():
    late = [(m, t) for m, p in MODULES.items() if m.startswith("pipeline.core")
            for t, in_function in imports(p) if in_function and t.startswith("pipeline")]
    assert late == []


def test_no_import_cycle_among_the_packages_modules():
    graph = {m: {t for t, _ in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_two_modules_share_a_name():
    files = [p for folder in ("pipeline", "jobs", "benchmarks") for p in (ROOT / folder).rglob("*.py")
             if p.name != "__init__.py"]
    twice = [name for name, n in Counter(p.stem for p in files).items() if n > 1]
    assert twice == []
