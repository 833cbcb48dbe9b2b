"""Encoder f(.): maps an image batch to the representation h (SimCLR Sec. 2.1).

A registry in the style of timm: :func:`create_encoder` builds an encoder by
name, :func:`list_encoders` lists the known names. torchvision ResNets are
always available; timm backbones are available as ``timm:<name>`` when timm is
installed.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet

__all__ = ["Encoder", "create_encoder", "list_encoders", "ENCODERS"]


class Encoder(nn.Module):
    """Wraps a backbone so that ``forward`` returns pooled features h.

    Attributes:
        feature_dim: dimension of h.
        name: registry name the encoder was built from.

    Shape:
        input (N, 3, H, W), output (N, feature_dim).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (N, feature_dim)


def _torchvision_resnet(
    depth: int,
    *,
    cifar_stem: bool = False,
    width: float = 1.0,
    zero_init_residual: bool = True,
) -> Encoder:
    """ResNet-18/34/50 from torchvision with the classifier removed.

    Args:
        depth: 18, 34 or 50.
        cifar_stem: replace the 7x7/stride-2 conv and max-pool with a 3x3/stride-1
            conv and no pooling (SimCLR App. B.9 for CIFAR-10).
        width: multiplier of the base width 64 (0.25 gives 16-32-64-128 for ResNet-18).
        zero_init_residual: zero the last BN of each block (Goyal et al. 2017).
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    block, layers = {
        18: (resnet.BasicBlock, [2, 2, 2, 2]),
        34: (resnet.BasicBlock, [3, 4, 6, 3]),
        50: (resnet.Bottleneck, [3, 4, 6, 3]),
    }[depth]
    base = max(1, int(round(64 * width)))
    net = resnet.ResNet(block, layers, zero_init_residual=zero_init_residual)
    if width != 1.0:
        # Rebuild with a different base width: torchvision has no width argument for
        # the stem, so build the layers by hand with the same block classes.
        net.inplanes = base
        net.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(base)
        net.layer1 = net._make_layer(block, base, layers[0])
        net.layer2 = net._make_layer(block, base * 2, layers[1], stride=2)
        net.layer3 = net._make_layer(block, base * 4, layers[2], stride=2)
        net.layer4 = net._make_layer(block, base * 8, layers[3], stride=2)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in net.modules():
                if isinstance(m, resnet.Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, resnet.BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, base, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feature_dim = base * 8 * block.expansion
    net.fc = nn.Identity()  # (N, feature_dim): h is the pooled output
    return Encoder(net, feature_dim, f"resnet{depth}")


def _timm_encoder(name: str, **kwargs) -> Encoder:
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"encoder {name!r} needs timm, which is not installed: pip install 'contrastkit[timm]'"
        ) from exc
    model_name = name.split(":", 1)[1]
    if model_name not in timm.list_models():
        raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
    net = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    return Encoder(net, int(net.num_features), name)


ENCODERS: dict[str, Callable[..., Encoder]] = {
    "resnet18": lambda **kw: _torchvision_resnet(18, **kw),
    "resnet34": lambda **kw: _torchvision_resnet(34, **kw),
    "resnet50": lambda **kw: _torchvision_resnet(50, **kw),
}


def list_encoders() -> list[str]:
    """Names accepted by :func:`create_encoder` (timm models as ``timm:<name>``)."""
    names = sorted(ENCODERS)
    try:
        import timm  # noqa: F401

        names.append("timm:<any timm model name>")
    except ImportError:
        pass
    return names


def create_encoder(name: str, **kwargs) -> Encoder:
    """Build an encoder f by registry name.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` or ``timm:<model>``.
        **kwargs: ``cifar_stem`` and ``width`` for the ResNets; passed to
            ``timm.create_model`` for timm backbones.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"encoder name must be a str, got {type(name).__name__}")
    if name.startswith("timm:"):
        return _timm_encoder(name, **kwargs)
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(list_encoders())}")
    return ENCODERS[name](**kwargs)
