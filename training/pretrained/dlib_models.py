"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, CC0, 128-d) read from
dlib's own file format, rebuilt in PyTorch, exported to ONNX and proven against dlib (``dlib-bin``)
on real photos.

The file is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp`` serialized by dlib
(``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``dlib/cuda/tensor.h``):
- an integer is a control byte (low nibble: how many magnitude bytes follow; 0x80: negative), then
  the magnitude, little-endian; a string is its length then its bytes; a bool is the character
  ``'0'`` or ``'1'``; a float is two integers, ``mantissa * 2 ** exponent``; a tensor is version 2,
  four dims (num, k, nr, nc) and raw little-endian float32; an alias tensor is version 1 and four dims.
- ``add_loss_layer`` writes its version, the loss, then its subnetwork. Each wrapper writes its
  version and then, recursively, its subnetwork *before* its own layer, so the file holds the wrappers'
  versions from the top down (2: a layer, 1: a tag or skip, 3: the layer on the input), then the input
  layer, then the layers from the input up, each with a trailer (3 bools, 3 tensors). Which tag a
  skip or an ``add_prev`` refers to is a template argument: it is not in the file.
- each layer starts with its tag string: ``con_4``, ``affine_``, ``relu_``, ``max_pool_2``,
  ``avg_pool_2``, ``add_prev_``, ``fc_2`` in this file.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from app.models.base import normalise
from app.models.metadata import validate_metadata
from app.vision.align import align_face
from training.onnx_export import export_onnx, file_metadata
from training.pretrained.packages import FACE_RECOGNITION, FACE_RECOGNITION_MODELS, SCIKIT_IMAGE, SCRFD, fetch

Record = tuple[str, dict[str, Any]]   # (layer kind, its parameters)
CHIP = 150                            # the side of the chips the network reads
PADDING = 0.25                        # dlib's default padding of those chips
MODELS_SUBDIR = "face_recognition_models-0.3.0/face_recognition_models/models"
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# dlib's own chips are fitted to the eye corners and the base of the nose, never the mouth: fitted to
# the eye centres and nose tip alone, Sightline's chips come closer to dlib's (descriptor distance to
# dlib's own chip on 34 real faces: median 0.105, max 0.159, against 0.120 / 0.209 with the mouth)
ALIGN_POINTS = (0, 1, 2)
DESCRIPTOR_NORM = 1.34                # mean norm of dlib's raw descriptors on the 34 faces of real_photos()


class FormatError(ValueError):
    """Bytes that are not the dlib serialization this reader knows."""


# ---- dlib's serialization: each reader takes (bytes, position) and returns (value, next position) ----

def read_int(buf: bytes, pos: int) -> tuple[int, int]:
    """A signed or unsigned integer: control byte, then ``control & 0x0F`` little-endian bytes."""
    if pos >= len(buf):
        raise FormatError(f"byte {pos}: the file ends where an integer was expected")
    control = buf[pos]
    size = control & 0x0F
    if control & 0x70 or not 1 <= size <= 8 or pos + 1 + size > len(buf):
        raise FormatError(f"byte {pos}: {control:#04x} does not start an integer")
    value = int.from_bytes(buf[pos + 1:pos + 1 + size], "little")
    return (-value if control & 0x80 else value), pos + 1 + size


def read_float(buf: bytes, pos: int) -> tuple[float, int]:
    """``mantissa * 2 ** exponent``; exponents 32000, 32001, 32002 stand for inf, -inf and nan."""
    mantissa, pos = read_int(buf, pos)
    exponent, pos = read_int(buf, pos)
    special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
    return special.get(exponent, math.ldexp(mantissa, exponent)), pos


def read_bool(buf: bytes, pos: int) -> tuple[bool, int]:
    if pos >= len(buf) or buf[pos] not in b"01":
        raise FormatError(f"byte {pos}: no bool ('0' or '1') there")
    return buf[pos] == ord("1"), pos + 1


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_int(buf, pos)
    return buf[pos:pos + size].decode("latin-1"), pos + size


def read_dims(buf: bytes, pos: int, version: int) -> tuple[tuple[int, ...], int]:
    """A version number that must be ``version``, then four dims (num, k, nr, nc)."""
    found, pos = read_int(buf, pos)
    if found != version:
        raise FormatError(f"byte {pos}: tensor version {found}, expected {version}")
    dims = []
    for _ in range(4):
        d, pos = read_int(buf, pos)
        dims.append(d)
    return tuple(dims), pos


def read_tensor(buf: bytes, pos: int) -> tuple[np.ndarray, int]:
    """A tensor: ``(num, k, nr, nc) float32``."""
    dims, pos = read_dims(buf, pos, 2)
    count = math.prod(dims)
    if pos + 4 * count > len(buf):
        raise FormatError(f"byte {pos}: a {dims} tensor runs past the end of the file")
    return np.frombuffer(buf, "<f4", count, pos).astype(np.float32).reshape(dims), pos + 4 * count


def read_alias(buf: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """An alias tensor: only the shape of a view into a layer's ``params``."""
    return read_dims(buf, pos, 1)


def read_ints(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    values = []
    for _ in range(n):
        v, pos = read_int(buf, pos)
        values.append(v)
    return values, pos


def skip_floats(buf: bytes, pos: int, n: int) -> int:
    """Past ``n`` floats (learning-rate and weight-decay multipliers, unused at inference)."""
    for _ in range(n):
        _, pos = read_float(buf, pos)
    return pos


# ---- one layer's record ----

def read_con(buf: bytes, pos: int, tag: str) -> tuple[dict[str, Any], int]:
    """``con_4..6``: ``weight (O, I, kh, kw)`` and ``bias (O,)`` (views of one params tensor), stride, padding."""
    params, pos = read_tensor(buf, pos)
    (_filters, kh, kw, sy, sx, py, px), pos = read_ints(buf, pos, 7)
    w_shape, pos = read_alias(buf, pos)
    b_shape, pos = read_alias(buf, pos)
    pos = skip_floats(buf, pos, 4)
    use_bias = True
    if tag in ("con_5", "con_6"):
        use_bias, pos = read_bool(buf, pos)
    if tag == "con_6":
        fused_relu, pos = read_bool(buf, pos)
        if fused_relu:
            raise FormatError(f"byte {pos}: a convolution with a fused relu is not supported")
    if (kh, kw) != w_shape[2:]:
        raise FormatError(f"byte {pos}: a {kh}x{kw} convolution with filters {w_shape}")
    flat, n = params.ravel(), math.prod(w_shape)
    bias = flat[n:n + math.prod(b_shape)] if use_bias else np.zeros(w_shape[0], np.float32)
    return {"weight": flat[:n].reshape(w_shape), "bias": bias, "stride": (sy, sx), "padding": (py, px)}, pos


def read_affine(buf: bytes, pos: int, tag: str) -> tuple[dict[str, Any], int]:
    """``affine_``/``affine_2``: per-channel ``gamma (C,)`` and ``beta (C,)``, mode 0 = conv, 1 = fc."""
    params, pos = read_tensor(buf, pos)
    g_shape, pos = read_alias(buf, pos)
    _b_shape, pos = read_alias(buf, pos)
    mode, pos = read_int(buf, pos)
    if tag == "affine_2":
        _disabled, pos = read_bool(buf, pos)
    flat, n = params.ravel(), math.prod(g_shape)
    return {"gamma": flat[:n], "beta": flat[n:2 * n], "mode": mode}, pos


def read_fc(buf: bytes, pos: int, tag: str) -> tuple[dict[str, Any], int]:
    """``fc_2``/``fc_3``: ``weight (inputs, outputs)`` (dlib computes ``x @ weight``), ``bias (outputs,)`` or None."""
    (outputs, inputs), pos = read_ints(buf, pos, 2)
    params, pos = read_tensor(buf, pos)
    _w_shape, pos = read_alias(buf, pos)
    _b_shape, pos = read_alias(buf, pos)
    bias_mode, pos = read_int(buf, pos)          # 0: has a bias, 1: no bias
    pos = skip_floats(buf, pos, 4)
    if tag == "fc_3":
        _use_bias, pos = read_bool(buf, pos)
    flat, n = params.ravel(), inputs * outputs
    bias = flat[n:n + outputs] if bias_mode == 0 else None
    return {"weight": flat[:n].reshape(inputs, outputs), "bias": bias}, pos


def read_pool(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    """``max_pool_2``/``avg_pool_2``: window (0, 0) means the whole image."""
    (nr, nc, sy, sx, py, px), pos = read_ints(buf, pos, 6)
    return {"size": (nr, nc), "stride": (sy, sx), "padding": (py, px)}, pos


def read_layer(buf: bytes, pos: int) -> tuple[Record, int]:
    """One layer's details, from its tag string on."""
    start = pos
    tag, pos = read_string(buf, pos)
    match tag:
        case "con_4" | "con_5" | "con_6":
            params, pos = read_con(buf, pos, tag)
            return ("con", params), pos
        case "affine_" | "affine_2":
            params, pos = read_affine(buf, pos, tag)
            return ("affine", params), pos
        case "fc_2" | "fc_3":
            params, pos = read_fc(buf, pos, tag)
            return ("fc", params), pos
        case "max_pool_2" | "avg_pool_2":
            params, pos = read_pool(buf, pos)
            return (tag[:-2], params), pos
        case "relu_" | "relu_2":
            if tag == "relu_2":
                _disabled, pos = read_bool(buf, pos)
            return ("relu", {}), pos
        case "add_prev_":
            return ("add_prev", {}), pos
    raise FormatError(f"byte {start}: layer {tag!r} is not one this reader knows")


# ---- the network ----

def read_input(buf: bytes, pos: int) -> tuple[Record, int]:
    """``input_rgb_image_sized``: the channel means (R, G, B) and the input size."""
    tag, pos = read_string(buf, pos)
    if tag != "input_rgb_image_sized":
        raise FormatError(f"input layer {tag!r}, expected input_rgb_image_sized")
    avg = []
    for _ in range(3):
        v, pos = read_float(buf, pos)
        avg.append(v)
    size, pos = read_ints(buf, pos, 2)
    return ("input", {"avg": tuple(avg), "size": tuple(size)}), pos


def read_loss(buf: bytes, pos: int) -> tuple[Record, int]:
    """``loss_metric_2``: the training margin and distance threshold."""
    tag, pos = read_string(buf, pos)
    if tag != "loss_metric_2":
        raise FormatError(f"loss {tag!r}, expected loss_metric_2")
    margin, pos = read_float(buf, pos)
    threshold, pos = read_float(buf, pos)
    return ("loss_metric", {"margin": margin, "distance_threshold": threshold}), pos


def starts_input(buf: bytes, pos: int) -> bool:
    """Whether the string of the input layer (``input_...``) starts at ``pos``."""
    size, start = read_int(buf, pos)
    return 6 <= size <= 64 and buf[start:start + 6] == b"input_"


def read_wrappers(buf: bytes, pos: int) -> tuple[list[int], int]:
    """The wrappers' version numbers, from the top down to the layer on the input."""
    versions = []
    while not starts_input(buf, pos):
        v, pos = read_int(buf, pos)
        if v not in (1, 2, 3):
            raise FormatError(f"byte {pos}: wrapper version {v}")
        versions.append(v)
    if not versions or versions[-1] == 1:
        raise FormatError("no layer sits on the input")
    return versions, pos


def skip_trailer(buf: bytes, pos: int, expansion: bool) -> int:
    """Past a layer's state: 3 bools and 3 tensors (gradients, cached output), and for the layer on
    the input in version 3, its sample expansion factor."""
    for _ in range(3):
        _, pos = read_bool(buf, pos)
    for _ in range(3):
        _, pos = read_tensor(buf, pos)
    return read_int(buf, pos)[1] if expansion else pos


def read_network(buf: bytes) -> list[Record]:
    """Every record of a serialized ``loss_metric`` network, from the input up: ``("input", ...)``,
    the layers (``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``),
    then ``("loss_metric", ...)``. Tags and skips have no record."""
    version, pos = read_int(buf, 0)
    if version != 1:
        raise FormatError(f"loss layer version {version}, expected 1")
    loss, pos = read_loss(buf, pos)
    wrappers, pos = read_wrappers(buf, pos)
    first, pos = read_input(buf, pos)
    records = [first]
    for depth, v in enumerate(reversed(wrappers)):
        if v == 1:
            continue
        layer, pos = read_layer(buf, pos)
        pos = skip_trailer(buf, pos, expansion=depth == 0 and v == 3)
        records.append(layer)
    if pos != len(buf):
        raise FormatError(f"{len(buf) - pos} bytes left after the network")
    return records + [loss]


# ---- the network in PyTorch ----

# (in channels, out channels, stride) of the 14 residual blocks, from the input up: 32 x3 at 35 px;
# down to 64, 64 x3 at 17 px; down to 128, 128 x2 at 8 px; down to 256, 256 x2 at 4 px; down to 256 at 2 px
BLOCKS = (((32, 32, 1),) * 3 + ((32, 64, 2),) + ((64, 64, 1),) * 3 + ((64, 128, 2),) + ((128, 128, 1),) * 2
          + ((128, 256, 2),) + ((256, 256, 1),) * 2 + ((256, 256, 2),))

Plan = list[tuple[str, nn.Module | None]]   # (layer kind, the module holding its weights or geometry)


class Affine(nn.Module):
    """dlib's ``affine_`` (a batch norm frozen after training): ``x * gamma + beta`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def zero_pad(t: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """``F.pad`` with zeros appended (``pads``: after the last column, row, channel), or ``t`` itself."""
    return F.pad(t, (0, pads[0], 0, pads[1], 0, pads[2])) if any(pads) else t


class Residual(nn.Module):
    """dlib's ``ares`` (stride 1) and ``ares_down`` (stride 2) on a ``side``-pixel input:
    ``relu(block(x) + shortcut(x))``.

    block: con 3x3/stride, affine, relu, con 3x3/1, affine (dlib pads a convolution by size // 2 at
    stride 1, by 0 otherwise); shortcut: ``x``, or a 2x2/2 average pool of ``x`` in a down block.
    dlib's ``add_prev_`` adds tensors of different shapes by zero-padding the smaller one at the end
    of each axis (``tt::add``, dlib/cuda/cpu_dlib.cpp): in a down block the shortcut has fewer
    channels, and from an even side the block is a pixel smaller (8 px: 3 against 4; 4 px: 1
    against 2). The pads are fixed here from ``side``, as the network's input size is."""

    def __init__(self, cin: int, cout: int, stride: int, side: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1 if stride == 1 else 0)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1)
        self.affine2 = Affine(cout)
        self.shortcut = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        block, short = (side, side) if stride == 1 else ((side - 3) // 2 + 1, side // 2)
        self.side = max(block, short)                                   # the output's side
        self.grow_block = (self.side - block, self.side - block, 0)     # (columns, rows, channels)
        self.grow_short = (self.side - short, self.side - short, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))      # (B, cout, b, b); b = side, or (side - 3) // 2 + 1
        y = self.affine2(self.conv2(y))              # (B, cout, b, b)
        s = self.shortcut(x)                         # (B, cin, a, a); a = side, or side // 2
        return F.relu(zero_pad(y, self.grow_block) + zero_pad(s, self.grow_short))   # (B, cout, max(a, b), ...)

    def plan(self) -> Plan:
        """Its layers in the order of dlib's file (from the input up)."""
        down = [("avg_pool", self.shortcut)] if isinstance(self.shortcut, nn.AvgPool2d) else []
        return [("con", self.conv1), ("affine", self.affine1), ("relu", None), ("con", self.conv2),
                ("affine", self.affine2), *down, ("add_prev", None), ("relu", None)]


class DlibResNet(nn.Module):
    """dlib's face descriptor: ``(B, 3, 150, 150) float32`` chips already normalised to
    ``(rgb - avg) / 256`` → ``(B, 128)`` raw descriptors (not unit length)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, 2)
        self.affine = Affine(32)
        self.pool = nn.MaxPool2d(3, 2)
        blocks, side = [], 35                        # the side after the stem
        for cin, cout, stride in BLOCKS:
            blocks.append(Residual(cin, cout, stride, side))
            side = blocks[-1].side
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.affine(self.conv(x)))        # (B, 32, 72, 72)
        x = self.pool(x)                             # (B, 32, 35, 35)
        x = self.blocks(x)                           # (B, 256, 2, 2): 35 → 17 → 8 → 4 → 2
        return self.fc(x.mean(dim=(2, 3)))           # (B, 256) → (B, 128)

    def plan(self) -> Plan:
        """Its layers in the order of dlib's file; the final pool (the mean) has no module."""
        stem = [("con", self.conv), ("affine", self.affine), ("relu", None), ("max_pool", self.pool)]
        blocks = [step for block in self.blocks for step in block.plan()]
        return stem + blocks + [("avg_pool", None), ("fc", self.fc)]


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise FormatError(f"the file does not hold dlib's anet_type: {what}")


def load_layer(kind: str, module: nn.Module | None, p: dict[str, Any], where: str) -> None:
    """Copy one record's weights into ``module``, checking its geometry against the module's."""
    match kind:
        case "con":
            expect(p["weight"].shape == tuple(module.weight.shape) and p["stride"] == module.stride
                   and p["padding"] == module.padding, f"{where}: con {p['weight'].shape} /{p['stride']}")
            module.weight.copy_(torch.from_numpy(p["weight"]))
            module.bias.copy_(torch.from_numpy(p["bias"]))
        case "affine":
            expect(p["mode"] == 0 and p["gamma"].shape == tuple(module.gamma.shape), f"{where}: affine")
            module.gamma.copy_(torch.from_numpy(p["gamma"]))
            module.beta.copy_(torch.from_numpy(p["beta"]))
        case "fc":
            expect(p["bias"] is None and p["weight"].T.shape == tuple(module.weight.shape), f"{where}: fc")
            module.weight.copy_(torch.from_numpy(p["weight"].T))    # dlib: x @ W (in, out); torch: x @ W.T
        case "max_pool" | "avg_pool":
            whole = ((0, 0), (1, 1), (0, 0))           # dlib's avg_pool_everything
            geometry = whole if module is None else tuple(
                pair(v) for v in (module.kernel_size, module.stride, module.padding))
            expect((p["size"], p["stride"], p["padding"]) == geometry, f"{where}: {kind} {p}")


def load_records(model: DlibResNet, records: list[Record]) -> DlibResNet:
    """``model`` with the weights of ``read_network``'s records, every layer's kind and geometry
    checked against the model's."""
    expect(records[0] == ("input", records[0][1]) and records[0][1]["size"] == (CHIP, CHIP), "input")
    layers = [r for r in records if r[0] not in ("input", "loss_metric")]
    plan = model.plan()
    expect([k for k, _ in plan] == [k for k, _ in layers], "the sequence of layers differs")
    with torch.no_grad():
        for i, ((kind, module), (_, params)) in enumerate(zip(plan, layers)):
            load_layer(kind, module, params, f"layer {i}")
    return model.eval()


def build_resnet(dat_path: Path) -> DlibResNet:
    """The network of dlib's ``.dat`` file in PyTorch, its weights loaded, in eval mode."""
    return load_records(DlibResNet(), read_network(Path(dat_path).read_bytes()))


# ---- ONNX ----

def resnet_metadata(dat_path: Path) -> dict[str, Any]:
    """Sightline's metadata for the converted file: input normalisation from the file's own channel
    means (``(x / 255 - avg / 255) / (256 / 255)`` is dlib's ``(x - avg) / 256``), the chip template,
    and a nominal threshold: dlib's published Euclidean 0.6 on raw descriptors, divided by their
    typical norm and squared (Sightline compares unit vectors), to be calibrated on the served path."""
    data = Path(dat_path).read_bytes()
    avg = read_network(data)[0][1]["avg"]
    return {
        "name": "dlib-resnet-v1", "task": "face_embedding", "family": "dlib-resnet", "version": "1.0",
        "input_size": CHIP, "fixed_size": True,
        "normalization": {"color": "RGB", "mean": [a / 255 for a in avg], "std": [256 / 255] * 3},
        "license": "CC0-1.0", "source": f"pypi:face-recognition-models==0.3.0 {RESNET_FILE} (dlib, Davis King)",
        "weights_sha256": hashlib.sha256(data).hexdigest(), "embedding_dim": 128,
        "template": (chip_template() / CHIP).round(6).tolist(), "align_points": list(ALIGN_POINTS),
        "verification": {"threshold": round((0.6 / DESCRIPTOR_NORM) ** 2, 3), "target_far": None,
                         "method": f"the authors' published operating point: Euclidean 0.6 between raw "
                                   f"descriptors (dlib's example, face_recognition's default tolerance; LFW "
                                   f"99.38%), over their mean norm {DESCRIPTOR_NORM} on real faces, squared "
                                   f"(Sightline compares unit vectors)"},
    }


def export_resnet(dat_path: Path, out_path: Path, metadata: dict[str, Any]) -> Path:
    """Convert dlib's ``.dat`` into an ONNX file (dynamic batch, input ``(B, 3, 150, 150)``, output
    ``embedding (B, 128)``) carrying ``metadata``, validated before anything is written."""
    validate_metadata(metadata, str(out_path))
    model = build_resnet(dat_path)
    with warnings.catch_warnings():
        # the exporter writes F.pad's constant pads through a reversed Slice it cannot fold; ONNX
        # Runtime folds it when it loads the file (5 Pad nodes with constant pads remain)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")
        return export_onnx(model, torch.zeros(1, 3, CHIP, CHIP), Path(out_path), metadata, output_name="embedding")


def onnx_descriptors(onnx_path: Path, chips: np.ndarray) -> np.ndarray:
    """``(N, 150, 150, 3) uint8`` RGB chips → ``(N, 128)`` raw descriptors by ONNX Runtime (CPU),
    normalised as the file's metadata says (the served preprocessing)."""
    meta = validate_metadata(file_metadata(onnx_path), str(onnx_path))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = normalise(np.asarray(chips), meta.normalization)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def onnx_latency(onnx_path: Path, runs: int = 20) -> float:
    """Median seconds of one ONNX Runtime (CPU, default threads) run at batch 1, after a warm-up."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, CHIP, CHIP), np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ---- the chip template ----

# dlib's mean face shape (get_face_chip_details, dlib/image_transforms/interpolation.h): iBUG points
# 17..67 (0-based) as fractions of the face's extent; a chip of ``size`` with ``padding`` puts a point
# at (padding + mean) / (1 + 2 padding) * size
MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689)
MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454,
    0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423,
    0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077,
    0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192,
    0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182)

# Sightline's 5 points as means of iBUG points: the eye centres (image-left eye first), the nose tip,
# the mouth corners (image-left first)
SIGHTLINE_GROUPS = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))


def mean_face(size: int = CHIP, padding: float = PADDING) -> np.ndarray:
    """``(68, 2) float64``: where dlib's chip puts the iBUG points (pixels; NaN for the jaw, 0..16)."""
    points = np.full((68, 2), np.nan)
    points[17:] = np.stack([MEAN_FACE_X, MEAN_FACE_Y], axis=1)
    return (padding + points) / (1 + 2 * padding) * size


def sightline_points(points68: np.ndarray) -> np.ndarray:
    """``(68, 2)`` iBUG points → ``(5, 2) float32`` Sightline points (means of ``SIGHTLINE_GROUPS``)."""
    pts = np.asarray(points68, dtype=np.float64)
    return np.stack([pts[list(group)].mean(axis=0) for group in SIGHTLINE_GROUPS]).astype(np.float32)


def chip_template(size: int = CHIP, padding: float = PADDING) -> np.ndarray:
    """``(5, 2) float32``: Sightline's 5 points in dlib's ``size``-pixel chip (pixels), from dlib's
    mean face as ``get_face_chip_details`` places it. Read in Sightline's continuous coordinates this
    is exact where the chip has the image's scale; dlib's extraction (corners to pixel centres) draws
    it towards the centre by at most 1 / size of its distance from the centre at smaller scales."""
    return sightline_points(mean_face(size, padding))


# ---- parity with dlib on real photos ----

PORTRAITS = ("obama", "obama2", "obama3", "biden")


@dataclass(frozen=True)
class Face:
    """One face of a real photo in three 150 px chips, each ``(150, 150, 3) uint8`` RGB."""

    photo: str
    dlib_chip: np.ndarray        # dlib.get_face_chip of the 5-point predictor's shape (what dlib's users do)
    dlib_chip68: np.ndarray      # dlib.get_face_chip of the 68-point predictor's shape
    template_chip: np.ndarray    # the 68-point shape reduced to Sightline's 5 points, aligned onto
                                 # chip_template() by Sightline's align_face (fitted to ALIGN_POINTS)
    image: np.ndarray            # the photo (HxWx3 uint8 RGB) and Sightline's 5 points of the face in it
    points: np.ndarray


@dataclass(frozen=True)
class Parity:
    """dlib against ONNX Runtime on the same chips (dlib_chip)."""

    faces: int
    min_cosine: float
    max_abs_diff: float
    norms_dlib: tuple[float, float]              # (min, max) descriptor norm
    norms_onnx: tuple[float, float]
    portraits: dict[tuple[str, str], tuple[float, float]]   # (photo, photo) → Euclidean (dlib, ONNX)


@dataclass(frozen=True)
class TemplateCheck:
    """Euclidean distances ``(N,)`` between ONNX descriptors of two chips of each face."""

    to_dlib_chip: np.ndarray     # template_chip against dlib_chip
    to_dlib_chip68: np.ndarray   # template_chip against dlib_chip68 (the same landmarks)
    dlib_5_vs_68: np.ndarray     # dlib_chip68 against dlib_chip: dlib's own spread between predictors


def model_dir() -> Path:
    """The folder of dlib's model files in the face-recognition-models package."""
    return fetch(FACE_RECOGNITION_MODELS) / MODELS_SUBDIR


def real_photos() -> dict[str, np.ndarray]:
    """Name → ``HxWx3 uint8 RGB``: four portraits, the 1927 Solvay conference (29 faces), the astronaut."""
    tests = fetch(FACE_RECOGNITION) / "face_recognition-1.3.0/tests/test_images"
    paths = {name: tests / f"{name}.jpg" for name in PORTRAITS}
    paths["solvay"] = fetch(SCRFD) / "scrfd-0.3.0/images/solvay_conference_1927.jpg"
    paths["astronaut"] = fetch(SCIKIT_IMAGE) / "skimage/data/astronaut.png"
    return {name: np.asarray(Image.open(path).convert("RGB")) for name, path in paths.items()}


def find_faces(photos: dict[str, np.ndarray], models: Path) -> list[Face]:
    """Every face dlib's HOG detector finds (no upsampling) in each photo, in its two chips. The
    68-point predictor's weights are non-commercial: a reference for this check only."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    five = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    sixty_eight = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    template = chip_template() / CHIP
    faces = []
    for name, image in photos.items():
        for rect in detector(image, 0):
            shape = sixty_eight(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], np.float64) + 0.5   # to pixel-centre 0.5
            five_points = sightline_points(points)
            faces.append(Face(name, dlib.get_face_chip(image, five(image, rect), size=CHIP, padding=PADDING),
                              dlib.get_face_chip(image, shape, size=CHIP, padding=PADDING),
                              align_face(image, five_points, CHIP, template, list(ALIGN_POINTS)), image, five_points))
    return faces


def dlib_descriptors(dat_path: Path, chips: np.ndarray) -> np.ndarray:
    """``(N, 150, 150, 3) uint8`` RGB chips → ``(N, 128) float32`` by dlib itself."""
    import dlib

    net = dlib.face_recognition_model_v1(str(dat_path))
    return np.array(net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips]), np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def portrait_distances(faces: list[Face], desc: np.ndarray) -> dict[tuple[str, str], float]:
    """Euclidean distances between the first face of each pair of ``PORTRAITS``."""
    first = {name: desc[[f.photo for f in faces].index(name)] for name in PORTRAITS}
    return {(a, b): float(np.linalg.norm(first[a] - first[b]))
            for i, a in enumerate(PORTRAITS) for b in PORTRAITS[i + 1:]}


def compare(onnx_path: Path, dat_path: Path, faces: list[Face]) -> Parity:
    """dlib's descriptors of dlib's chips against ONNX Runtime's of the same chips."""
    chips = np.stack([f.dlib_chip for f in faces])
    ref, got = dlib_descriptors(dat_path, chips), onnx_descriptors(onnx_path, chips)
    norms = [np.linalg.norm(d, axis=1) for d in (ref, got)]
    by_dlib, by_onnx = portrait_distances(faces, ref), portrait_distances(faces, got)
    return Parity(faces=len(faces), min_cosine=float(cosines(ref, got).min()),
                  max_abs_diff=float(np.abs(ref - got).max()),
                  norms_dlib=(float(norms[0].min()), float(norms[0].max())),
                  norms_onnx=(float(norms[1].min()), float(norms[1].max())),
                  portraits={k: (by_dlib[k], by_onnx[k]) for k in by_dlib})


def check_template(onnx_path: Path, faces: list[Face]) -> TemplateCheck:
    """The template chips against dlib's chips, by the ONNX descriptors."""
    a, b, t = (onnx_descriptors(onnx_path, np.stack([getattr(f, k) for f in faces]))
               for k in ("dlib_chip", "dlib_chip68", "template_chip"))
    return TemplateCheck(to_dlib_chip=np.linalg.norm(t - a, axis=1), to_dlib_chip68=np.linalg.norm(t - b, axis=1),
                         dlib_5_vs_68=np.linalg.norm(b - a, axis=1))


def print_report(parity: Parity, template: TemplateCheck, faces: list[Face]) -> None:
    print(f"{parity.faces} faces ({', '.join(sorted({f.photo for f in faces}))}): min cosine "
          f"{parity.min_cosine:.7f}, max |dlib - onnx| {parity.max_abs_diff:.2e}")
    print(f"descriptor norms: dlib {parity.norms_dlib[0]:.4f}..{parity.norms_dlib[1]:.4f}, "
          f"onnx {parity.norms_onnx[0]:.4f}..{parity.norms_onnx[1]:.4f}")
    for (a, b), (d, o) in parity.portraits.items():
        print(f"  {a:>7} - {b:<7} dlib {d:.4f}  onnx {o:.4f}  ({'same' if o < 0.6 else 'different'})")
    for name, d in vars(template).items():
        print(f"template check, {name}: median {np.median(d):.4f}, max {d.max():.4f}")


def main(argv: list[str] | None = None) -> None:
    """``python -m training.pretrained.dlib_models --out PATH``: convert, then prove against dlib."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    args = parser.parse_args(argv)
    dat = model_dir() / RESNET_FILE
    path = export_resnet(dat, args.out, resnet_metadata(dat))
    print(f"wrote {path}; template (150 px chip): {chip_template().round(3).tolist()}")
    faces = find_faces(real_photos(), model_dir())
    print_report(compare(path, dat, faces), check_template(path, faces), faces)
    print(f"one ONNX Runtime run at batch 1 (CPU): {onnx_latency(path) * 1000:.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
