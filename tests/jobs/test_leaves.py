"""The package's import structure: jobs are leaves (no job imports another) and no modules import each other in a loop."""

import ast
from pathlib import Path

import minimoe

PACKAGE = Path(minimoe.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node of the file except those under `if TYPE_CHECKING:` (imports for annotations never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imports(path: Path) -> set[str]:
    """The minimoe modules a file imports at run time (at any depth, so function-local imports count too)."""
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minimoe"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minimoe")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_job_imports_another_job():
    edges = {
        (name.split(".")[-1], target.split(".")[-1])
        for name, targets in graph().items()
        if name.startswith("minimoe.jobs.")
        for target in targets
        if target.startswith("minimoe.jobs.")
    }
    assert not edges, sorted(edges)


def test_no_import_cycles_between_modules():
    edges = graph()
    # package __init__ re-exports are not dependencies of their own submodules
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and t != "minimoe")} for m, ts in edges.items()}
    edges = {m: ts - {"minimoe"} for m, ts in edges.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_data_does_not_import_assets():
    """assets/ (fetching the embedded default) builds on data/ (readers), never the other way round."""
    upward = {(m, t) for m, ts in graph().items() if m.startswith("minimoe.data") for t in ts if "assets" in t}
    assert not upward, sorted(upward)
