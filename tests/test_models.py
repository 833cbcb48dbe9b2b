"""Encoder f, projection head g and the (h, z) model wrapper."""
import pytest
import torch
from torch import nn

from contrastkit import ProjectionHead, build_model, create_encoder, list_encoders


@pytest.mark.parametrize("name,width,dim", [("resnet18", 0.25, 128), ("resnet34", 0.125, 64), ("resnet50", 0.125, 256),
                                            ("resnet18", 1.0, 512)])
def test_resnet_feature_dims(name, width, dim):
    f = create_encoder(name, cifar_stem=True, width=width)
    assert f.feature_dim == dim
    h = f(torch.randn(2, 3, 16, 16))
    assert h.shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    std = create_encoder("resnet18", width=0.125)
    cif = create_encoder("resnet18", width=0.125, cifar_stem=True)
    assert std.backbone.conv1.kernel_size == (7, 7) and isinstance(std.backbone.maxpool, nn.MaxPool2d)
    assert cif.backbone.conv1.kernel_size == (3, 3) and cif.backbone.conv1.stride == (1, 1)
    assert isinstance(cif.backbone.maxpool, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    feats = {}
    cif.backbone.layer4.register_forward_hook(lambda m, i, o: feats.update(cifar=o.shape))
    std.backbone.layer4.register_forward_hook(lambda m, i, o: feats.update(std=o.shape))
    cif(x), std(x)
    assert feats["cifar"][-1] == 4 and feats["std"][-1] == 1  # 32 / 8 vs 32 / 32


def test_width_multiplier_changes_channels():
    f = create_encoder("resnet18", width=0.25, cifar_stem=True)
    assert f.backbone.conv1.out_channels == 16
    assert [f.backbone.layer1[0].conv1.out_channels, f.backbone.layer4[0].conv1.out_channels] == [16, 128]


def test_unknown_encoder_lists_known_names():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        create_encoder("resnet19")
    with pytest.raises(TypeError):
        create_encoder(18)
    with pytest.raises(ValueError, match="width"):
        create_encoder("resnet18", width=0)
    assert {"resnet18", "resnet34", "resnet50"} <= set(list_encoders())


def test_timm_backbone_when_installed():
    pytest.importorskip("timm")
    f = create_encoder("timm:resnet10t")
    assert f(torch.randn(2, 3, 32, 32)).shape == (2, f.feature_dim)
    with pytest.raises(ValueError, match="unknown timm model"):
        create_encoder("timm:no_such_model_xyz")


def test_projection_heads():
    mlp = ProjectionHead(64, out_dim=32)
    layers = list(mlp.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layers[0].in_features == 64 and layers[0].out_features == 64 and layers[-1].out_features == 32
    assert mlp(torch.randn(4, 64)).shape == (4, 32)
    lin = ProjectionHead(64, kind="linear")
    assert isinstance(lin.net, nn.Linear) and lin(torch.randn(4, 64)).shape == (4, 128)
    none = ProjectionHead(64, kind="none")
    x = torch.randn(4, 64)
    assert torch.equal(none(x), x) and none.out_dim == 64
    with pytest.raises(ValueError, match="head kind"):
        ProjectionHead(64, kind="deep")


def test_model_returns_h_and_z_and_every_parameter_gets_a_gradient():
    from contrastkit.losses import NTXentLoss

    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.125, proj_dim=16)
    x1, x2 = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    h1, z1 = model(x1)
    h2, z2 = model(x2)
    assert h1.shape == (6, 64) and z1.shape == (6, 16)
    NTXentLoss(temperature=0.5)(z1, z2).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_ce_model_has_linear_classifier():
    model = build_model("resnet18", cifar_stem=True, width=0.125, num_classes=7)
    assert isinstance(model.head, nn.Linear) and model(torch.randn(2, 3, 8, 8))[1].shape == (2, 7)
