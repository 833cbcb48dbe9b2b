"""The Python lines that build the torchvision module matching a contrastkit ResNet that is not a stock one.

A CIFAR stem or a width other than 1 has no ``torchvision.models`` constructor, so ``--format torchvision``
refuses it; the refusal prints these lines, which build the matching ``torchvision.models.ResNet`` (the
same classes and parameter names) for the safetensors export to load into with ``strict=True``.
"""
from __future__ import annotations

__all__ = ["torchvision_build_lines"]

_LAYOUT = {"resnet18": ("BasicBlock", [2, 2, 2, 2], 1), "resnet34": ("BasicBlock", [3, 4, 6, 3], 1),
           "resnet50": ("Bottleneck", [3, 4, 6, 3], 4)}


def torchvision_build_lines(architecture: str, width: float, stem: str) -> str:
    """Python source that builds ``model``: torchvision's ResNet with contrastkit's stem and width.

    Args:
        architecture: ``resnet18``, ``resnet34`` or ``resnet50``.
        width: the width multiplier (base width ``max(1, round(64 * width))``, as :mod:`contrastkit.encoders`).
        stem: ``imagenet`` (7x7/2 conv and max-pool) or ``cifar`` (3x3/1 conv, no max-pool).

    Returns:
        Lines ending in ``model.fc = nn.Identity()``; ``model`` then returns h.
    """
    block, layers, _ = _LAYOUT[architecture]
    base = max(1, int(round(64 * width)))
    cifar = stem == "cifar"
    conv1 = (f"nn.Conv2d(3, {base}, kernel_size=3, stride=1, padding=1, bias=False)" if cifar
             else f"nn.Conv2d(3, {base}, kernel_size=7, stride=2, padding=3, bias=False)")
    lines = ["import torch.nn as nn", "import torchvision"]
    if width == 1.0:
        lines.append(f"model = torchvision.models.{architecture}()")
        if cifar:
            lines.append(f"model.conv1 = {conv1}")
    else:
        lines += [f"from torchvision.models.resnet import ResNet, {block}",
                  f"model = ResNet({block}, {layers})",
                  f"model.inplanes = {base}",
                  f"model.conv1 = {conv1}",
                  f"model.bn1 = nn.BatchNorm2d({base})"]
        for i, n in enumerate(layers):
            stride = "" if i == 0 else ", stride=2"
            lines.append(f"model.layer{i + 1} = model._make_layer({block}, {base * 2 ** i}, {n}{stride})")
    if cifar:
        lines.append("model.maxpool = nn.Identity()")
    lines.append("model.fc = nn.Identity()")
    return "\n".join(lines)
