"""contrastkit: contrastive representation learning (SimCLR, SupCon) with PyTorch.

The public names are imported on first use (PEP 562 module ``__getattr__``), so
``import contrastkit`` and the command line's ``--help``, ``--version`` and
argument errors do not import torch; ``from contrastkit import build_model``
works as usual.
"""

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

#: public name -> (the module that defines it, the attribute; None: the module itself).
_LAZY = {
    "NTXentLoss": (".losses", "NTXentLoss"),
    "SupConLoss": (".losses", "SupConLoss"),
    "create_encoder": (".models", "create_encoder"),
    "list_encoders": (".models", "list_encoders"),
    "ProjectionHead": (".models", "ProjectionHead"),
    "ContrastiveModel": (".models", "ContrastiveModel"),
    "build_model": (".models", "build_model"),
    "load_checkpoint_model": (".models", "load_checkpoint_model"),
    "PretrainConfig": (".config", "PretrainConfig"),
    "pretrain": (".train", "pretrain"),
    "losses": (".losses", None),
    "distributed": (".runtime.distributed", None),
    "load_encoder": (".export", "load_encoder"),
}

__all__ = ["NTXentLoss", "SupConLoss", "losses", "distributed", "create_encoder", "list_encoders", "ProjectionHead",
           "ContrastiveModel", "build_model", "load_checkpoint_model", "PretrainConfig", "pretrain", "load_encoder",
           "__version__"]


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'contrastkit' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = _importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__))
