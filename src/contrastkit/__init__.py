"""contrastkit: contrastive representation learning (SimCLR, SupCon) with PyTorch."""
from .encoders import create_encoder, list_encoders
from .heads import ProjectionHead
from .model import ContrastiveModel, build_model
from . import distributed, losses
from .losses import NTXentLoss, SupConLoss
from .export import load_encoder

__version__ = "0.1.0"

__all__ = ["NTXentLoss", "SupConLoss", "losses", "distributed", "create_encoder", "list_encoders", "ProjectionHead", "ContrastiveModel", "build_model", "load_encoder", "__version__"]
