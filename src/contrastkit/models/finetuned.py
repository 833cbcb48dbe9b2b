"""The fine-tuned network (encoder f, a prefix of the head g, a linear classifier) and its checkpoint.

SimCLRv2 (Chen et al. 2020, arXiv 2006.10029, Sec. 2.2) fine-tunes from a layer of the projection head rather
than from h: the network is f, then the first L Linear-BN-ReLU blocks of g, then a new linear layer
(L = 0 is SimCLR's fine-tuning from h). A distilled student (Sec. 2.3) is the same network with L = 0.

Checkpoint format (``FORMAT``, made by :func:`finetuned_state`, written by
:func:`~contrastkit.models.checkpoint.save_finetuned`, read by :func:`~contrastkit.models.checkpoint.load_checkpoint_model`), a dict
that loads with ``torch.load(weights_only=True)``:

* ``format``: ``"contrastkit.finetuned"``; ``version``: 1.
* ``model``: the state dict of :class:`FineTunedNetwork`: ``encoder.*`` (the names of a pretraining
  checkpoint's encoder), ``head.net.*`` (the names of the pretrained head's first L blocks) and
  ``classifier.weight`` / ``classifier.bias``.
* ``config``: the :class:`~contrastkit.config.PretrainConfig` dict of the architecture (encoder, width, stem,
  head, head_layers, projection sizes), as a pretraining checkpoint holds it.
* ``meta``: as a pretraining checkpoint's (``image_size``, ``mean``, ``std``, ``classes``, ``data``, ...).
* ``classifier``: ``num_classes`` C, ``classes`` (the C class names), ``from_head_layer`` L and
  ``feature_dim`` (the classifier's input width).
* ``result``: how it was made and what it scored: ``kind`` (``finetune`` or ``distill``), ``top1``, ``top5``
  (fractions on ``data``'s test split), ``data``, and the recipe, subset and source checkpoint(s).

Because it has ``model`` and ``config`` and its encoder weights carry the pretraining names, the tools that
read a pretraining checkpoint's encoder read this one's too.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .heads import HeadPrefix, ProjectionHead

__all__ = ["FineTunedNetwork", "FORMAT", "head_prefix_of", "is_finetuned", "finetuned_state"]

FORMAT = "contrastkit.finetuned"
VERSION = 1


class FineTunedNetwork(nn.Module):
    """f, then a head prefix, then a linear classifier; ``forward(x)`` returns logits.

    Attributes:
        encoder: the encoder f.
        head: a :class:`~contrastkit.models.heads.HeadPrefix` (L = 0: the identity).
        classifier: ``nn.Linear(feature_dim, C)``.

    Shape:
        x (N, 3, H, W) -> logits (N, C); :meth:`features` -> (N, feature_dim).
    """

    def __init__(self, encoder: nn.Module, head: HeadPrefix, classifier: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.classifier = classifier

    @property
    def from_head_layer(self) -> int:
        return self.head.blocks

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: the head prefix applied to h."""
        return self.head(self.encoder(x))  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (N, C)


def head_prefix_of(model: nn.Module, head_layer: int, feature_dim: int) -> HeadPrefix:
    """The first ``head_layer`` blocks of ``model.head`` (an empty prefix of width ``feature_dim`` for 0).

    Raises:
        ValueError: ``head_layer`` > 0 and the model has no MLP projection head, or the layer is out of range.
    """
    head = getattr(model, "head", None)
    if isinstance(head, ProjectionHead):
        if head_layer == 0:
            return HeadPrefix([], feature_dim)
        return head.prefix(head_layer)
    if head_layer != 0:
        kind = type(head).__name__ if head is not None else "no head"
        raise ValueError(f"--from-head-layer {head_layer} needs a model with an MLP projection head; this one has "
                         f"{kind}; use --from-head-layer 0 (h)")
    return HeadPrefix([], feature_dim)


def is_finetuned(state: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is a fine-tuned network (rather than a pretraining run)."""
    return isinstance(state, dict) and state.get("format") == FORMAT


def finetuned_state(network: FineTunedNetwork, config: dict[str, Any], meta: dict[str, Any], classes: list[str],
                    result: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of a fine-tuned network (the format above).

    Args:
        network: the fine-tuned network.
        config: the run options of its architecture (a PretrainConfig dict).
        meta: the pretraining checkpoint's meta (image size, normalisation, data, ...).
        classes: the C class names, in the classifier's order.
        result: how the network was made and what it scored (``kind``, ``top1``, ``top5``, ``data``, ...).

    Raises:
        ValueError: ``classes`` does not have one name per output of the classifier.
    """
    if len(classes) != network.num_classes:
        raise ValueError(f"classes has {len(classes)} names but the classifier has {network.num_classes} outputs")
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "config": dict(config),
        "meta": {**meta, "classes": list(classes)},
        "classifier": {"num_classes": network.num_classes, "classes": list(classes),
                       "from_head_layer": network.from_head_layer, "feature_dim": network.classifier.in_features},
        "result": dict(result),
    }
