"""Building a model from options: the one place that turns a run's architecture options into modules.

:func:`build_model` is used for training (every method), for evaluation and for loading checkpoints
(:func:`~contrastkit.models.checkpoint.load_checkpoint_model`), so a checkpoint is always rebuilt with the same
stem rule and head as it was trained with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from .contrastive import ContrastiveModel
from .encoders import create_encoder
from .finetuned import FineTunedNetwork, head_prefix_of
from .heads import ProjectionHead

__all__ = ["Architecture", "build_model", "uses_cifar_stem"]


@dataclass(frozen=True)
class Architecture:
    """The options that decide a model's modules (the ``model`` section of a run's options).

    Attributes:
        encoder: ``resnet18``, ``resnet34``, ``resnet50`` or ``timm:<name>``.
        cifar_stem: ``on``, ``off`` or ``auto`` (on for inputs of at most 64 px; SimCLR App. B.9).
        width: ResNet width multiplier.
        head: projection head kind, ``mlp``, ``linear`` or ``none``.
        head_layers: Linear layers K of the MLP head (2: SimCLR; 3: SimCLRv2).
        proj_dim: dimension of z.
        proj_hidden_dim: hidden width of the MLP head (0: the encoder's feature dimension).
    """

    encoder: str = "resnet18"
    cifar_stem: str = "auto"
    width: float = 1.0
    head: str = "mlp"
    head_layers: int = 2
    proj_dim: int = 128
    proj_hidden_dim: int = 0

    @classmethod
    def from_options(cls, options: Any) -> "Architecture":
        """The architecture of a run's options: a PretrainConfig, a checkpoint's config dict, or an Architecture.
        Options a dict lacks (a checkpoint of an older version) take their defaults."""
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(options, dict):
            values = {n: options[n] for n in names if n in options}
        else:
            values = {n: getattr(options, n) for n in names if hasattr(options, n)}
        return cls(**values)

    def stem_for(self, image_size: int) -> bool:
        """Whether the encoder takes the CIFAR stem for inputs of side ``image_size``."""
        return uses_cifar_stem(self.cifar_stem, image_size)


def uses_cifar_stem(choice: str, image_size: int) -> bool:
    """The stem rule: ``on``, ``off``, or ``auto`` = on for inputs of at most 64 px (SimCLR App. B.9)."""
    return choice == "on" or (choice == "auto" and image_size <= 64)


def _architecture(spec: Any, overrides: dict[str, Any]) -> Architecture:
    if isinstance(spec, str):  # build_model("resnet18", cifar_stem=True, width=0.25)
        stem = overrides.pop("cifar_stem", "auto")
        stem = {True: "on", False: "off"}.get(stem, stem)
        hidden = overrides.pop("proj_hidden_dim", 0) or 0
        return Architecture(encoder=spec, cifar_stem=stem, proj_hidden_dim=hidden, **overrides)
    if overrides:
        raise TypeError(f"build_model takes keyword options with an encoder name only, got {sorted(overrides)} "
                        f"with a {type(spec).__name__}")
    return spec if isinstance(spec, Architecture) else Architecture.from_options(spec)


def build_model(spec: Any = "resnet18", num_classes: int | None = None, image_size: int = 32,
                head_layer: int | None = None, **overrides: Any) -> nn.Module:
    """A freshly initialised model of an architecture.

    Args:
        spec: the architecture: an :class:`Architecture`, a run's options (PretrainConfig or checkpoint config
            dict), or an encoder name with the architecture's fields as keywords
            (``build_model("resnet18", cifar_stem=True, width=0.25)``).
        num_classes: with ``head_layer`` None, a linear classifier on h replaces the projection head (the
            cross-entropy baseline); with ``head_layer``, the classifier's classes.
        image_size: the input side, which decides the stem under ``cifar_stem="auto"``.
        head_layer: build a :class:`FineTunedNetwork` instead: f, the first ``head_layer`` blocks of the head
            (0: none, fine-tuning from h), a linear classifier (SimCLRv2 Sec. 2.2).

    Returns:
        A :class:`ContrastiveModel` (``forward(x) -> (h, z)``) or a :class:`FineTunedNetwork` (logits).

    Raises:
        ValueError: an unknown encoder, bad sizes, or a head layer the head does not have.
    """
    arch = _architecture(spec, dict(overrides))
    kwargs = {} if arch.encoder.startswith("timm:") else {"cifar_stem": arch.stem_for(image_size),
                                                           "width": arch.width}
    f = create_encoder(arch.encoder, **kwargs)
    if head_layer is not None:
        if num_classes is None:
            raise ValueError("a fine-tuned network (head_layer given) needs num_classes")
        g = ProjectionHead(f.feature_dim, arch.proj_hidden_dim or None, arch.proj_dim, kind=arch.head,
                           layers=arch.head_layers)
        prefix = head_prefix_of(ContrastiveModel(f, g), head_layer, f.feature_dim)
        return FineTunedNetwork(f, prefix, nn.Linear(prefix.out_dim, num_classes))
    if num_classes is not None:
        return ContrastiveModel(f, nn.Linear(f.feature_dim, num_classes))
    return ContrastiveModel(f, ProjectionHead(f.feature_dim, arch.proj_hidden_dim or None, arch.proj_dim,
                                              kind=arch.head, layers=arch.head_layers))
