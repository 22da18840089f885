"""The shape of the package: what loads what, no import cycles, ``python -m stmil``.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module, inside functions too, so a cycle cannot hide behind a deferred import.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import stmil

SRC = Path(stmil.__file__).parent
HEAVY = ("av", "stmil.features.i3d", "stmil.features.extract", "stmil.features.weights")
#: What a deferred import may keep out of its module's import: third-party packages slow to
#: import (torch, scikit-learn: seconds, cold), PyAV, and the network's modules (:data:`HEAVY`).
#: numpy (0.1 s) counts only where a module does not load it already: the CLI, whose parser
#: and ``--help`` load no numpy.
HEAVY_DEPS = frozenset({"torch", "av", "sklearn", "matplotlib", "numpy", *HEAVY})
#: Modules whose deferred imports of stmil modules need no comment each, and why.
DEFERRED_BY_DESIGN = {
    "stmil.cli": "each command imports its library in its handler, so --help and the light "
                 "commands load none of the heavy packages",
}
REASON = "# deferred:"


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


@dataclass(frozen=True)
class Import:
    """One module (stmil's, or a third-party top-level package) that an import statement of
    ``module`` loads; ``where`` is ``file:line``."""

    module: str
    target: str
    where: str
    line: int
    deferred: bool  # inside a function: runs when the function is called
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs


def _module_name(path: Path) -> str:
    return ".".join(("stmil", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(
        ".__init__")


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The stmil modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``);
    third-party names come back as their top-level package, for :func:`_heavy`."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs or [base]


def _imports() -> list[Import]:
    """Every import statement of every stmil module, with where it sits."""
    found: list[Import] = []

    def walk(node: ast.AST, module: str, path: Path, deferred: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in _targets(child, module):
                    found.append(Import(module, t, f"{path.relative_to(SRC.parent)}:"
                                        f"{child.lineno}", child.lineno, deferred, type_only))
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
            guarded = type_only or (isinstance(child, ast.If)
                                    and "TYPE_CHECKING" in ast.unparse(child.test))
            walk(child, module, path, inner, guarded)

    for module, path in MODULES.items():
        walk(ast.parse(path.read_text()), module, path, False, False)
    return found


IMPORTS = _imports()


def _graph(unit=lambda m: m) -> dict[str, dict[str, Import]]:
    """``unit(a) -> {unit(b): the first import making it}`` over stmil modules, every import
    counted (deferred and type-only ones too)."""
    graph: dict[str, dict[str, Import]] = {unit(m): {} for m in MODULES}
    for imp in IMPORTS:
        a, b = unit(imp.module), unit(imp.target) if imp.target in MODULES else None
        if b is not None and a != b:
            graph[a].setdefault(b, imp)
    return graph


def _package(module: str) -> str:
    """A module's subpackage of stmil (``stmil.mil.train`` -> ``stmil.mil``); a top-level module
    (``stmil.score``) is its own unit."""
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one node
    (Tarjan's algorithm), through the component's first node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_shortest_cycle(graph, comp[0], set(comp)) for comp in components]


def _shortest_cycle(graph: dict[str, dict[str, Import]], start: str, inside: set[str]
                    ) -> list[str]:
    """A shortest path from ``start`` back to itself within one strongly connected component:
    breadth first."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        step = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in inside and w not in paths:
                    paths[w] = [*paths[v], w]
                    step.append(w)
        frontier = step
    raise AssertionError(f"{start} is on no cycle")


def _describe(cycles: list[list[str]], graph: dict[str, dict[str, Import]]) -> str:
    lines = []
    for cycle in cycles:
        lines.append("import cycle: " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:]):
            imp = graph[a][b]
            how = " (deferred)" if imp.deferred else " (type checking)" if imp.type_only else ""
            lines.append(f"  {a} -> {b}: {imp.where} imports {imp.target}{how}")
    return "\n".join(lines)


def test_import_graph_is_read_from_every_statement():
    assert "stmil.mil.train" in MODULES and "stmil.features.store" in MODULES
    # a function-level import is an edge like any other (cli imports stmil.score in cmd_score)
    assert any(i.module == "stmil.cli" and i.target == "stmil.score" and i.deferred
               for i in IMPORTS)
    # ``from stmil.evaluation import metrics`` is an import of the module stmil.evaluation.metrics
    assert any(i.module == "stmil.evaluation.evaluate" and i.target == "stmil.evaluation.metrics"
               for i in IMPORTS)


def test_cycle_finder_names_the_cycle():
    fake = {m: Import(m, m, f"{m}.py:1", 1, False, False) for m in "abcd"}
    graph = {"a": {"b": fake["a"]}, "b": {"c": fake["b"]}, "c": {"a": fake["c"]}, "d": {}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": fake["a"]}, "b": {}}) == []
    assert "import cycle: a -> b -> c -> a\n  a -> b: a.py:1" in _describe(_cycles(graph), graph)


def test_no_import_cycles_of_modules():
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, _describe(cycles, graph)


def test_no_import_cycles_of_packages():
    """Subpackages of stmil (and top-level modules like ``stmil.score``) form layers: no two
    import each other, however indirectly and from whichever of their modules."""
    graph = _graph(_package)
    assert "stmil.mil" in graph and "stmil.score" in graph
    cycles = _cycles(graph)
    assert not cycles, _describe(cycles, graph)


def _heavy() -> dict[str, frozenset[str]]:
    """Module -> what of :data:`HEAVY_DEPS` importing it loads (module-level imports,
    transitively: deferred and type-only imports do not run at import time)."""
    eager: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if not (imp.deferred or imp.type_only):
            eager[imp.module].add(imp.target)

    def load(m: str) -> frozenset[str]:
        seen, todo, out = {m}, [m], {m} & HEAVY_DEPS
        while todo:
            for t in eager[todo.pop()]:
                if t in HEAVY_DEPS:
                    out.add(t)
                if t in MODULES and t not in seen:
                    seen.add(t)
                    todo.append(t)
                elif t not in MODULES and t.split(".")[0] in HEAVY_DEPS:
                    out.add(t.split(".")[0])
        return frozenset(out)

    return {m: load(m) for m in MODULES}


def test_deferred_imports_keep_heavy_packages_out_and_say_why():
    """An import of a stmil module inside a function is allowed only where it keeps something
    of :data:`HEAVY_DEPS` (torch, PyAV, scikit-learn, the network...) out of its module's
    import, and then says so in a ``# deferred: ...`` comment on its line or above its group of
    imports (or its module is in :data:`DEFERRED_BY_DESIGN`). Anything else belongs at the top
    of the file; if moving it there makes a cycle, the layering is wrong, not the import."""
    heavy = _heavy()
    problems = []
    for imp in IMPORTS:
        if not imp.deferred or imp.target not in MODULES:
            continue
        gain = heavy[imp.target] - heavy[imp.module]
        if not gain:
            problems.append(f"{imp.where}: {imp.target} is imported inside a function but "
                            f"loads no heavy package that {imp.module} does not load already; "
                            "import it at the top of the file")
        elif imp.module not in DEFERRED_BY_DESIGN and not _has_reason(imp):
            problems.append(f"{imp.where}: deferred import of {imp.target} (keeps "
                            f"{', '.join(sorted(gain))} out) needs a '{REASON} <why>' comment")
    assert not problems, "\n".join(problems)


def _has_reason(imp: Import) -> bool:
    """A ``# deferred:`` comment on the import's line, or on the line above it or above the run
    of import lines it starts or belongs to."""
    lines = MODULES[imp.module].read_text().splitlines()
    k = imp.line - 1
    if REASON in lines[k]:
        return True
    k -= 1
    while k >= 0 and lines[k].strip().startswith(("from ", "import ")) \
            and REASON not in lines[k]:
        k -= 1
    return k >= 0 and REASON in lines[k]


def test_python_dash_m_stmil():
    out = subprocess.run([sys.executable, "-m", "stmil", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"stmil {stmil.__version__}"


MAX_FUNCTION_LINES = 80
#: Functions allowed over :data:`MAX_FUNCTION_LINES` for now, and why.
LONG_FUNCTIONS: dict[str, str] = {}  # function -> why it may stay longer (none today)


def test_no_function_is_over_80_lines():
    """Small functions, each doing one job: no function or method of stmil (its decorators
    left out, its docstring counted) is over :data:`MAX_FUNCTION_LINES` lines."""
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_FUNCTIONS:
                    long.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.name} is "
                                f"{lines} lines")
    assert not long, "split these by job:\n" + "\n".join(long)


def test_every_json_reader_goes_through_safejson():
    """``json.loads`` raises RecursionError on ``[[[[...]]]]``, which no reader's ``except
    ValueError`` catches (fuzz 1:1612: calibration.json); ``stmil.safejson.loads`` is the one
    loader of JSON that a user may have damaged."""
    offenders = [f"{path.relative_to(SRC.parent)}:{n}" for path in sorted(SRC.rglob("*.py"))
                 if path.name != "safejson.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\bjson\.loads?\(", line)]
    assert not offenders, f"use stmil.safejson.loads: {offenders}"
