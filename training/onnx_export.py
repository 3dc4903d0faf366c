"""Export a torch model to ONNX with a dynamic batch axis (and, where the model allows it, dynamic
height and width) and its metadata in ``metadata_props``, then check ONNX Runtime against PyTorch on
the same input. Shared by every task's exporter."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from app.models.metadata import validate_metadata

OPSET = 17


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, object],
                output_name: str = "output", output_axes: dict[int, str] | None = None,
                dynamic_size: bool = False) -> Path:
    """Write ``model`` to ``path``; each metadata value is stored JSON-encoded under its key.

    The batch axis is always dynamic; ``dynamic_size`` also frees the input's height and width (a
    fully convolutional model), and ``output_axes`` names the output axes that follow them. The
    metadata is validated against the one contract (``app.models.metadata``) before anything is
    written: a bad file is refused here, not when it is served."""
    validate_metadata(metadata, str(path))
    model = model.eval().to(memory_format=torch.contiguous_format)
    in_axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    buf = io.BytesIO()
    torch.onnx.export(model, (example,), buf, input_names=["images"], output_names=[output_name],
                      dynamic_axes={"images": in_axes, output_name: {0: "batch", **(output_axes or {})}},
                      opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def file_metadata(path: Path) -> dict[str, object]:
    """An ONNX file's ``metadata_props``, JSON-decoded."""
    return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}


def set_metadata(proto: onnx.ModelProto, values: dict[str, object]) -> None:
    """Set (or add) each key of ``values`` in ``proto``'s metadata, JSON-encoded."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def update_metadata(path: Path, values: dict[str, object]) -> Path:
    """Rewrite ``path`` with ``values`` merged into its metadata (the weights untouched)."""
    proto = onnx.load(str(path))
    set_metadata(proto, values)
    validate_metadata({p.key: json.loads(p.value) for p in proto.metadata_props}, str(path))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


def parity(model: torch.nn.Module, path: Path, inputs: torch.Tensor) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime (CPU) outputs on ``inputs``."""
    with torch.no_grad():
        expected = model.eval()(inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    return float(np.abs(expected - got).max())


def count_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (torch's FlopCounterMode; a MAC counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(example)
    return int(counter.get_total_flops())
