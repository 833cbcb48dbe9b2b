"""The metadata schema and its flat string encoding; g described and rebuilt for every head kind."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit import ProjectionHead
from contrastkit.export import ExportError
from contrastkit.export.metadata import _KEYS, check_metadata, decode_metadata, encode_metadata
from contrastkit.export.rebuild import build_head
from contrastkit.export.source import build_metadata, describe_head, load_source


def test_metadata_has_the_schema_keys_and_round_trips_through_string_pairs(tiny_ckpt):
    meta = build_metadata(load_source(tiny_ckpt), "safetensors", include_head=False)
    assert tuple(meta) == _KEYS
    pairs = encode_metadata(meta)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs.items())
    assert pairs["architecture"] == "resnet18" and pairs["stem"] == "cifar" and "head" not in pairs  # None left out
    assert decode_metadata(pairs, "x") == meta
    check_metadata(meta, "x")


def test_metadata_that_is_not_contrastkit_s_is_refused():
    with pytest.raises(ExportError, match="has no contrastkit metadata"):
        decode_metadata({"format": "pt"}, "model.safetensors")
    with pytest.raises(ExportError, match="malformed"):
        decode_metadata({"contrastkit_export": "1", "width": "[oops"}, "m")
    with pytest.raises(ExportError, match="input_size must be"):
        check_metadata({"architecture": "resnet18", "input_size": [3, 0, 32], "mean": [0] * 3, "std": [1] * 3}, "m")


@pytest.mark.parametrize("head", [ProjectionHead(32, 48, 16, kind="mlp"), ProjectionHead(32, out_dim=16, kind="linear"),
                                  ProjectionHead(32, kind="none"), nn.Linear(32, 10)])
def test_every_head_kind_is_described_and_rebuilt(head):
    torch.manual_seed(0)
    rebuilt = build_head(describe_head(head))
    rebuilt.load_state_dict(head.state_dict(), strict=True)
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), head.eval()(x))
