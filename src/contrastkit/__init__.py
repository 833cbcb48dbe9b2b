"""contrastkit: contrastive representation learning (SimCLR, SupCon) with PyTorch.

The public names are imported on first use (PEP 562 module ``__getattr__``), so
``import contrastkit`` and the command line's ``--help``, ``--version`` and
argument errors do not import torch; ``from contrastkit import build_model``
works as usual.
"""

from .runtime.lazy import lazy_getattr as _lazy_getattr

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


__getattr__ = _lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__))
