"""The ``export`` subcommand.

    contrastkit export --checkpoint runs/x --format torchvision|timm|safetensors|torchscript|onnx|pt2|hub --out f
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ..export.formats import FORMATS
from .common import print_json

__all__ = ["register"]


def _run_export(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from ..export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, include_head=args.include_head,
                               overwrite=args.overwrite)
    print(f"wrote {result['out']} ({args.format}, {result['bytes'] / 1e6:.1f} MB); verified against contrastkit's "
          f"h at {len(result['verified_shapes'])} input shapes: largest difference {result['max_abs_diff']:.3g} "
          f"(relative {result['max_rel_diff']:.3g}, tolerance {result['tolerance']:g})")
    print_json(result)


def register(sub) -> None:
    """Add ``export`` to the command line's subcommands."""
    p = sub.add_parser("export", help="write a checkpoint's encoder as a torchvision or timm state_dict, "
                                      "safetensors, TorchScript, ONNX, torch.export (pt2) or a Hub folder, verified "
                                      "against contrastkit's h")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by pretrain, or its run folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="torchvision / timm: a state_dict (plus a "
                   ".json sidecar) for torchvision.models.resnetN() / timm.create_model(name, num_classes=0); "
                   "safetensors: the same tensors with metadata; torchscript, onnx, pt2 (torch.export): the encoder "
                   "alone; hub: a folder with model.safetensors, config.json and a model card (README.md)")
    p.add_argument("--out", required=True, help="the file to write, named for the format (.safetensors, "
                                                ".torchscript, .onnx, .pt2), or the folder of --format hub")
    p.add_argument("--include-head", action="store_true", help="also export the projection head g")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out (a file contrastkit "
                                                            "did not write, or a run's checkpoint, never is)")
    p.set_defaults(handler=_run_export)
