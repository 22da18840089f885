"""The shape of the package: what loads what, no import cycles, ``python -m stmil``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stmil

SRC = Path(stmil.__file__).parent
HEAVY = ("av", "stmil.features.i3d", "stmil.features.extract", "stmil.features.weights")


@pytest.mark.parametrize("modules", [
    # training reads features through the store: it never decodes video or runs I3D
    ("stmil.mil.train", "stmil.mil.run", "stmil.mil.config"),
    # evaluating saved features, scoring saved features, incidents and calibration
    ("stmil.evaluation.evaluate", "stmil.score", "stmil.evaluation.incidents",
     "stmil.live.incidents", "stmil.live.calibrate", "stmil.live.events"),
    ("stmil.cli",),
])
def test_modules_load_neither_pyav_nor_the_network(modules):
    code = (f"import sys, {', '.join(modules)}; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _module_imports() -> dict[str, set[str]]:
    """Module name -> the stmil modules it imports at module level (not inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("stmil", *path.relative_to(SRC).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stmil"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("stmil")}
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _module_imports()
    assert "stmil.mil.train" in graph and "stmil.features.store" in graph
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_python_dash_m_stmil():
    out = subprocess.run([sys.executable, "-m", "stmil", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"stmil {stmil.__version__}"
