"""Limits of the code's shape: no function in src/ over 100 lines; the training package takes nothing from
evaluation but the kNN monitor's feature extraction and kNN (as torchvision's loop calls evaluate); no import
cycles, not even inside functions; at most four modules at the package's top level; the loop and the options name
no method."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "contrastkit"
MAX_LINES = 100
# the one place train/ may import from evaluate/, and what it may take
MONITOR = SRC / "train" / "monitor.py"
MONITOR_NAMES = {"extract_features", "knn_accuracy"}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_over_100_lines():
    long = [f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in sorted(SRC.rglob("*.py")) for n in _functions(p) if n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, long


def _evaluate_imports(path: Path) -> list[tuple[str, set[str]]]:
    """(module, names) of every import of contrastkit.evaluate in a module of contrastkit/train/."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            absolute = module if node.level == 0 else "contrastkit." + ".".join(
                ["train"][: max(0, 2 - node.level)] + ([module] if module else []))
            if absolute.startswith("contrastkit.evaluate") or (node.level == 2 and module.startswith("evaluate")):
                found.append((absolute, {a.name for a in node.names}))
        elif isinstance(node, ast.Import):
            found += [(a.name, set()) for a in node.names if a.name.startswith("contrastkit.evaluate")]
    return found


def test_train_takes_only_the_monitors_knn_from_evaluate():
    for path in sorted((SRC / "train").rglob("*.py")):
        imports = _evaluate_imports(path)
        if path == MONITOR:
            assert imports and all(names <= MONITOR_NAMES for _, names in imports), imports
        else:
            assert not imports, (path.name, imports)


def test_the_import_check_sees_relative_imports(tmp_path):
    """The control: the checker finds ``from ..evaluate import x`` as written in train/ modules."""
    module = tmp_path / "m.py"
    module.write_text("from ..evaluate import class_balanced_subset\nfrom ..data import load_dataset\n")
    assert _evaluate_imports(module) == [("contrastkit.evaluate", {"class_balanced_subset"})]


# issue 26: imports form a tree, and the package's top level holds its face only

def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the contrastkit modules it imports, at module level or inside a function alike. ``from . import x``
    of a submodule counts as importing that submodule; ``from .pkg import name`` as importing ``pkg``."""
    modules = {_module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle_inside_a_function(tmp_path):
    """The control: a module that imports another which imports it back, inside a function, is a cycle."""
    pkg = tmp_path / "contrastkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    assert import_cycles(import_graph(pkg)) == [["contrastkit.a", "contrastkit.sub.b"]]


def test_the_top_level_holds_at_most_four_modules():
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert len(modules) <= 4 and {"__init__.py", "__main__.py", "config.py"} <= set(modules), modules


def test_distill_cli_hides_the_options_the_method_ignores():
    """The ``distill`` parser keeps its own list (so ``--help`` imports no torch); it is the method's."""
    from contrastkit.cli.pretrain import NOT_FOR_DISTILL
    from contrastkit.methods import get_method

    assert set(NOT_FOR_DISTILL) == set(get_method("distill").ignored) | {"method"}


def test_the_loop_and_the_config_name_no_method():
    """Methods are a registry: the training loop and the options know no method by name (issue 26). The options
    compare with no method's name (``--method``'s default is one); the training package names none at all."""
    from contrastkit.methods import METHODS

    names = tuple(METHODS)  # every registered method, the queue and multi-label ones (issue 30) too
    assert {"simclr", "supcon", "distill", "ce", "simclr-queue", "supcon-multilabel"} <= set(names)
    for path in [SRC / "config.py", *sorted((SRC / "train").glob("*.py"))]:
        compare_only = path.name == "config.py"
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in (*names, "ce"):
                        raise AssertionError(f"{path.name}:{node.lineno} compares with the method {side.value!r}")
            if not compare_only and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings and node.value in (*names, "ce"):
                raise AssertionError(f"{path.name}:{node.lineno} names the method {node.value!r}")
