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
    deprecated, which we silence. Falls back to the dynamo exporter if it ever fails.
    """
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
