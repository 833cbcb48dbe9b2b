"""The graph formats: TorchScript and ONNX hold the encoder alone (and g with ``--include-head``).

Both take the normalised input contrastkit's encoder takes (the normalisation is in the metadata) and return
h. With g, the TorchScript module gains a ``forward_z(x)`` method and the ONNX graph a second output ``z``;
``forward`` and the output ``h`` are unchanged. The ONNX graph's batch, height and width are dynamic (named
``batch``, ``height``, ``width``); the metadata's ``input_size`` is the size the encoder was trained at.
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

from .formats import ExportError, require
from .shapes import AXIS_NAMES, dynamic_shapes
from .source import ExportSource

__all__ = ["write_torchscript", "reload_torchscript", "write_onnx", "reload_onnx", "example_input",
           "METADATA_FILE", "ONNX_METADATA_KEY", "export_module"]

#: name of the metadata JSON inside a TorchScript archive (``torch.jit.load(..., _extra_files=...)``)
METADATA_FILE = "contrastkit.json"
#: key of the metadata JSON in the ONNX model's ``metadata_props``
ONNX_METADATA_KEY = "contrastkit"

Features = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


class _Encoder(nn.Module):
    """The backbone (and g) as one module to trace: ``forward(x) -> h``, ``forward_z(x) -> z``."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (N, F)

    def forward_z(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (N, D)


class _BothOutputs(nn.Module):
    """``forward(x) -> (h, z)``: the ONNX graph of an export with g."""

    def __init__(self, encoder: _Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder.backbone(x)  # (N, F)
        return h, self.encoder.head(h)  # (N, D)


def example_input(meta: dict[str, Any], batch: int = 2) -> torch.Tensor:
    """A normalised-input-shaped batch for tracing. Shape: (batch, 3, H, W)."""
    return torch.randn(batch, *meta["input_size"], generator=torch.Generator().manual_seed(1))


@contextlib.contextmanager
def _quiet_torchscript():
    # torch.jit is deprecated in favour of torch.export; the user asked for TorchScript, so its warnings are noise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


def write_torchscript(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """A traced module (``forward``, and ``forward_z`` with g) with the metadata as an extra file."""
    module = _Encoder(source.model.encoder.backbone, source.model.head if meta["include_head"] else None).eval()
    x = example_input(meta)
    methods = {"forward": x, "forward_z": x} if meta["include_head"] else {"forward": x}
    with _quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace_module(module, methods, check_trace=False)
        torch.jit.save(traced, str(paths["main"]), _extra_files={METADATA_FILE: json.dumps(meta)})


def load_torchscript(path: Path, map_location: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, dict]:
    """(module in eval mode, metadata) of a TorchScript export.

    Raises:
        ExportError: the archive has no contrastkit metadata.
    """
    extra = {METADATA_FILE: ""}
    with _quiet_torchscript():
        try:
            module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
        except RuntimeError as exc:
            raise ExportError(f"{path} is not a loadable TorchScript archive: {exc}") from exc
    if not extra[METADATA_FILE]:
        raise ExportError(f"{path} is a TorchScript archive without contrastkit metadata ({METADATA_FILE}); it "
                          f"was not written by contrastkit export")
    return module.eval(), json.loads(extra[METADATA_FILE])


def reload_torchscript(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    module, stored = load_torchscript(paths["main"])
    if stored != meta:
        raise ExportError(f"the metadata of {paths['main']} does not read back as written")

    def run(x: torch.Tensor):
        with torch.no_grad():
            return module(x), (module.forward_z(x) if meta["include_head"] else None)
    return run


def _onnx_packages() -> None:
    for module in ("onnx", "onnxruntime", "onnxscript"):
        require(module, "onnx", "--format onnx")


def export_module(source: ExportSource, meta: dict[str, Any]) -> nn.Module:
    """The module the graph formats trace: ``x -> h``, or ``x -> (h, z)`` with g (eval mode)."""
    encoder = _Encoder(source.model.encoder.backbone, source.model.head if meta["include_head"] else None).eval()
    return _BothOutputs(encoder) if meta["include_head"] else encoder


def _name_axes(model: Any) -> None:
    """Rename the exporter's symbols of the input's dynamic axes (``s53``) to ``batch``, ``height``, ``width``,
    in the inputs, outputs and intermediate shapes alike."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {dims[i].dim_param: name for i, name in AXIS_NAMES.items() if dims[i].dim_param}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def write_onnx(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """torch.onnx (the torch.export-based exporter) with dynamic batch, height and width; metadata in
    ``metadata_props``."""
    _onnx_packages()
    import onnx

    outputs = ["h", "z"] if meta["include_head"] else ["h"]
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(export_module(source, meta), (example_input(meta),), str(paths["main"]), dynamo=True,
                              input_names=["input"], output_names=outputs, dynamic_shapes=dynamic_shapes(),
                              external_data=False, verbose=False)
    except Exception as exc:  # torch.export / onnxscript errors have many types
        raise ExportError(f"torch.onnx could not export {meta['architecture']}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}\n{log.getvalue()[-2000:]}") from exc
    model = onnx.load(str(paths["main"]))
    _name_axes(model)
    onnx.helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(meta)})
    model.doc_string = f"contrastkit encoder {meta['architecture']}: normalised input (N, 3, H, W) -> h"
    onnx.save(model, str(paths["main"]))


def onnx_session(path: Path, threads: int = 0):
    """(onnxruntime CPU session, metadata) of an ONNX export; ``threads`` 0 lets onnxruntime choose.

    Raises:
        ExportError: not an ONNX model onnxruntime loads, or no contrastkit metadata.
    """
    ort = require("onnxruntime", "onnx", f"reading {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1 if threads else 0
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf
        raise ExportError(f"{path} is not an ONNX model onnxruntime can load ({type(exc).__name__}: {exc})") from exc
    props = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in props:
        raise ExportError(f"{path} is an ONNX model without contrastkit metadata (metadata_props "
                          f"{ONNX_METADATA_KEY!r}); it was not written by contrastkit export")
    return session, json.loads(props[ONNX_METADATA_KEY])


def reload_onnx(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    session, stored = onnx_session(paths["main"])
    if stored != meta:
        raise ExportError(f"the metadata of {paths['main']} does not read back as written")

    def run(x: torch.Tensor):
        out = session.run(None, {"input": x.numpy()})
        return torch.from_numpy(out[0]), (torch.from_numpy(out[1]) if meta["include_head"] else None)
    return run
