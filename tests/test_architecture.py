"""core/ is a plain library: it never imports the UI stack (streamlit, plotly)."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"
FORBIDDEN = {"streamlit", "plotly"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_ui_libraries():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    offenders = {str(f.relative_to(CORE)): imported_roots(f) & FORBIDDEN for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_checker_sees_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from plotly import graph_objects\n")
    assert "plotly" in imported_roots(f)
