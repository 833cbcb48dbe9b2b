"""``export_checkpoint``: write a checkpoint's encoder in another library's format, verify it, then publish it.

Every file is written under a temporary name beside its final name (in the folder of ``--out``, or in the hub
folder), reloaded through the target library and compared with contrastkit's own h (and z) on a fixed batch, and
for the graphs with dynamic axes also at three other batch sizes and image sizes; only when the largest difference
is within tolerance are the files renamed into place, the main file last. A failure at any step leaves nothing new
at ``--out``. An existing file there is replaced only when an earlier export wrote it (the folder's marker lists
it, :mod:`contrastkit.runtime.ownership`) and ``overwrite`` is given; a run's checkpoint never is. The file's name
says its format (``*.torchscript``, ...), since :func:`~contrastkit.export.load_encoder` reads by name.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..runtime.ownership import OutputFiles, foreign_entries
from .formats import (FORMATS, STATE_DICT_FORMATS, ExportError, check_out_name, head_path, packages_for, require,
                      sidecar_path)
from .graphs import reload_onnx, reload_torchscript, write_onnx, write_torchscript
from .hub import hub_paths, reload_hub, write_hub
from .program import reload_pt2, write_pt2
from .shapes import check_shapes, shaped_batch
from .source import ExportSource, build_metadata, load_source
from .state_dicts import reload_safetensors, reload_state_dict, write_safetensors, write_state_dict
from .torchvision_code import torchvision_build_lines

__all__ = ["export_checkpoint", "check_exportable", "verify_batch", "TOLERANCE"]

#: largest relative difference between the export's features and contrastkit's h that passes
TOLERANCE = {"torchvision": 1e-4, "timm": 1e-4, "safetensors": 1e-4, "torchscript": 1e-4, "onnx": 1e-4, "pt2": 1e-4,
             "hub": 1e-4}
#: images in the fixed verification batch
VERIFY_BATCH = 4

_WRITERS: dict[str, tuple[Callable, Callable]] = {
    "torchvision": (write_state_dict, reload_state_dict),
    "timm": (write_state_dict, reload_state_dict),
    "safetensors": (write_safetensors, reload_safetensors),
    "torchscript": (write_torchscript, reload_torchscript),
    "onnx": (write_onnx, reload_onnx),
    "pt2": (write_pt2, reload_pt2),
    "hub": (write_hub, reload_hub),
}


def check_exportable(source: ExportSource, fmt: str) -> None:
    """Refuse a format this encoder cannot be written to, naming the formats that work.

    Raises:
        ExportError: ``torchvision`` for a timm encoder or a ResNet with a CIFAR stem or width != 1 (with the
            Python lines that build the matching torchvision module); ``timm`` for a torchvision ResNet.
    """
    arch = source.architecture
    if fmt == "torchvision" and source.library == "timm":
        raise ExportError(f"--format torchvision needs a torchvision ResNet, but this encoder is {arch}; formats "
                          f"that work: timm, safetensors, torchscript, onnx, pt2, hub")
    if fmt == "torchvision" and not source.is_standard_torchvision:
        lines = torchvision_build_lines(arch, source.width, source.stem)
        raise ExportError(
            f"--format torchvision writes weights for torchvision.models.{arch}() (ImageNet stem, width 1), but "
            f"this encoder has the {source.stem} stem and width {source.width:g}; formats that work: safetensors "
            f"(the same tensor names), hub, torchscript, onnx, pt2. This builds the matching torchvision module, which loads "
            f"the safetensors export with strict=True:\n{lines}\n"
            f"import safetensors.torch\n"
            f"model.load_state_dict(safetensors.torch.load_file('encoder.safetensors'))")
    if fmt == "timm" and source.library != "timm":
        raise ExportError(f"--format timm needs a timm encoder (--encoder timm:<name>), but this encoder is "
                          f"{arch}; formats that work: "
                          f"{'torchvision, ' if source.is_standard_torchvision else ''}safetensors, hub, torchscript, onnx, pt2")


def _check_out(out: str | os.PathLike, fmt: str) -> Path:
    """``--out`` as a path named for ``fmt`` (``*.torchscript`` for TorchScript, ...; a folder for ``hub``).

    Raises:
        ExportError: a folder where a file is written (or the reverse), or a name that says another format.
    """
    path = Path(out).expanduser()
    if fmt == "hub" and path.exists() and not path.is_dir():
        raise ExportError(f"--out {path} is a file; --format hub writes a folder")
    if fmt != "hub" and path.is_dir():
        raise ExportError(f"--out {path} is a folder; expected the path of the file to write")
    if fmt == "hub" and (foreign := foreign_entries(path)):  # a Hub repository holds the export alone
        raise ExportError(f"--out {path} holds files that contrastkit export did not write ({', '.join(foreign[:4])}); "
                          f"nothing was replaced: choose another --out (a new or empty folder), or move them away")
    check_out_name(path, fmt)
    return path


def _final_paths(out: Path, fmt: str, include_head: bool) -> dict[str, Path]:
    """The path of every file the format writes: the export, and a state_dict's sidecar (and g)."""
    final = {"main": out}
    if fmt in STATE_DICT_FORMATS:
        final["sidecar"] = sidecar_path(out)
        if include_head:
            final["head"] = head_path(out)
    return final


def _file_mode() -> int:
    """0o666 less the process's umask: the mode of a file created by ``open(path, "w")``."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def verify_batch(meta: dict[str, Any]) -> torch.Tensor:
    """The fixed batch of normalised inputs every export is checked on. Shape: (4, 3, H, W)."""
    return torch.randn(VERIFY_BATCH, *meta["input_size"], generator=torch.Generator().manual_seed(0))


def verify_inputs(meta: dict[str, Any]) -> list[torch.Tensor]:
    """What an export is checked on: the fixed batch, its first image alone (the batch axis), and for a graph
    with dynamic axes three more batch sizes and image sizes (:func:`~.shapes.check_shapes`)."""
    x = verify_batch(meta)
    shaped = [shaped_batch(n, side, seed=side) for n, side in check_shapes(meta)]
    return [x, x[:1].contiguous(), *shaped]


def _relative(ref: torch.Tensor, got: torch.Tensor, what: str) -> tuple[float, float]:
    if got.shape != ref.shape:
        raise ExportError(f"the export's {what} has shape {tuple(got.shape)}, contrastkit's {tuple(ref.shape)}")
    diff = float((got.float() - ref).abs().max())
    return diff, diff / max(float(ref.abs().max()), 1e-12)


def _verify(source: ExportSource, features: Callable, meta: dict[str, Any]) -> dict[str, Any]:
    """Largest absolute and relative differences of h (and z) from contrastkit's over :func:`verify_inputs`, and
    the input shapes checked."""
    worst_abs, worst_rel, shapes = 0.0, 0.0, []
    for x in verify_inputs(meta):
        with torch.no_grad():
            h_ref = source.model.encoder(x)  # (N, F)
            z_ref = source.model.head(h_ref) if meta["include_head"] else None  # (N, D)
        h, z = features(x)
        pairs = [(h_ref, h, "h")] + ([(z_ref, z, "z")] if z_ref is not None else [])
        for ref, got, what in pairs:
            a, r = _relative(ref, got, what)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
        shapes.append(list(x.shape))
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "verified_shapes": shapes}


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
                      include_head: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Export a checkpoint's encoder f (and g) to ``out`` in ``fmt``, verified against contrastkit's h.

    Args:
        checkpoint: a checkpoint written by ``contrastkit pretrain``, or its run folder (``last.pt``).
        fmt: one of :data:`~contrastkit.export.FORMATS`.
        out: the file to write, named for the format (``.safetensors``, ``.torchscript``, ``.onnx``, ``.pt2``; the
            state-dict formats, ``.pt`` or ``.pth``, also write ``<out>.json``, and ``<out>.head.pt`` with g), or
            the folder of ``hub``. An existing file is replaced only when an earlier export wrote it and
            ``overwrite`` is set, atomically, once the new one has verified; a run's checkpoint never is.
        include_head: also export the projection head g (or the CE baseline's classifier).
        overwrite: replace an earlier export at ``out``.

    Returns:
        A summary: the files written, their total size, the largest absolute and relative differences from
        contrastkit's features, the tolerance, and the seconds spent writing and verifying.

    Raises:
        ExportError: an unknown format, one this encoder cannot be written to, a missing optional package, an
            ``out`` not named for the format, or an export whose features differ from contrastkit's by more than
            the tolerance.
        ValueError: ``out`` is not writable, exists without ``overwrite``, or is not contrastkit's to replace
            (all before any work); another process is writing it.
        CheckpointError: ``checkpoint`` is not a contrastkit checkpoint.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}")
    for module, extra in packages_for(fmt):
        require(module, extra, f"--format {fmt}")
    out_path = _check_out(out, fmt)
    final = hub_paths(out_path) if fmt == "hub" else _final_paths(out_path, fmt, include_head)
    folder = out_path if fmt == "hub" else out_path.parent
    write, reload = _WRITERS[fmt]
    with OutputFiles(folder, [p.name for p in final.values()], "export", "export", overwrite,
                     temp_keeps_suffix=True) as files:  # torch.export writes and reads only files named *.pt2
        source = load_source(checkpoint)
        check_exportable(source, fmt)
        meta = build_metadata(source, fmt, include_head)
        temp = {role: files.temp(path.name) for role, path in final.items()}
        t0 = time.perf_counter()
        write(source, meta, temp)
        t1 = time.perf_counter()
        diffs = _verify(source, reload(temp, meta), meta)
        t2 = time.perf_counter()
        if not diffs["max_rel_diff"] <= TOLERANCE[fmt]:
            raise ExportError(
                f"verification failed: the {fmt} export's features differ from contrastkit's by "
                f"{diffs['max_abs_diff']:.3g} (relative {diffs['max_rel_diff']:.3g}, tolerance {TOLERANCE[fmt]:g}) "
                f"on the shapes {diffs['verified_shapes']}; nothing was written at {out_path}")
        mode = _file_mode()  # as a plain open() would create the files (some writers make them private)
        for path in temp.values():
            os.chmod(path, mode)
        files.publish(sorted((p.name for p in final.values()), key=lambda n: n == final["main"].name))  # main last
    written = list(final.values())
    return {"format": fmt, "checkpoint": str(source.checkpoint), "out": str(out_path),
            "files": [str(p) for p in written], "bytes": sum(p.stat().st_size for p in written),
            "architecture": source.architecture, "feature_dim": source.feature_dim, "include_head": include_head,
            **diffs, "tolerance": TOLERANCE[fmt], "verify_batch": VERIFY_BATCH,
            "write_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3)}
