"""Package attributes imported on first use (PEP 562 module ``__getattr__``).

``import contrastkit`` and the command line's ``--help`` and argument errors must not import torch, so a package
whose public names live in torch-using modules lists them in a table and imports each one when it is first read.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, str | tuple[str, str | None]],
                 namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``table`` maps a public name to the module defining it (relative
    to ``package``), or to ``(module, attribute)`` (attribute None: the module itself). The value is stored in
    ``namespace`` (the package's ``globals()``), so later look-ups do not reach this function."""
    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        entry = table[name]
        module_name, attribute = (entry, name) if isinstance(entry, str) else entry
        module = importlib.import_module(module_name, package)
        value = module if attribute is None else getattr(module, attribute)
        namespace[name] = value
        return value
    return __getattr__
