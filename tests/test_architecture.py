"""The floors of docs/architecture.md, checked on every import the code makes.

Every `import` and `from … import` in pipeline/, workers/ and jobs/ is parsed, at module
level and inside functions alike (an import hidden in a function is still an arrow). The
test fails on an arrow that points up the floor order, on an import between two products,
on pipeline/ importing workers/ or jobs/ (or workers/ importing jobs/), on a circle between
modules, and on an import inside a function that does not say why it is there.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "workers", "jobs")
LAYERS = {"pipeline": 0, "workers": 1, "jobs": 2}   # jobs → workers → pipeline
# pipeline/ folders, bottom first; a folder may import its own modules and lower floors only.
FLOORS = (("io", "sampling"), ("quality",), ("operators",), ("models",), ("solvers",), ("restoration",),
          ("execution",), ("corpus",), ("training",), ("inspection", "tuning", "model_report", "reproduction"))
FLOOR = {folder: level for level, folders in enumerate(FLOORS) for folder in folders}
# An import inside a function must say why on its line or the line above (a heavy or optional
# dependency loaded only when used); these words are what such a comment names.
LAZY_REASON = "lazy:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The project modules an import statement loads (a `from X import name` of a submodule is that submodule)."""
    known = modules()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    base = node.module or ""
    if node.level:
        pkg = importer.split(".") if modules()[importer].name == "__init__.py" else importer.split(".")[:-1]
        base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    if base.split(".")[0] not in PACKAGES:
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return out


@lru_cache(maxsize=None)
def imports() -> list[tuple[str, str, int]]:
    """(importer, imported project module, line) of every import, wherever it stands."""
    found = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update((name, target, node.lineno) for target in resolve(name, node))
    return sorted(found)


def floor_of(module: str) -> tuple[int, str] | None:
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 3:   # the package root and its entry are not on a floor
        return None
    if parts[1] not in FLOOR:
        raise AssertionError(f"pipeline/{parts[1]}/ is on no floor: add it to FLOORS and docs/architecture.md")
    return FLOOR[parts[1]], parts[1]


def test_every_pipeline_folder_has_a_floor():
    folders = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert folders == set(FLOOR), f"folders without a floor: {folders - set(FLOOR)}; floors without a folder: " \
                                  f"{set(FLOOR) - folders}"


def test_no_arrow_points_up():
    bad = []
    for importer, target, line in imports():
        a, b = LAYERS[importer.split(".")[0]], LAYERS[target.split(".")[0]]
        if b > a:
            bad.append(f"{importer}:{line} → {target} (pipeline ← workers ← jobs)")
            continue
        fa, fb = floor_of(importer), floor_of(target)
        if fa is None or fb is None or fa[1] == fb[1]:
            continue
        if fb[0] > fa[0]:
            bad.append(f"{importer}:{line} → {target} (floor {fa[1]} imports the higher floor {fb[1]})")
        elif fb[0] == fa[0]:
            bad.append(f"{importer}:{line} → {target} ({fa[1]} and {fb[1]} share a floor and never import each other)")
    assert not bad, "\n".join(bad)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module, or a module importing itself."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for importer, target, _ in imports():
        graph.setdefault(importer, set()).add(target)
    circles = strongly_connected(graph)
    assert not circles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in circles)


def block_start(lines: list[str], lineno: int) -> int:
    """Index of the first line of the run of imports and comments that ends at line `lineno`:
    one `# lazy:` comment speaks for the imports right below it."""
    i = lineno - 1
    while i > 0 and lines[i - 1].strip().startswith(("import ", "from ", "#", ")")):
        i -= 1
    return i


@lru_cache(maxsize=None)
def nested_imports() -> list[tuple[str, int, str]]:
    """(importer, line, source lines around it) of every import statement inside a function,
    of project and third-party modules alike, in pipeline/ and workers/ (jobs/ defers its
    imports by design: docs/architecture.md, "Floors")."""
    found = []
    for name, path in modules().items():
        if name.split(".")[0] == "jobs":
            continue
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(f):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
                        found.append((name, node.lineno, "\n".join(lines[block_start(lines, node.lineno):node.lineno])))
    return sorted(set(found))


def test_imports_inside_functions_say_why():
    bad = [f"{importer}:{line} imports inside a function without a '# {LAZY_REASON} why' comment"
           for importer, line, context in nested_imports() if LAZY_REASON not in context]
    assert not bad, f"{len(bad)} imports inside functions:\n" + "\n".join(bad)


@pytest.mark.parametrize("case", ["up", "circle"])
def test_the_checks_catch_what_they_claim(case):
    """The checker itself: an upward arrow and a two-module circle are found."""
    if case == "circle":
        assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    else:
        assert floor_of("pipeline.io.samples")[0] < floor_of("pipeline.restoration.restore")[0]
