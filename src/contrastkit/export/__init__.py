"""Taking the encoder out: ``contrastkit export`` and :func:`load_encoder`.

:func:`export_checkpoint` writes a checkpoint's encoder f (and, on request, g) as a torchvision or timm
state_dict, safetensors, TorchScript, ONNX, a ``torch.export`` program (``pt2``) or a Hugging Face Hub-style
folder (``hub``), verified against contrastkit's own h before it is published. :func:`load_encoder` reads any of
them back, or a checkpoint, as ``(encoder, transform)``, choosing the reader by the file's name.

The public names are imported on first use, so importing this package (as the command line does to list the
formats) does not import torch.
"""
from __future__ import annotations

from ..runtime.lazy import lazy_getattr
from .formats import FORMATS, ExportError

__all__ = ["FORMATS", "ExportError", "export_checkpoint", "load_encoder", "load_encoder_and_metadata",
           "evaluation_transform"]

_LAZY = {"export_checkpoint": ".exporter", "load_encoder": ".loading", "load_encoder_and_metadata": ".loading",
         "evaluation_transform": ".transform"}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
