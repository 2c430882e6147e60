"""The package's structure: no import circle between its modules, and a README code map that lists
every module (issue 25)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "sonoseg"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside a function alike."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sonoseg"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("sonoseg")}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert graph["sonoseg.analysis.tables"] and graph["sonoseg.analysis.figures"]  # the graph is read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_readme_code_map_lists_every_module():
    """Every module of the package, by its stage folder: a row names the folder (`data/`) and its files."""
    readme = (REPO / "README.md").read_text()
    code_map = readme[readme.index("| `Snakefile`, `workflow/rules/common.smk` |") :]
    code_map = code_map[: code_map.index("\n\n")]
    listed = set()
    for row in code_map.splitlines():
        folder = re.match(r"\| `(?:src/sonoseg/)?(\w+)/`:", row)
        for name in re.findall(r"`(?:src/sonoseg/)?(\w+\.py|\w+/)`", row.split("|")[1]):
            listed.add(f"{folder[1]}/{name}" if folder and name != f"{folder[1]}/" else name)
    modules = {
        str(p.relative_to(PACKAGE))
        if p.parent.parent == PACKAGE or p.parent == PACKAGE
        else f"{p.parent.relative_to(PACKAGE)}/"
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent.parent != PACKAGE and p.parent != PACKAGE
    }
    assert modules - listed == set(), f"modules missing from the README's code map: {sorted(modules - listed)}"


STAGES = ("data", "networks", "training", "serving", "analysis", "study")


def test_the_package_is_laid_out_by_stage():
    """Every module lives in its stage's folder (beside errors.py, shared by all), and no module holds
    more than about 800 lines (a larger one holds more than one job)."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "errors.py"}, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(STAGES)
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) < 800, path
