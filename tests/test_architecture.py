"""The package's import structure, read from its folders: no cycle, each layer imports only layers below it, no
entry point imports another, no long module.

The layers are the sub-packages, bottom up (:data:`LAYERS`); a module's layer is its folder's. Reads the imports of
every module (module level and inside functions) with ``ast``; runs nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dominant_patterns"
#: The sub-packages from the bottom up: a module may import its own layer and those before it.
LAYERS = ("conf", "core", "models", "data", "analysis", "attacks", "runs", "reporting", "apps")
#: Modules directly in the package: the public API sits on the library (below runs); the package itself, its
#: ``__main__`` and the thin ``python -m`` modules sit on top.
TOP = {"dominant_patterns.api": "attacks"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """The rank of a module's layer (the top for the package's own entry modules)."""
    parts = module.split(".")
    folder = TOP.get(module) or (parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None)
    return LAYERS.index(folder) if folder in LAYERS else len(LAYERS)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Package modules imported by ``path`` (``from a import b`` resolves to ``a.b`` when that is a module)."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = node.module or ""
            if node.level:
                up = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                src = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{src}.{a.name}" for a in node.names] + [src]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != "dominant_patterns":
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def entry_point(module: str) -> str | None:
    """The app a module belongs to: each module of ``apps/`` is one (``python -m`` modules run them by name; the
    package's ``__main__`` is the fitting app's)."""
    if module == "dominant_patterns.__main__":
        return "dominant_patterns.apps.fit"
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) >= 3 and parts[1] == "apps" else None


def test_every_module_sits_in_a_layer_folder() -> None:
    loose = sorted(m for m in modules() if m.count(".") == 1 and m.split(".")[1] not in LAYERS and m not in TOP)
    assert loose == ["dominant_patterns.__main__", "dominant_patterns.dashboard", "dominant_patterns.evaluate",
                     "dominant_patterns.layers", "dominant_patterns.report", "dominant_patterns.run",
                     "dominant_patterns.transfer"], loose
    for name in loose:  # thin python -m modules: they run their app by name and import nothing of the package
        allowed = {"dominant_patterns.apps.fit"} if name == "dominant_patterns.__main__" else set()
        assert graph()[name] <= allowed, f"{name} should only run its app, it imports {graph()[name]}"


def test_no_import_cycle() -> None:
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g[v]):
            assert state.get(w) != 1, f"import cycle: {' -> '.join(stack[stack.index(w):] + [w])}"
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(g):
        if v not in state:
            visit(v)


def test_layers_import_only_downward() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                    if layer(d) > layer(m) and d != "dominant_patterns.__init__")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_entry_point_imports_another() -> None:
    for module, deps in graph().items():
        for dep in deps:
            own, other = entry_point(module), entry_point(dep)
            assert other is None or other == own, f"{module} (an entry point) imports {dep} (another entry point)"


def test_no_long_module() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_dashboard_and_report_share_the_table_specs() -> None:
    """The paper tables are specified once, read by both the report and the dashboard."""
    g = graph()
    assert "dominant_patterns.reporting.table_specs" in g["dominant_patterns.apps.dashboard"]
    assert "dominant_patterns.reporting.table_specs" in g["dominant_patterns.reporting.build"]
