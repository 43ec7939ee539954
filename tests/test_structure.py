"""The package's shape, measured from its source: one-way layers, no import loops, short
functions, behaviour that differs between SDEs on the SDE.

Every `import` statement counts, including those inside functions, so a loop hidden behind a
deferred import is still a loop.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "score_jax"
MAX_FUNCTION_LINES = 60

# Units of the package (a top-level module or a subpackage) by layer, from the bottom. A unit
# imports only units of its own layer or below; `train` and `evaluation` never import each other.
LAYERS: dict[str, int] = {
    # process set-up and plain utilities
    "score_jax": 0,
    "config": 0,
    "errors": 0,
    "run_record": 0,
    "backend_probe": 0,
    "xla_cpu": 0,
    "hugepages": 0,
    "parallel": 0,
    "images": 0,
    # mathematics
    "sde": 1,
    "toy": 1,
    "rk45": 1,
    # data, then networks
    "data": 2,
    "models": 3,
    # what is computed with a score
    "losses": 4,
    "sampling": 4,
    "likelihood": 4,
    # a run's pieces shared by training and evaluation
    "controllable": 5,
    "objective": 5,
    "score_model": 5,
    "state": 5,
    "checkpoints": 5,
    # beside each other
    "train": 6,
    "evaluation": 6,
    # the application: commands and run orchestration
    "report": 7,
    "cli": 7,
    "controllable_cli": 7,
    "__main__": 7,
}
SIBLINGS = {"train", "evaluation"}
# Imports allowed inside functions: optional heavy dependencies, and the CLI's dispatch, which
# loads JAX and a command's modules only after parsing (instant --help) and after the CPU-only
# re-execution with huge pages (so JAX is not imported twice).
DEFERRABLE = ("torch", "tensorflow_datasets")
DEFERRING_FUNCTIONS = {("cli.py", "_run"), ("cli.py", "_initialize_distributed")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing_function(node: ast.AST, parents) -> str | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node.name
    return None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement loads; `from pkg import sub` counts as pkg.sub."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    submodules = []
    for alias in node.names:
        candidate = PACKAGE.parent / Path(*f"{base}.{alias.name}".split("."))
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            submodules.append(f"{base}.{alias.name}")
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def _imports() -> list[tuple[Path, str, str, str | None]]:
    """(file, importing module, imported name, enclosing function or None) for every import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = _parents(tree)
        module = _module_name(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                function = _enclosing_function(node, parents)
                for name in _imported(node, module, path.name == "__init__.py"):
                    found.append((path, module, name, function))
    return found


def _unit_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for _, module, name, _ in _imports():
        if name == "score_jax" or name.startswith("score_jax."):
            a, b = _unit(module), _unit(name)
            if a != b:
                edges.setdefault(a, set()).add(b)
    return edges


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the DFS stack, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set(), "add new modules to LAYERS (and to ARCHITECTURE.md)"


def test_no_import_cycle_between_units():
    assert _find_cycle(_unit_edges()) is None


def test_imports_go_down_the_layers():
    wrong = sorted(
        f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
        for a, targets in _unit_edges().items()
        for b in targets
        if LAYERS[b] > LAYERS[a] or {a, b} == SIBLINGS
    )
    assert wrong == []


def test_imports_inside_functions_only_defer_optional_dependencies():
    wrong = sorted(
        f"{path.relative_to(REPO)}: {function}() imports {name}"
        for path, _, name, function in _imports()
        if function is not None
        and not name.startswith(DEFERRABLE)
        and (path.name, function) not in DEFERRING_FUNCTIONS
    )
    assert wrong == []


def test_functions_are_at_most_60_lines():
    long = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "configs").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert long == []


def test_sde_specific_behaviour_is_not_chosen_outside_sde_py():
    pattern = re.compile(r"isinstance\(.*SDE|type\(.*SDE")
    found = [
        f"{path.relative_to(REPO)}:{i}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "sde.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "edges, loop",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}}, False),
        ({"train": {"evaluation"}, "evaluation": {"train"}}, True),
    ],
)
def test_cycle_finder_finds_loops(edges, loop):
    assert (_find_cycle(edges) is not None) is loop
