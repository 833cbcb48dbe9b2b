"""Training: the pretraining loop, optimisers and schedule, checkpoints."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .optim import LARS, build_optimizer, param_groups, scaled_lr, warmup_cosine
from .trainer import NonFiniteError, pretrain, unwrap

__all__ = ["pretrain", "NonFiniteError", "unwrap", "LARS", "build_optimizer", "param_groups", "scaled_lr",
           "warmup_cosine", "CheckpointError", "load_checkpoint", "save_checkpoint"]
