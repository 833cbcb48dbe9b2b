"""``export_checkpoint``: write a checkpoint's encoder in another library's format, verify it, then publish it.

Every file is written under a temporary name in the folder of ``--out``, reloaded through the target library
and compared with contrastkit's own h (and z) on a fixed batch; only when the largest difference is within
tolerance are the files renamed into place. A failure at any step leaves nothing new at ``--out``. An existing
file there is replaced only when an earlier export wrote it (the folder's marker lists it,
:mod:`contrastkit.runtime.ownership`) and ``overwrite`` is given; a run's checkpoint never is. The file's name
says its format (``*.torchscript``, ...), since :func:`~contrastkit.export.load_encoder` reads by name.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..runtime.ownership import OutputFiles
from .formats import FORMATS, STATE_DICT_FORMATS, ExportError, head_path, packages_for, require, sidecar_path
from .graphs import reload_onnx, reload_torchscript, write_onnx, write_torchscript
from .source import ExportSource, build_metadata, load_source
from .state_dicts import reload_safetensors, reload_state_dict, write_safetensors, write_state_dict
from .torchvision_code import torchvision_build_lines

__all__ = ["export_checkpoint", "check_exportable", "verify_batch", "TOLERANCE"]

#: largest relative difference between the export's features and contrastkit's h that passes
TOLERANCE = {"torchvision": 1e-4, "timm": 1e-4, "safetensors": 1e-4, "torchscript": 1e-4, "onnx": 1e-3}
#: images in the fixed verification batch
VERIFY_BATCH = 4

_WRITERS: dict[str, tuple[Callable, Callable]] = {
    "torchvision": (write_state_dict, reload_state_dict),
    "timm": (write_state_dict, reload_state_dict),
    "safetensors": (write_safetensors, reload_safetensors),
    "torchscript": (write_torchscript, reload_torchscript),
    "onnx": (write_onnx, reload_onnx),
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
                          f"that work: timm, safetensors, torchscript, onnx")
    if fmt == "torchvision" and not source.is_standard_torchvision:
        lines = torchvision_build_lines(arch, source.width, source.stem)
        raise ExportError(
            f"--format torchvision writes weights for torchvision.models.{arch}() (ImageNet stem, width 1), but "
            f"this encoder has the {source.stem} stem and width {source.width:g}; formats that work: safetensors "
            f"(the same tensor names), torchscript, onnx. This builds the matching torchvision module, which loads "
            f"the safetensors export with strict=True:\n{lines}\n"
            f"import safetensors.torch\n"
            f"model.load_state_dict(safetensors.torch.load_file('encoder.safetensors'))")
    if fmt == "timm" and source.library != "timm":
        raise ExportError(f"--format timm needs a timm encoder (--encoder timm:<name>), but this encoder is "
                          f"{arch}; formats that work: "
                          f"{'torchvision, ' if source.is_standard_torchvision else ''}safetensors, torchscript, onnx")


#: the name an export of each format must have: load_encoder chooses its reader by the name
SUFFIXES = {"torchvision": (".pt", ".pth"), "timm": (".pt", ".pth"), "safetensors": (".safetensors",),
            "torchscript": (".torchscript",), "onnx": (".onnx",)}


def _check_out(out: str | os.PathLike, fmt: str) -> Path:
    """``--out`` as a file path named for ``fmt`` (``*.torchscript`` for TorchScript, ...).

    Raises:
        ExportError: a folder, or a name that says another format.
    """
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError(f"--out {path} is a folder; expected the path of the file to write")
    if path.suffix.lower() not in SUFFIXES[fmt]:
        code = ", and runs TorchScript only from a *.torchscript file" if fmt == "torchscript" else ""
        raise ExportError(f"--out {path}: a {fmt} export is named *{' or *'.join(SUFFIXES[fmt])} (load_encoder "
                          f"chooses its reader by the file's name{code}); for example --out "
                          f"{path.with_suffix(SUFFIXES[fmt][0]).name}")
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


def _relative(ref: torch.Tensor, got: torch.Tensor, what: str) -> tuple[float, float]:
    if got.shape != ref.shape:
        raise ExportError(f"the export's {what} has shape {tuple(got.shape)}, contrastkit's {tuple(ref.shape)}")
    diff = float((got.float() - ref).abs().max())
    return diff, diff / max(float(ref.abs().max()), 1e-12)


def _verify(source: ExportSource, features: Callable, meta: dict[str, Any]) -> dict[str, float]:
    """Largest absolute and relative differences of h (and z) from contrastkit's, on the fixed batch and (for the
    batch axis) on its first image alone."""
    x = verify_batch(meta)
    with torch.no_grad():
        h_ref = source.model.encoder(x)  # (4, F)
        z_ref = source.model.head(h_ref) if meta["include_head"] else None  # (4, D)
    worst_abs, worst_rel = 0.0, 0.0
    for rows in (slice(None), slice(0, 1)):
        h, z = features(x[rows].contiguous())
        pairs = [(h_ref[rows], h, "h")] + ([(z_ref[rows], z, "z")] if z_ref is not None else [])
        for ref, got, what in pairs:
            a, r = _relative(ref, got, what)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel}


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
                      include_head: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Export a checkpoint's encoder f (and g) to ``out`` in ``fmt``, verified against contrastkit's h.

    Args:
        checkpoint: a checkpoint written by ``contrastkit pretrain``, or its run folder (``last.pt``).
        fmt: one of :data:`~contrastkit.export.FORMATS`.
        out: the file to write, named for its format (``*.pt`` for torchvision and timm, ``*.safetensors``,
            ``*.torchscript``, ``*.onnx``); state-dict formats also write ``<out>.json``, and ``<out>.head.pt``
            with g. An existing file is replaced only when an earlier export wrote it and ``overwrite`` is set,
            atomically, once the new one has verified; a run's checkpoint never is.
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
    final = _final_paths(out_path, fmt, include_head)
    write, reload = _WRITERS[fmt]
    with OutputFiles(out_path.parent, [p.name for p in final.values()], "export", "export", overwrite) as files:
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
                f"on a batch of {VERIFY_BATCH}; nothing was written at {out_path}")
        mode = _file_mode()  # as a plain open() would create the files (some writers make them private)
        for path in temp.values():
            os.chmod(path, mode)
        files.publish(sorted((p.name for p in final.values()), key=lambda n: n == out_path.name))  # the main last
    return {"format": fmt, "checkpoint": str(source.checkpoint), "out": str(out_path),
            "files": [str(p) for p in final.values()], "bytes": sum(p.stat().st_size for p in final.values()),
            "architecture": source.architecture, "feature_dim": source.feature_dim, "include_head": include_head,
            **diffs, "tolerance": TOLERANCE[fmt], "verify_batch": VERIFY_BATCH,
            "write_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3)}
