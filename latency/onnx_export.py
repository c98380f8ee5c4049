"""Export a module to ONNX the same way for the ORT backends and for mobile bundles."""

from __future__ import annotations

import io
import os
import warnings

import torch
from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def supported_opsets() -> range:
    """The opsets the installed torch's TorchScript exporter (the one `export_onnx` uses)
    declares it can write; torch 2.14: 7..20."""
    try:
        from torch.onnx import _constants as c

        return range(c.ONNX_MIN_OPSET, c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET + 1)
    except (ImportError, AttributeError):  # pragma: no cover - a torch without the constants
        return range(7, 21)


def check_opset(opset: int) -> None:
    """A ValueError saying the supported range, before any export starts: out of range, the
    exporter would fail with a page of IR and the dynamo fallback write another opset."""
    ok = supported_opsets()
    if int(opset) not in ok:
        raise ValueError(
            f"opset={opset} is not supported by the ONNX exporter of the installed torch "
            f"{torch.__version__}: choose an opset in {ok.start}..{ok.stop - 1} (default {OPSET})"
        )


def onnx_opset(data: bytes) -> int:
    """The default-domain opset a serialized ONNX model was actually written with."""
    import onnx

    model = onnx.load_from_string(data)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def export_onnx(
    module: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = False,
    output_name: str = OUTPUT_NAME,
) -> bytes:
    """Export (static shapes by default: latency is per shape); returns the model bytes.

    Uses the TorchScript exporter (`dynamo=False`): in torch 2.14 it still works, needs no
    onnxscript and is several times faster for many tiny modules; it warns that it is
    deprecated, which we silence. Falls back to the dynamo exporter if it ever fails (which
    writes opset >= 18: read the real one with `onnx_opset`). An opset outside
    `supported_opsets()` is a ValueError.
    """
    check_opset(opset)
    module = module.eval()
    axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example_input,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_axes=axes,
            )
            data = buf.getvalue()
        except Exception:  # pragma: no cover - only if the legacy exporter is removed
            program = torch.onnx.export(
                module,
                (example_input,),
                dynamo=True,
                opset_version=max(opset, 18),
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
            )
            data = program.model_proto.SerializeToString()
    if path is not None:
        from latency.atomic import atomic_write_bytes

        atomic_write_bytes(path, data)
    return data
