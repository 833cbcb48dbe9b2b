"""What a model is and how it is built and loaded: encoder f (``encoders``), projection head g (``heads``), the
contrastive model ``(h, z)`` (``contrastive``) with a momentum copy for a key queue (``momentum``), the fine-tuned
network (``finetuned``), :func:`build_model` (the one place options become modules) and checkpoint files with
:func:`load_checkpoint_model` (the one loader)."""
from .build import Architecture, build_model, uses_cifar_stem
from .checkpoint import (CHECKPOINT_SUFFIXES, CheckpointError, CheckpointMeta, is_torchscript_archive, load_checkpoint,
                         load_checkpoint_model, read_torch_file, resolve_checkpoint, save_checkpoint, save_finetuned)
from .contrastive import ContrastiveModel
from .encoders import ENCODERS, Encoder, create_encoder, list_encoders
from .finetuned import FORMAT as FINETUNED_FORMAT, FineTunedNetwork, head_prefix_of, is_finetuned
from .heads import HEAD_KINDS, HeadPrefix, ProjectionHead, check_head_layers
from .momentum import MOMENTUM_RAMPS, MomentumEncoder, MomentumModel

__all__ = ["Architecture", "build_model", "uses_cifar_stem", "CheckpointError", "CheckpointMeta", "load_checkpoint",
           "load_checkpoint_model", "resolve_checkpoint", "save_checkpoint", "save_finetuned", "read_torch_file",
           "is_torchscript_archive", "CHECKPOINT_SUFFIXES", "ContrastiveModel",
           "ENCODERS", "Encoder", "create_encoder", "list_encoders", "FINETUNED_FORMAT", "FineTunedNetwork",
           "head_prefix_of", "is_finetuned", "HEAD_KINDS", "HeadPrefix", "ProjectionHead", "check_head_layers",
           "MOMENTUM_RAMPS", "MomentumEncoder", "MomentumModel"]
