"""Transfer learning for ``python -m training.detect train --init-from``: start a detector from
another model's weights, and say what was kept.

From an ONNX file (a Sightline detector, or a converted real model such as face-api's SSD
MobileNetV1 in ``models/face_detector.onnx``): the detector's *backbone* convolutions are matched to
the file's first convolutions in execution order, shape for shape (kernel, stride, groups), and the
match stops at the first that differs, so a convolution is never taken from another part of the
file. The neck and heads are copied (where their shapes agree) only from a Sightline detector whose
whole backbone was copied; any other file's later layers are its own neck and head (an SSD's extra
layers and box predictors), left alone. Nothing copied is an error (``TransferError``), not a
silently random start.

The file's batch norms are folded into its convolutions: a copied convolution gets the folded
weights and bias, and its batch norm is re-opened so that it computes exactly what the file
computes in eval mode (``onnx_weights``). ``calibrate_batch_norm`` then sets each such batch norm's
statistics to those measured on training images, so that training mode (batch statistics) also
starts from the file's function instead of re-scaling every channel. A model whose first
convolution was copied takes the file's input normalisation (its metadata), so the copied layers
see the inputs they were trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.detect.model import Detector, DetectorConfig, make_backbone
from training.detect.onnx_weights import _batch_norm_after, _execution_order, copy_folded as _copy


class TransferError(ValueError):
    """``--init-from`` names a file whose weights this detector cannot take."""


@dataclass(frozen=True)
class SourceConv:
    name: str
    weight: np.ndarray            # (out, in / groups, kh, kw)
    bias: np.ndarray              # (out,), zeros where the file has none
    stride: tuple[int, int]
    groups: int


@dataclass
class SourceFile:
    path: Path
    meta: dict                    # its metadata_props, JSON-decoded ({} when it has none)
    convs: list[SourceConv]       # in graph order, which is execution order for these chains

    @property
    def layout(self) -> str:
        """``"sightline"``: a Sightline detector, whose node names mark its backbone; ``"other"``."""
        named = any(c.name.startswith("/backbone/") for c in self.convs)
        return "sightline" if self.meta.get("family") == "anchor-yolo" and named else "other"

    def sections(self) -> tuple[list[SourceConv], list[SourceConv]]:
        """The convolutions that may start the backbone, and those that may start neck and heads."""
        if self.layout == "sightline":
            return ([c for c in self.convs if c.name.startswith("/backbone/")],
                    [c for c in self.convs if not c.name.startswith("/backbone/")])
        return self.convs, []

    def describe(self) -> str:
        """``face_detector (npm:... ; licence Apache-2.0)``: what the file says it is."""
        parts = [str(self.meta[k]) for k in ("source",) if self.meta.get(k)]
        if self.meta.get("license"):
            parts.append(f"licence {self.meta['license']}")
        name = self.meta.get("name") or self.path.stem
        return f"{name} ({'; '.join(parts)})" if parts else str(name)


def read_source(path: Path) -> SourceFile:
    """An ONNX file's convolutions with constant weights, in graph order, and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise TransferError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds for a file that is not ONNX
        raise TransferError(f"{path}: not an ONNX file ({exc})") from exc
    graph = model.graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    convs = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in tensors:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = tensors[node.input[1]].astype(np.float32)
        bias = (tensors[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] in tensors
                else np.zeros(weight.shape[0], np.float32))
        convs.append(SourceConv(node.name, weight, bias, tuple(attrs.get("strides", (1, 1))), attrs.get("group", 1)))
    meta = {}
    for prop in model.metadata_props:
        try:
            meta[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            meta[prop.key] = prop.value
    return SourceFile(path, meta, convs)


def _fits(conv: nn.Conv2d, src: SourceConv) -> bool:
    return (tuple(conv.weight.shape) == src.weight.shape and tuple(conv.stride) == src.stride
            and conv.groups == src.groups)


def _shape(conv: nn.Conv2d | SourceConv) -> str:
    weight = conv.weight
    groups = conv.groups
    stride = tuple(conv.stride)
    return f"{tuple(weight.shape)} stride {stride[0]}{f' groups {groups}' if groups > 1 else ''}"


def _prefix(convs: list[nn.Conv2d], source: list[SourceConv]) -> int:
    k = 0
    while k < min(len(convs), len(source)) and _fits(convs[k], source[k]):
        k += 1
    return k


def _suggestion(src: SourceFile, size: int) -> str:
    """Which backbone options would take the file's weights, tried on the known architectures."""
    arch = src.meta.get("architecture") if isinstance(src.meta.get("architecture"), dict) else {}
    tries = [DetectorConfig(backbone="mobilenetv1", width=w) for w in (1.0, 0.75, 0.5, 0.25)]
    if arch:
        keys = ("backbone", "width", "depth", "expansion")
        tries.insert(0, DetectorConfig(**{k: arch[k] for k in keys if k in arch}))
    head, _ = src.sections()
    for cfg in tries:
        convs = _execution_order(make_backbone(cfg), torch.zeros(1, 3, size, size))
        if (k := _prefix(convs, head)) > 0:
            opts = f"--backbone {cfg.backbone} --width {cfg.width:g}"
            if cfg.backbone == "mobilenetv2":
                opts += f" --depth {cfg.depth:g} --expansion {cfg.expansion}"
            return f"; with {opts} its first {k} (of that backbone's {len(convs)}) would be copied"
    return "; it matches none of this detector's backbones (mobilenetv2, mobilenetv1)"


@dataclass
class Transfer:
    """What ``transfer_from_onnx`` kept, and from what."""

    source: SourceFile
    backbone: str
    backbone_copied: int
    backbone_total: int
    rest_copied: int
    rest_total: int
    rest_note: str
    normalization: tuple[list[float], list[float]] | None   # adopted from the file (mean, std), or None
    copied: list[nn.Conv2d] = field(default_factory=list, repr=False)
    calibrated_on: int = 0                                    # training images the batch norms were measured on

    def lines(self) -> list[str]:
        name = self.source.path.name
        out = [f"init-from {self.source.path}: {self.source.describe()}",
               f"  backbone ({self.backbone}): {self.backbone_copied}/{self.backbone_total} convolutions copied "
               f"from {name}" + ("" if self.backbone_copied == self.backbone_total else
                                 f"; the other {self.backbone_total - self.backbone_copied} left as initialised "
                                 "(the match stops at the first shape that differs)"),
               f"  neck and heads: {self.rest_copied}/{self.rest_total} copied, "
               f"{self.rest_total - self.rest_copied} left as initialised ({self.rest_note})"]
        if self.normalization:
            mean, std = self.normalization
            out.append(f"  input normalisation: (x / 255 - {_fmt(mean)}) / {_fmt(std)}, {name}'s (its metadata)")
        else:
            out.append("  input normalisation: the detector's default (the file's first convolution was not "
                       "copied, or its metadata gives none)")
        if self.calibrated_on:
            out.append(f"  batch norm: the copied layers' statistics measured on {self.calibrated_on} training "
                       "images (training starts from the file's function)")
        return out

    def record(self) -> dict:
        """What the checkpoint and the exported metadata keep of it."""
        return {"file": self.source.path.name, "name": self.source.meta.get("name"),
                "source": self.source.meta.get("source"), "license": self.source.meta.get("license"),
                "backbone": self.backbone, "backbone_copied": self.backbone_copied,
                "backbone_total": self.backbone_total, "neck_heads_copied": self.rest_copied,
                "neck_heads_total": self.rest_total}


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


@torch.no_grad()
def transfer_from_onnx(model: Detector, path: Path, example: torch.Tensor | None = None) -> Transfer:
    """Copy what fits of ``path`` into ``model`` (see the module's docstring); ``model.cfg`` takes the
    file's input normalisation when its first convolution was copied. ``TransferError`` when nothing
    of the backbone matches."""
    src = read_source(path)
    if example is None:
        example = torch.zeros(1, 3, model.cfg.input_size, model.cfg.input_size)
    order = _execution_order(model, example)
    in_backbone = {id(m) for m in model.backbone.modules()}
    backbone = [c for c in order if id(c) in in_backbone]
    rest = [c for c in order if id(c) not in in_backbone]
    src_backbone, src_rest = src.sections()
    bns = _batch_norm_after(model)
    cfg = model.cfg
    k = _prefix(backbone, src_backbone)
    if k == 0:
        first = f"its first convolution is {_shape(src_backbone[0])}" if src_backbone else "it has no convolution"
        raise TransferError(
            f"{src.path}: nothing to copy into a {cfg.backbone} backbone (width {cfg.width:g}): {first}, the "
            f"backbone's first is {_shape(backbone[0])}" + (_suggestion(src, 64) if src_backbone else ""))
    weights = [(s.weight, s.bias) for s in src_backbone[:k]]
    normalization = None
    norm = src.meta.get("normalization")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        normalization = ([float(v) for v in norm["mean"]], [float(v) for v in norm["std"]])
        if norm.get("color") == "BGR":          # the file reads BGR; ours reads RGB: swap its input channels
            weights[0] = (weights[0][0][:, ::-1], weights[0][1])
        cfg.norm_mean, cfg.norm_std = tuple(normalization[0]), tuple(normalization[1])
    for conv, (w, b) in zip(backbone, weights):
        _copy(conv, bns, w, b)
    copied = backbone[:k]
    rest_copied = 0
    if src.layout != "sightline":
        note = (f"the file's other {len(src.convs) - k} convolutions are its own layers after the backbone, "
                "not this detector's neck and heads"
                if k == len(backbone) else "only a Sightline detector's neck and heads are copied")
    elif k < len(backbone) or len(src_backbone) != len(backbone):
        note = "the backbone was not copied whole"
    else:
        for conv, s in zip(rest, src_rest):
            if _fits(conv, s):
                _copy(conv, bns, s.weight, s.bias)
                copied.append(conv)
                rest_copied += 1
        note = "shapes differ: other classes or anchors" if rest_copied < len(rest) else "all copied"
    return Transfer(src, cfg.backbone, k, len(backbone), rest_copied, len(rest), note, normalization, copied)


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, convs: list[nn.Conv2d], batches: Iterable[torch.Tensor]) -> int:
    """Set the batch norm after each of ``convs`` (copied, its batch norm re-opened as the identity
    plus a bias ``b``) to the statistics of its convolution's output ``z`` over ``batches`` of
    ``(B, 3, S, S)`` images: ``running_mean = mean(z)``, ``running_var = var(z)``, and weight and bias
    rescaled so that eval mode still computes what it did (``z + b``: from the identity, ``weight =
    sqrt(var + eps)``, ``bias = b + mean``); training mode, which normalises by the batch's
    statistics, then starts close to it too. Returns how many batch norms were set."""
    bns = _batch_norm_after(model)
    targets = [c for c in convs if c in bns]
    sums = {c: [0.0, 0.0, 0] for c in targets}          # per conv: sum z, sum z^2 (per channel), count

    def accumulate(mod: nn.Module, _inputs, out: torch.Tensor) -> None:
        z = out.detach().double()
        acc = sums[mod]
        acc[0] = acc[0] + z.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (z * z).sum(dim=(0, 2, 3))
        acc[2] += z.numel() // z.shape[1]

    hooks = [c.register_forward_hook(accumulate) for c in targets]
    was_training = model.training
    try:
        model.eval()
        for images in batches:
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for conv in targets:
        total, squares, n = sums[conv]
        if not n:
            continue
        bn = bns[conv]
        mean = (total / n).float()
        var = (squares / n - (total / n) ** 2).clamp(min=0).float()
        # the same eval-mode function, w (z - m) / sqrt(v + eps) + b, around the measured statistics
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bn.bias.add_(gain * (mean - bn.running_mean))
        bn.weight.copy_(gain * torch.sqrt(var + bn.eps))
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return len(targets)
