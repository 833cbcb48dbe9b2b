"""The ``pt2`` format: the encoder as a ``torch.export`` ExportedProgram (``torch.export.save``).

The program takes the normalised input (N, 3, H, W) with dynamic batch, height and width and returns h, or
(h, z) with ``--include-head``; the metadata travels inside the archive as an extra file. torch.export is
PyTorch's successor to TorchScript (``torch.jit`` warns that it is deprecated): the program runs in Python with
``torch.export.load``, and AOTInductor compiles it for deployment. A ``.pt2`` archive is code-like (a graph
with its own deserialiser), so :func:`contrastkit.load_encoder` loads one only from a file named ``*.pt2``.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .formats import ExportError
from .graphs import METADATA_FILE, example_input, export_module
from .shapes import dynamic_shapes
from .source import ExportSource

__all__ = ["write_pt2", "reload_pt2", "load_pt2", "ExportedEncoder"]

Features = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


class ExportedEncoder(nn.Module):
    """An ExportedProgram's module as an encoder: ``forward(x) -> h`` and, with g, ``forward_z(x) -> z``.

    The program was captured in eval mode and has no train mode of its own, so :meth:`train` only sets the flag
    (torch refuses ``train()`` / ``eval()`` on an exported module).

    Shape:
        x (N, 3, H, W) normalised -> h (N, feature_dim); z (N, D).
    """

    def __init__(self, program: nn.Module, has_head: bool) -> None:
        super().__init__()
        self.program = program
        self.has_head = has_head

    def train(self, mode: bool = True) -> "ExportedEncoder":
        self.training = mode
        return self

    def _outputs(self, x: torch.Tensor):
        if x.ndim != 4:
            raise ValueError(f"expected a batch (N, 3, H, W), got shape {tuple(x.shape)}")
        return self.program(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._outputs(x)
        return out[0] if self.has_head else out  # (N, F)

    def forward_z(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_head:
            raise ValueError("this export has no projection head g (export with --include-head)")
        return self._outputs(x)[1]  # (N, D)


def write_pt2(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """``torch.export.export`` of the encoder (and g) with dynamic batch, height and width, saved with the
    metadata as the archive's extra file ``contrastkit.json``."""
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(export_module(source, meta), (example_input(meta),),
                                          dynamic_shapes=dynamic_shapes(meta["dynamic_axes"]))
    except Exception as exc:  # torch.export raises many error types
        raise ExportError(f"torch.export could not export {meta['architecture']}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}\n{log.getvalue()[-2000:]}") from exc
    torch.export.save(program, str(paths["main"]), extra_files={METADATA_FILE: json.dumps(meta)})


def load_pt2(path: Path) -> tuple[ExportedEncoder, dict[str, Any]]:
    """(encoder, metadata) of a ``pt2`` export.

    Raises:
        ExportError: not an archive torch.export loads, or one without contrastkit metadata.
    """
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # a damaged or foreign archive: torch raises several types
        raise ExportError(f"{path} is not an archive torch.export.load reads ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not extra[METADATA_FILE]:
        raise ExportError(f"{path} is a torch.export archive without contrastkit metadata ({METADATA_FILE}); it was "
                          f"not written by contrastkit export")
    meta = json.loads(extra[METADATA_FILE])
    return ExportedEncoder(program.module(), bool(meta.get("include_head"))), meta


def reload_pt2(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    encoder, stored = load_pt2(paths["main"])
    if stored != meta:
        raise ExportError(f"the metadata of {paths['main']} does not read back as written")

    def run(x: torch.Tensor):
        with torch.no_grad():
            return encoder(x), (encoder.forward_z(x) if meta["include_head"] else None)
    return run
