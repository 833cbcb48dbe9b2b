"""Count the import statements inside functions of a source tree (issue 26's measure of hidden dependencies).

    python scripts/function_imports.py src/contrastkit
    git worktree add --detach /tmp/before 7b9fa47 && python scripts/function_imports.py /tmp/before/src/contrastkit

Prints the total and how many are relative imports (contrastkit's own modules; the others are optional extras or
heavy packages kept out of ``--help``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def count(src: Path) -> tuple[int, int]:
    """(function-level import statements, of which relative) in every ``*.py`` under ``src``."""
    total = relative = 0
    for path in sorted(src.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    total += 1
                    relative += isinstance(node, ast.ImportFrom) and node.level > 0
    return total, relative


if __name__ == "__main__":
    total, relative = count(Path(sys.argv[1] if len(sys.argv) > 1 else "src/contrastkit"))
    print(f"function-level import statements: {total} (relative, contrastkit's own: {relative})")
