"""Training: the pretraining loop (``trainer``), how a run is built (``run``, ``data``), its checkpoints and resume
(``state``), the run folder (``run_folder``), optimisers and schedule (``optim``), the non-finite guard, precision,
memory format and gradient caching."""
from ..config import PretrainConfig
from ..models import CheckpointError, load_checkpoint, save_checkpoint
from .gradcache import cached_backward
from .nonfinite import NonFiniteError
from .optim import LARS, WarmupCosine, build_optimizer, param_groups, scaled_lr, warmup_cosine
from .trainer import pretrain, unwrap

__all__ = ["pretrain", "PretrainConfig", "NonFiniteError", "unwrap", "LARS", "WarmupCosine", "build_optimizer",
           "param_groups", "scaled_lr", "warmup_cosine", "cached_backward", "CheckpointError", "load_checkpoint",
           "save_checkpoint"]
