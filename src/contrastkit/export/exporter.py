"""``export_checkpoint``: write a checkpoint's encoder in another library's format, verify it, then publish it.

Every file (or the hub folder) is written under a temporary name in the folder of ``--out``, reloaded through the
target library and compared with contrastkit's own h (and z) on a fixed batch, and for the graphs with dynamic
axes also at three other batch sizes and image sizes; only when the largest difference is within tolerance are
the files renamed into place. A failure at any step leaves nothing new at ``--out``. An existing ``--out`` is
replaced only when contrastkit export wrote it (:func:`~.filekinds.written_by_export`), never a user's own file.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .filekinds import written_by_export
from .formats import (FORMATS, STATE_DICT_FORMATS, ExportError, check_out_name, head_path, packages_for, require,
                      sidecar_path)
from .graphs import reload_onnx, reload_torchscript, write_onnx, write_torchscript
from .hub import reload_hub, write_hub
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
    """``--out`` as a path whose folder exists and is writable (created if missing)."""
    path = Path(out).expanduser()
    if fmt == "hub" and path.exists() and not path.is_dir():
        raise ExportError(f"--out {path} is a file; --format hub writes a folder")
    if fmt != "hub" and path.is_dir():
        raise ExportError(f"--out {path} is a folder; expected the path of the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.write-test-"):
            pass
    except OSError as exc:
        raise ExportError(f"--out {path} is not writable: {exc.strerror or exc}") from exc
    return path


def _temp_paths(out: Path, fmt: str, include_head: bool) -> tuple[dict[str, Path], dict[str, Path]]:
    """(final paths, temporary paths in the same folder) of every file the format writes."""
    final = {"main": out}
    if fmt in STATE_DICT_FORMATS:
        final["sidecar"] = sidecar_path(out)
        if include_head:
            final["head"] = head_path(out)
    token = secrets.token_hex(4)  # a name of this export's own: two exports to one folder do not collide
    # the temporary name keeps the suffix: torch.export reads and writes only files named *.pt2
    return final, {role: path.with_name(f".{path.name}.{token}.tmp{path.suffix}") for role, path in final.items()}


def _check_replaceable(final: dict[str, Path]) -> None:
    """Refuse to replace what contrastkit export did not write (an empty folder holds nothing to lose)."""
    for path in final.values():
        if not (path.exists() or path.is_symlink()) or (path.is_dir() and not any(path.iterdir())):
            continue
        if path.is_symlink() or not written_by_export(path):
            what = "holds files that" if path.is_dir() else "is a file that"
            raise ExportError(f"--out: {path} exists and {what} contrastkit export did not write; nothing was "
                              f"replaced. Choose another --out, or move it away")


def _publish(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final``: a file by an atomic rename; a folder beside the old one, then swapped."""
    if not temp.is_dir() or not final.is_dir() or not any(final.iterdir()):
        os.replace(temp, final)  # a file, or a folder onto nothing or an empty folder
        return
    old = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old")
    os.replace(final, old)
    try:
        os.replace(temp, final)
    except OSError:
        os.replace(old, final)
        raise
    shutil.rmtree(old)


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
                      include_head: bool = False) -> dict[str, Any]:
    """Export a checkpoint's encoder f (and g) to ``out`` in ``fmt``, verified against contrastkit's h.

    Args:
        checkpoint: a checkpoint written by ``contrastkit pretrain``, or its run folder (``last.pt``).
        fmt: one of :data:`~contrastkit.export.FORMATS`.
        out: the file to write, named for the format (``.safetensors``, ``.torchscript``, ``.onnx``, ``.pt2``; the
            state-dict formats also write ``<out>.json``, and ``<out>.head.pt`` with g), or the folder of
            ``hub``. An existing one is replaced, atomically, once the new one has verified, and only when
            contrastkit export wrote it.
        include_head: also export the projection head g (or the CE baseline's classifier).

    Returns:
        A summary: the files written, their total size, the largest absolute and relative differences from
        contrastkit's features, the tolerance, and the seconds spent writing and verifying.

    Raises:
        ExportError: an unknown format, one this encoder cannot be written to, a missing optional package, an
            unwritable ``out`` or one not named for the format, an existing ``out`` that contrastkit export did
            not write, or an export whose features differ from contrastkit's by more than the tolerance.
        CheckpointError: ``checkpoint`` is not a contrastkit checkpoint.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}")
    for module, extra in packages_for(fmt):
        require(module, extra, f"--format {fmt}")
    source = load_source(checkpoint)
    check_exportable(source, fmt)
    out_path = _check_out(out, fmt)
    meta = build_metadata(source, fmt, include_head)
    write, reload = _WRITERS[fmt]
    final, temp = _temp_paths(out_path, fmt, include_head)
    if any(path.resolve() == source.checkpoint.resolve() for path in final.values()):
        raise ExportError(f"--out {out_path} would overwrite the checkpoint {source.checkpoint} it exports; "
                          f"choose another path")
    check_out_name(out_path, fmt)
    _check_replaceable(final)
    try:
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
        for role in sorted(final, key=lambda r: r == "main"):  # the main file last: it never lacks its sidecar
            for path in (temp[role].iterdir() if temp[role].is_dir() else [temp[role]]):
                os.chmod(path, mode)
            _publish(temp[role], final[role])
    finally:
        for path in temp.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    files = [p for path in final.values() for p in (sorted(path.iterdir()) if path.is_dir() else [path])]
    return {"format": fmt, "checkpoint": str(source.checkpoint), "out": str(out_path),
            "files": [str(p) for p in files], "bytes": sum(p.stat().st_size for p in files),
            "architecture": source.architecture, "feature_dim": source.feature_dim, "include_head": include_head,
            **diffs, "tolerance": TOLERANCE[fmt], "verify_batch": VERIFY_BATCH,
            "write_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3)}
