"""Where and how a process runs: the device rule, collectives that are no-ops on one process, CPU malloc tuning,
and the files a command writes (:mod:`.ownership`, :mod:`.files`, :mod:`.text`). Every command (pretrain, eval,
embed, index) takes these from here.

The public names are imported on first use, so that the torch-free modules (:mod:`.text`, :mod:`.ownership`) are
importable where torch must not be (``--help``, argument errors); :mod:`.lazy` does the same for the other packages.
"""
from __future__ import annotations

from .lazy import lazy_getattr

__all__ = ["resolve_device", "tune_malloc", "tune_malloc_for", "malloc_state"]

_LAZY = {"resolve_device": ".device", "tune_malloc": ".allocator", "tune_malloc_for": ".allocator",
         "malloc_state": ".allocator"}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
