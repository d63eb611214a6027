"""The layout that ARCHITECTURE.md draws (issue 14): imports point downward and modules stay small.

The import graph is read from the source (every ``import`` and ``from ... import``, also inside
functions, except those under ``if TYPE_CHECKING:``), per module."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "noisytail"
MAX_LINES = 500

# (importer prefix, forbidden target prefixes): the layers that must not be reached upward.
FORBIDDEN = [
    (
        "noisytail.models",
        [
            "noisytail.methods",
            "noisytail.train",
            "noisytail.detect",
            "noisytail.data",
            "noisytail.config",
            "noisytail.cli",
        ],
    ),
    (
        "noisytail.losses",
        [
            "noisytail.methods",
            "noisytail.train",
            "noisytail.detect",
            "noisytail.data",
            "noisytail.config",
            "noisytail.cli",
        ],
    ),
    ("noisytail.neighbors", ["noisytail.methods", "noisytail.detect", "noisytail.train"]),
    (
        "noisytail.methods",
        [
            "noisytail.detect",
            "noisytail.train",
            "noisytail.config",
            "noisytail.cli",
            "noisytail.benchmarks",
            "noisytail.bench",
        ],
    ),
    ("noisytail.data.loader", ["noisytail.methods", "noisytail.train"]),
    ("noisytail.data.batch", ["noisytail.methods", "noisytail.train"]),
    ("noisytail.detect", ["noisytail.cli", "noisytail.benchmarks", "noisytail.bench"]),
    ("noisytail.train", ["noisytail.cli", "noisytail.detect", "noisytail.benchmarks"]),
    ("noisytail.runfolder", ["noisytail.cli", "noisytail.detect", "noisytail.benchmarks"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The noisytail modules that ``path`` imports at run time (``from pkg import mod`` counts
    as importing ``pkg.mod`` when that is a module)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("noisytail"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("noisytail"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or None (iterative three-colour DFS).
    Package ``__init__`` modules are left out: they re-export what lies below them."""
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/")).is_dir()}
    edges = {m: sorted(t - packages) for m, t in graph.items() if m not in packages}
    state: dict[str, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack = [(start, iter(edges[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges.get(child, []))))
                path.append(child)
    return None


def test_find_cycle_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("importer,targets", FORBIDDEN)
def test_no_upward_import(importer, targets):
    upward = [
        f"{module} imports {target}"
        for module, imported in import_graph().items()
        if module == importer or module.startswith(importer + ".")
        for target in imported
        if any(target == t or target.startswith(t + ".") for t in targets)
    ]
    assert not upward, "upward imports: " + "; ".join(sorted(upward))


def test_modules_stay_small():
    large = {
        str(p.relative_to(SRC)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not large, f"modules above {MAX_LINES} lines: {large}"


# The layers of ARCHITECTURE.md, top first: a module may import its own layer and those below.
# A module belongs to the longest prefix that names it; the package's own __init__ (re-exports
# for users) is left out.
LAYERS = [
    ["noisytail.cli", "noisytail.cli_errors", "noisytail.__main__", "noisytail.bench"]
    + ["noisytail.bench_lock"]
    + ["noisytail.benchmarks", "noisytail.speed"],
    ["noisytail.estimator", "noisytail.inference", "noisytail.prediction", "noisytail.detect"]
    + ["noisytail.evaluate_ssl"],
    ["noisytail.train", "noisytail.summary", "noisytail.report", "noisytail.figures"],
    ["noisytail.runfolder", "noisytail.build", "noisytail.runtime", "noisytail.optim"]
    + ["noisytail.defaults"],
    ["noisytail.data.prepare", "noisytail.data.checked"],
    ["noisytail.config"],
    ["noisytail.methods"],
    ["noisytail.losses", "noisytail.models", "noisytail.neighbors", "noisytail.probes"]
    + ["noisytail.evaluate", "noisytail.groups", "noisytail.checkpoint_file"],
    ["noisytail.data"],
    ["noisytail.registry", "noisytail.errors", "noisytail.seeds", "noisytail.atomic"],
]


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of ``module`` (0 = top), None if no layer names it."""
    named = [
        (len(prefix), i)
        for i, layer in enumerate(LAYERS)
        for prefix in layer
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(named)[1] if named else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, imported in graph.items()
        if module != "noisytail"
        for target in imported
        if target != "noisytail" and layer_of(target) < layer_of(module)  # the root: __version__
    )


def test_every_module_has_a_layer_and_an_upward_import_is_found():
    assert [m for m in import_graph() if m != "noisytail" and layer_of(m) is None] == []
    planted = {"noisytail.methods.toy": {"noisytail.runfolder", "noisytail.losses.robust"}}
    assert upward_imports(planted) == ["noisytail.methods.toy imports noisytail.runfolder"]


def test_every_import_points_down_the_layers():
    upward = upward_imports(import_graph())
    assert not upward, "upward imports: " + "; ".join(upward)


def test_exceptions_become_one_line_in_one_place():
    # noisytail.errors.short_error is the one formatter of an exception's text as one line
    by_hand = re.compile(r"join\(str\(\w+\)\.split\(\)\)")
    found = [
        str(p.relative_to(SRC))
        for p in PACKAGE.rglob("*.py")
        if p.name != "errors.py" and by_hand.search(p.read_text())
    ]
    assert not found, f"format exceptions with noisytail.errors.short_error: {found}"
