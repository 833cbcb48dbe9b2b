"""contrastkit: contrastive representation learning (SimCLR, SupCon) with PyTorch.

The public names are imported on first use (PEP 562 module ``__getattr__``), so
``import contrastkit`` and the command line's ``--help``, ``--version`` and
argument errors do not import torch; ``from contrastkit import build_model``
works as usual.
"""

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it ("" for a submodule of its own).
_LAZY = {
    "NTXentLoss": ".losses",
    "SupConLoss": ".losses",
    "create_encoder": ".encoders",
    "list_encoders": ".encoders",
    "ProjectionHead": ".heads",
    "ContrastiveModel": ".model",
    "build_model": ".model",
    "losses": "",
    "distributed": "",
    "load_encoder": ".export",
}

__all__ = ["NTXentLoss", "SupConLoss", "losses", "distributed", "create_encoder", "list_encoders", "ProjectionHead",
           "ContrastiveModel", "build_model", "load_encoder", "__version__"]


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'contrastkit' has no attribute {name!r}")
    module = _importlib.import_module(_LAZY[name] or "." + name, __name__)
    value = module if not _LAZY[name] else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__))
