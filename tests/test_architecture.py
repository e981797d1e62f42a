"""The package's import structure: no cycle, no entry point importing another, layers only import downward.

Reads the imports of every module (module level and inside functions) with ``ast``; runs nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dominant_patterns"
APPS = {"dominant_patterns.run", "dominant_patterns.evaluate", "dominant_patterns.layers",
        "dominant_patterns.transfer", "dominant_patterns.report", "dominant_patterns.dashboard"}
#: Infrastructure: what the apps share (records, jobs, config checks, tracking, display, sweep status).
INFRASTRUCTURE = {"dominant_patterns.records", "dominant_patterns.jobs", "dominant_patterns.config_checks",
                  "dominant_patterns.tracking", "dominant_patterns.display", "dominant_patterns.sweep_status",
                  "dominant_patterns.multi_fit", "dominant_patterns.table_specs"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


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


def app_of(module: str) -> str | None:
    """The entry point a module belongs to (``python -m dominant_patterns`` is the fitting app)."""
    if module == "dominant_patterns.__main__":
        return "dominant_patterns.run"
    return next((a for a in APPS if module == a or module.startswith(a + ".")), None)


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


def test_no_entry_point_imports_another() -> None:
    for module, deps in graph().items():
        for dep in deps:
            own, other = app_of(module), app_of(dep)
            assert other is None or other == own, f"{module} (an entry point) imports {dep} (another entry point)"


def test_library_core_imports_no_app_and_no_infrastructure() -> None:
    """Layers: library core -> infrastructure -> apps; each imports only downward (the API is core)."""
    for module, deps in graph().items():
        if app_of(module) or module in INFRASTRUCTURE:
            continue
        upward = sorted(d for d in deps if app_of(d) or d in INFRASTRUCTURE)
        assert not upward, f"library module {module} imports {upward}"


def test_infrastructure_imports_no_app() -> None:
    for module in INFRASTRUCTURE:
        apps = sorted(d for d in graph()[module] if app_of(d))
        assert not apps, f"{module} imports the entry points {apps}"


def test_no_long_module() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES + 20}
    assert not long, f"modules over about {MAX_LINES} lines: {long}"


def test_dashboard_and_report_share_the_table_specs() -> None:
    """The paper tables are specified once (infrastructure), read by both the report and the dashboard."""
    g = graph()
    assert "dominant_patterns.table_specs" in g["dominant_patterns.dashboard"]
    assert "dominant_patterns.table_specs" in g["dominant_patterns.report.build"]


def test_report_is_a_package_with_a_main() -> None:
    assert (PACKAGE / "report" / "__init__.py").is_file() and (PACKAGE / "report" / "__main__.py").is_file()
