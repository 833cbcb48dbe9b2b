"""Limits of the code's shape (issue 17): no function in src/ over 100 lines, and the training package takes
nothing from evaluation but the kNN monitor's feature extraction and kNN (as torchvision's loop calls evaluate)."""
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
