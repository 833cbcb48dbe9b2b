"""Contrastive losses: NT-Xent and SupCon on one exact tiled kernel, and SimCLR's alternatives.

* :class:`NTXentLoss` (SimCLR) and :class:`SupConLoss` (L_out, L_in) share the
  memory-lean kernel of ``_tiled.py`` and gather across ranks when distributed.
* :class:`NTLogisticLoss`, :class:`MarginTripletLoss` and :class:`NPairLoss` are
  the alternatives SimCLR compares against (Table 2, Table 4).
* :class:`DistillationLoss`: SimCLRv2's distillation of a fine-tuned teacher (Sec. 2.3).
* :class:`MomentumContrastLoss`: queries against the keys of a momentum encoder, the batch's and a queue's
  (:class:`MemoryQueue`: MoCo's queue of past keys, the same on every rank), with SupCon's positives.
"""
from .distill import DistillationLoss
from .moco import MomentumContrastLoss
from .npair import NPairLoss
from .ntlogistic import NTLogisticLoss
from .ntxent import NTXentLoss
from .queue import MemoryQueue
from .supcon import SupConLoss
from .triplet import MarginTripletLoss

__all__ = ["NTXentLoss", "SupConLoss", "NTLogisticLoss", "MarginTripletLoss", "NPairLoss", "DistillationLoss",
           "MemoryQueue", "MomentumContrastLoss"]
