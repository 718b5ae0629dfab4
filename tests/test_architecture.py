"""The package layering: engine/ at the bottom; training/ and the inspection core (inspection/) on it;
lineio/ on the core; inspector/ (the Qt app) on top; main.py, scripts/ and benchmarks/ above everything
and imported by none of the packages; no Qt below the app, and no import circles anywhere.

Every module of the packages and the entry points is parsed with `ast`; all its imports count, also those
inside functions (a lazy import is still an arrow between modules). Relative imports are
resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "training", "inspection", "lineio", "inspector")
ENTRY_POINTS = ("main.py", "scripts", "benchmarks")   # commands and tools: they import the packages, never the reverse
TOP = ("main", "scripts", "benchmarks")

# package -> the packages it must not import (engine is the bottom layer, inspector the top; only the
# app imports Qt)
FORBIDDEN = {"engine": ("training", "inspection", "lineio", "inspector", "PySide6", *TOP),
             "training": ("inspection", "lineio", "inspector", "PySide6", *TOP),
             "inspection": ("training", "lineio", "inspector", "PySide6", *TOP),
             "lineio": ("training", "inspector", "PySide6", *TOP),
             "inspector": TOP}


def module_name(path: Path) -> str:
    """engine/detector.py -> 'engine.detector'; engine/__init__.py -> 'engine'."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the packages and the entry points."""
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    for entry in ENTRY_POINTS:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return {module_name(p): p for p in files}


def imported_names(name: str, path: Path) -> set[str]:
    """The absolute dotted names a module imports, anywhere in its body: for `from X import a`
    both X and X.a (a may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def nearest_module(target: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted import name lands in (its longest known prefix), or None."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> project modules it imports, module -> every dotted name it imports)."""
    modules = project_modules()
    raw = {name: imported_names(name, path) for name, path in modules.items()}
    graph = {name: {m for t in targets if (m := nearest_module(t, modules)) and m != name}
             for name, targets in raw.items()}
    return graph, raw


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a closed path, first module repeated at the end) per strongly connected group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [cycle_in(group, graph) for group in groups]


def cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed path through a strongly connected group, found by breadth-first search back to its first member."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_graph_sees_relative_and_function_level_imports():
    graph, _ = import_graph()
    assert "engine.checkpoint" in graph["engine"]  # `from .checkpoint import ...` in a package __init__
    assert "training.datasets" in graph["training.fit"]  # `from .datasets import ...` inside a function
    assert "inspection.session" in graph["inspection"] and "lineio.outbox" in graph["lineio.outputs"]
    assert "inspector.headless" in graph["main"] and "benchmarks.bench_engine" in graph["benchmarks.bench_live"]


def test_find_cycles_reports_a_closed_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_lower_layers_do_not_import_upper_ones():
    _, raw = import_graph()
    modules = project_modules()
    wrong = sorted({f"{name} imports {nearest_module(target, modules) or target}" for name, targets in raw.items()
                    for target in targets for banned in FORBIDDEN.get(name.split(".")[0], ())
                    if target == banned or target.startswith(banned + ".")})
    assert not wrong, "layering broken:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def window_signals() -> set[str]:
    """The names of the Signals declared in MainWindow's class body (inspector/main_window.py)."""
    tree = ast.parse((ROOT / "inspector" / "main_window.py").read_text(encoding="utf-8"))
    window = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MainWindow")
    return {t.id for n in window.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
            and getattr(n.value.func, "id", "") == "Signal" for t in n.targets if isinstance(t, ast.Name)}


def window_reach_ins(source: str, name: str, signals: set[str]) -> list[str]:
    """`window.X.Y` (as `self.window`, `window` or `w`) in module `source` where X is not one of the
    window's signals: a controller reaching into a widget instead of asking the window."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        owner = node.value.value
        is_window = (isinstance(owner, ast.Name) and owner.id in ("w", "window")) or (
            isinstance(owner, ast.Attribute) and owner.attr == "window"
            and isinstance(owner.value, ast.Name) and owner.value.id == "self")
        if is_window and node.value.attr not in signals:
            found.append(f"{name}:{node.lineno}: window.{node.value.attr}.{node.attr}")
    return found


def test_the_controller_asks_the_window_instead_of_reaching_into_its_widgets():
    signals = window_signals()
    assert {"source_requested", "thresholds_requested", "export_requested"} <= signals
    sample = "self.window.controls.show_progress('')\nw.act_quit.triggered.connect(f)\nw.closing.connect(f)\n"
    assert window_reach_ins(sample, "sample.py", signals) == ["sample.py:1: window.controls.show_progress",
                                                              "sample.py:2: window.act_quit.triggered"]
    found = [f for p in sorted((ROOT / "inspector").glob("controller*.py"))
             for f in window_reach_ins(p.read_text(encoding="utf-8"), p.name, signals)]
    assert not found, "the controller reaches into the window's widgets:\n" + "\n".join(found)
    tab_numbers = [f"{p.name}: {call}" for p in sorted((ROOT / "inspector").glob("controller*.py"))
                   for call in ("setCurrentIndex(", "currentIndex()") if call in p.read_text(encoding="utf-8")]
    assert not tab_numbers, "tabs by number, not by name (show_tab / current_tab):\n" + "\n".join(tab_numbers)
