"""core/ is a plain library that reads top to bottom: it never imports the UI stack (streamlit, plotly), a unit (a
top-level module or a folder) imports only from units listed above it in LAYERS, and no two modules import each
other, directly or round a longer circle, inside a folder or across folders (an import inside a function counts:
it is a dependency that runs later)."""

import ast
import shutil
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"
FORBIDDEN = {"streamlit", "plotly"}
# The order a model lives in (docs/architecture.md). A unit may import itself and anything above it, never below.
LAYERS = ["errors", "files", "task_spec", "config", "runs", "device", "workspace", "data", "models", "analysis",
          "export", "engine", "plan", "workflows", "jobs", "cli", "__main__", "__init__"]


def imported_modules(path: Path, root: Path = CORE) -> set[str]:
    """Every module a file under `root` (a copy of core/) imports, as dotted names; relative imports are resolved
    against the file's package."""
    package = ("core", *path.relative_to(root).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}  # `from core import engine` imports core.engine
    return out


def unit_of(dotted: str) -> str | None:
    """core.engine.loop -> engine; core.config -> config; not in core -> None. The bare package `core` is None
    too: `from core import engine` names its target unit in the second part, and every import of a submodule
    runs core/__init__ anyway."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "core" and len(parts) > 1 else None


def upward_imports(root: Path) -> list[str]:
    problems = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        assert unit in LAYERS, f"{rel}: unit '{unit}' is not in LAYERS; add it where it belongs"
        below = {}  # target unit -> the shortest module name imported from it (one line per unit)
        for mod in sorted(imported_modules(f, root), key=len):
            target = unit_of(mod)
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(unit):
                below.setdefault(target, mod)
        problems += [f"{rel} ({unit}) imports {mod} ({target}), which sits below it" for target, mod in below.items()]
    return problems


def module_of(path: Path, root: Path = CORE) -> str:
    """core/export/card.py -> core.export.card; core/models/__init__.py -> core.models."""
    parts = ("core", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of `root` (a copy of core/) it imports. `from core.export.card import render_card`
    names core.export.card.render_card: it is counted as the longest prefix that is a module."""
    files = {module_of(f, root): f for f in sorted(root.rglob("*.py"))}
    graph = {}
    for module, f in files.items():
        targets = set()
        for name in imported_modules(f, root):
            parts = name.split(".")
            prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            target = next((p for p in prefixes if p in files), None)
            if target not in (None, module, "core"):  # core/__init__ runs before any module anyway
                targets.add(target)
        graph[module] = targets
    return graph


def import_cycles(root: Path) -> list[str]:
    """Every import circle among the modules of `root`, as 'a -> b -> a' (each started at its first module in
    sorted order, so each circle is listed once)."""
    graph = import_graph(root)
    cycles = []

    def walk(start: str, path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                cycles.append(" -> ".join([*path, start]).replace("core.", ""))
            elif nxt > start and nxt not in path:  # circles through a smaller module were listed from it
                walk(start, [*path, nxt])

    for module in sorted(graph):
        walk(module, [module])
    return cycles


def test_core_never_imports_ui_libraries():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    offenders = {str(f.relative_to(CORE)): {m.split(".")[0] for m in imported_modules(f)} & FORBIDDEN
                 for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_units_import_only_from_units_above_them():
    assert upward_imports(CORE) == []


def test_core_init_imports_nothing_heavy():
    """`import core` (every submodule import runs it) must stay cheap: no torch, no engine."""
    assert imported_modules(CORE / "__init__.py") <= {"__future__", "__future__.annotations"}


def test_checker_sees_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from plotly import graph_objects\n")
    assert "plotly" in {m.split(".")[0] for m in imported_modules(f, tmp_path)}


def test_no_import_circles():
    cycles = import_cycles(CORE)
    assert not cycles, "import circles in core/ (break each: move what both need below them):\n" + "\n".join(cycles)


def test_checker_fails_on_a_planted_import_circle(tmp_path):
    """A copy of core/ with two modules of data/ importing each other (one of them inside a function) fails the
    check, and names the circle."""
    copy = tmp_path / "core"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = import_cycles(copy)
    (copy / "data" / "planted_a.py").write_text("from core.data.planted_b import helper\n")
    (copy / "data" / "planted_b.py").write_text("def helper():\n    from . import planted_a\n")
    assert [c for c in import_cycles(copy) if c not in before] == ["data.planted_a -> data.planted_b -> data.planted_a"]


@pytest.mark.parametrize("source", [
    "from core.engine.train import train\n",  # absolute
    "from ..engine import loop\n",  # relative
    "def late():\n    import core.jobs\n",  # inside a function
    "from core import engine\n",  # the package itself
])
def test_checker_fails_on_a_planted_upward_import(tmp_path, source):
    """A copy of core/ with one upward import planted in data/ fails the check, and names the file."""
    copy = tmp_path / "core"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward_imports(copy) == []
    (copy / "data" / "planted.py").write_text(source)
    problems = upward_imports(copy)
    assert len(problems) == 1 and problems[0].startswith("data/planted.py (data) imports"), problems
