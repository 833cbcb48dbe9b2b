"""Where and how a process runs: the device rule, collectives that are no-ops on one process, and CPU malloc
tuning. Every command (pretrain, eval, embed, index) takes these from here."""
from .allocator import malloc_state, tune_malloc, tune_malloc_for
from .device import resolve_device

__all__ = ["resolve_device", "tune_malloc", "tune_malloc_for", "malloc_state"]
