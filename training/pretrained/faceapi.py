"""face-api's SSD MobileNetV1 face detector and 68-point landmark net (the TF.js weights of the npm
package ``@vladmandic/face-api`` 1.7.15) ported to PyTorch, exported to ONNX, and proved against
face-api itself (TF.js 4.22, wasm backend, in Node.js: ``node/faceapi_reference.mjs``) on real photos.

What face-api does before its nets (``NetInput.toBatchTensor`` on an ``HxWx3`` image tensor):

- SSD (``toBatchTensor(512, false)``): zeros appended at the bottom or right to make the image
  square (``padToSquare``), then ``tf.image.resizeBilinear`` to 512x512 (align_corners=False,
  half_pixel_centers=False: source = destination * in / out), then ``x / 127.5 - 1``.
- Landmarks (``toBatchTensor(112, true)`` on the face box cut from the image, the box clipped to
  the image and floored, as ``extractFaceTensors``): zeros on both sides of the shorter axis
  (``round(diff / 2)`` after, the rest before), the same resize to 112x112, then
  ``(x - [122.782, 117.001, 104.298]) / 255`` in RGB order.

Our graphs start after that normalisation (it is in the metadata). The SSD decodes its anchors in
the graph; NMS stays outside. Boxes are ``(N, 4) float32 xyxy`` in pixels, per the repo's convention.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from app.imaging import decode_image
from app.models.metadata import validate_metadata
from app.vision.boxes import box_iou, nms
from training.onnx_export import export_onnx, parity
from training.pretrained.node import NODE_DIR, run_node
from training.pretrained.packages import FACE_API, FACE_RECOGNITION, SCIKIT_IMAGE, SCRFD, fetch

SSD_SIZE, LANDMARK_SIZE = 512, 112
SSD_MEAN, SSD_STD = (127.5,) * 3, (127.5,) * 3                  # pixels 0..255 → -1..1
LANDMARK_MEAN, LANDMARK_STD = (122.782, 117.001, 104.298), (255.0,) * 3
BOX_SCALES = (10.0, 10.0, 5.0, 5.0)                               # TF OD API coder: ty, tx, th, tw
MIN_CONFIDENCE, NMS_IOU, MAX_RESULTS = 0.5, 0.5, 100              # face-api's locateFaces defaults
REFERENCE_SCRIPT = NODE_DIR / "faceapi_reference.mjs"
QUANTIZED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


# ---- TF.js weights ------------------------------------------------------------------------------

def read_tfjs_weights(manifest: Path) -> dict[str, np.ndarray]:
    """A TF.js ``*-weights_manifest.json`` and its shards → name → array (manifest shape, float32 or
    int32). Quantized entries are dequantized as TF.js does: ``q * scale + min`` (uint8/uint16), or
    read as float16."""
    weights = {}
    for group in json.loads(Path(manifest).read_text()):
        data = b"".join((Path(manifest).parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            count, quant = math.prod(entry["shape"]), entry.get("quantization")
            stored = np.dtype(QUANTIZED[quant["dtype"]] if quant else entry["dtype"]).newbyteorder("<")
            values = np.frombuffer(data, stored, count, offset)
            offset += count * stored.itemsize
            if quant and quant["dtype"] != "float16":
                values = values * np.float64(quant["scale"]) + np.float64(quant["min"])
            dtype = np.int32 if entry["dtype"] == "int32" else np.float32
            values = np.round(values) if dtype is np.int32 else values
            weights[entry["name"]] = values.astype(dtype).reshape(entry["shape"])
        if offset != len(data):
            raise ValueError(f"{manifest}: the manifest describes {offset} bytes, the shards hold {len(data)}")
    return weights


def js_round(x: float) -> int:
    """JavaScript's ``Math.round``: halves go up (Python's ``round`` goes to even)."""
    return math.floor(x + 0.5)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's ``'same'`` padding of one axis of ``size`` cells: ``(before, after)``, the odd cell after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution padded as TF's ``'same'`` for a square input of ``size`` pixels (asymmetric
    where TF's is: a stride-2 3x3 on an even input pads 0 before, 1 after)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__(cin, cout, kernel, stride, groups=groups, bias=bias)
        before, after = tf_same_padding(size, kernel, stride)
        self.pad = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def set_conv(conv: nn.Conv2d, filters: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Copy TF filters into ``conv``: ``(kh, kw, in, out)``, or ``(kh, kw, C, 1)`` for a depthwise one."""
    order = (2, 3, 0, 1) if conv.groups > 1 else (3, 2, 0, 1)
    conv.weight.data = torch.from_numpy(np.ascontiguousarray(filters.transpose(order)))
    if bias is not None:
        conv.bias.data = torch.from_numpy(bias.copy())


# ---- SSD MobileNetV1 ----------------------------------------------------------------------------

def relu6_conv(cin: int, cout: int, kernel: int, stride: int, size: int) -> nn.Sequential:
    """face-api's ``pointwiseConvLayer``: conv (batch norm folded into its bias), then relu6."""
    return nn.Sequential(SameConv2d(cin, cout, kernel, stride, size), nn.ReLU6())


def depthwise_bn(channels: int, stride: int, size: int) -> nn.Sequential:
    """MobileNetV1's depthwise 3x3, batch norm (TF's epsilon 1e-3), relu6."""
    return nn.Sequential(SameConv2d(channels, channels, 3, stride, size, groups=channels, bias=False),
                         nn.BatchNorm2d(channels, eps=1e-3), nn.ReLU6())


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """TF Object Detection API's ``FasterRcnnBoxCoder`` (scales 10, 10, 5, 5), as face-api's
    ``outputLayer``: ``codes (B, N, 4)`` ty, tx, th, tw and ``anchors (N, 4)`` ymin, xmin, ymax,
    xmax (fractions) → ``(B, N, 4)`` x1, y1, x2, y2 (fractions)."""
    size = anchors[:, 2:] - anchors[:, :2]                       # h, w
    centre = anchors[:, :2] + size / 2                           # cy, cx
    middle = codes[..., :2] / BOX_SCALES[0] * size + centre
    half = torch.exp(codes[..., 2:] / BOX_SCALES[2]) * size / 2
    return torch.cat([middle - half, middle + half], dim=-1)[..., [1, 0, 3, 2]]


class SsdMobilenetV1(nn.Module):
    """``(B, 3, 512, 512)`` input (``x / 127.5 - 1``, RGB) → ``(B, 5118, 5)``: per anchor x1, y1,
    x2, y2 in input pixels and the face probability (sigmoid of the face logit, as face-api)."""

    # (in, out, depthwise stride) of MobileNetV1's 13 depthwise-separable pairs
    PAIRS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
             *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]
    EXTRA = [(1024, 256, 1, 1), (256, 512, 3, 2), (512, 128, 1, 1), (128, 256, 3, 2),
             (256, 128, 1, 1), (128, 256, 3, 2), (256, 64, 1, 1), (64, 128, 3, 2)]   # in, out, k, stride
    HEADS = [(512, 3), (1024, 6), (512, 6), (256, 6), (256, 6), (128, 6)]   # channels, anchors per cell

    def __init__(self, size: int = SSD_SIZE) -> None:
        super().__init__()
        self.size = size
        self.conv0 = relu6_conv(3, 32, 3, 2, size)
        size //= 2
        self.pairs = nn.ModuleList()
        for cin, cout, stride in self.PAIRS:
            self.pairs.append(nn.Sequential(depthwise_bn(cin, stride, size), relu6_conv(cin, cout, 1, 1, size // stride)))
            size //= stride
        self.extra = nn.ModuleList()
        for cin, cout, k, stride in self.EXTRA:
            self.extra.append(relu6_conv(cin, cout, k, stride, size))
            size //= stride
        self.box_heads = nn.ModuleList(nn.Conv2d(c, 4 * a, 1) for c, a in self.HEADS)
        self.class_heads = nn.ModuleList(nn.Conv2d(c, 3 * a, 1) for c, a in self.HEADS)
        self.register_buffer("anchors", torch.zeros(5118, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)                                        # (B, 32, 256, 256)
        for i, pair in enumerate(self.pairs, 1):
            x = pair(x)
            if i == 11:
                maps = [x]                                       # (B, 512, 32, 32)
        maps.append(x)                                           # (B, 1024, 16, 16)
        for i, layer in enumerate(self.extra):
            x = layer(x)
            if i % 2:
                maps.append(x)                                   # 8, 4, 2, 1 cells
        b = x.shape[0]
        codes = torch.cat([h(m).permute(0, 2, 3, 1).reshape(b, -1, 4) for h, m in zip(self.box_heads, maps)], 1)
        logits = torch.cat([h(m).permute(0, 2, 3, 1).reshape(b, -1, 3) for h, m in zip(self.class_heads, maps)], 1)
        boxes = decode_boxes(codes, self.anchors) * self.size
        return torch.cat([boxes, torch.sigmoid(logits[..., 1:2])], dim=-1)

    @classmethod
    def from_tfjs(cls, w: dict[str, np.ndarray]) -> SsdMobilenetV1:
        model = cls()

        def pointwise(seq: nn.Sequential, prefix: str) -> None:
            set_conv(seq[0], w[f"{prefix}/weights"], w[f"{prefix}/convolution_bn_offset"])

        pointwise(model.conv0, "MobilenetV1/Conv2d_0_pointwise")
        for i, (dw, pw) in enumerate(model.pairs, 1):
            p = f"MobilenetV1/Conv2d_{i}_depthwise"
            set_conv(dw[0], w[f"{p}/depthwise_weights"])
            bn = dw[1]
            for name, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                              ("running_var", "moving_variance")):
                getattr(bn, name).data = torch.from_numpy(w[f"{p}/BatchNorm/{key}"].copy())
            pointwise(pw, f"MobilenetV1/Conv2d_{i}_pointwise")
        for i, layer in enumerate(model.extra):
            pointwise(layer, f"Prediction/Conv2d_{i}_pointwise")
        for i, (box, cls_) in enumerate(zip(model.box_heads, model.class_heads)):
            p = f"Prediction/BoxPredictor_{i}"
            set_conv(box, w[f"{p}/BoxEncodingPredictor/weights"], w[f"{p}/BoxEncodingPredictor/biases"])
            set_conv(cls_, w[f"{p}/ClassPredictor/weights"], w[f"{p}/ClassPredictor/biases"])
        model.anchors.copy_(torch.from_numpy(w["Output/extra_dim"].reshape(-1, 4)))
        return model.eval()


# ---- 68-point landmarks -------------------------------------------------------------------------

class SeparableConv(nn.Module):
    """``tf.separableConv2d`` then the bias: depthwise 3x3 (no bias), pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, size: int) -> None:
        super().__init__()
        self.depthwise = SameConv2d(cin, cin, 3, stride, size, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DenseBlock(nn.Module):
    """face-api's ``denseBlock4``: a stride-2 conv, then 3 separable convs each fed the relu of the
    sum of all previous outputs; ``(B, cin, S, S)`` → ``(B, cout, S / 2, S / 2)``."""

    def __init__(self, cin: int, cout: int, size: int, first: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList([SameConv2d(cin, cout, 3, 2, size) if first else SeparableConv(cin, cout, 2, size),
                                    *(SeparableConv(cout, cout, 1, size // 2) for _ in range(3))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = torch.relu(self.convs[0](x))
        out2 = self.convs[1](out1)
        out3 = self.convs[2](torch.relu(out1 + out2))
        out4 = self.convs[3](torch.relu(out1 + out2 + out3))
        return torch.relu(out1 + out2 + out3 + out4)


class FaceLandmark68Net(nn.Module):
    """``(B, 3, 112, 112)`` input (``(x - mean_rgb) / 255``) → ``(B, 136)``: x, y of 68 points as
    fractions of the input side (iBUG 300-W order)."""

    def __init__(self, size: int = LANDMARK_SIZE) -> None:
        super().__init__()
        widths = [3, 32, 64, 128, 256]
        self.blocks = nn.Sequential(*(DenseBlock(widths[i], widths[i + 1], size >> i, i == 0) for i in range(4)))
        self.pool = nn.AvgPool2d(7, 2)                           # 7x7 → 1x1 (TF 'valid')
        self.fc = nn.Linear(256, 136)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(x)).flatten(1))

    @classmethod
    def from_tfjs(cls, w: dict[str, np.ndarray]) -> FaceLandmark68Net:
        model = cls()
        for b, block in enumerate(model.blocks):
            for c, conv in enumerate(block.convs):
                p = f"dense{b}/conv{c}"
                if isinstance(conv, SeparableConv):
                    set_conv(conv.depthwise, w[f"{p}/depthwise_filter"])
                    set_conv(conv.pointwise, w[f"{p}/pointwise_filter"], w[f"{p}/bias"])
                else:
                    set_conv(conv, w[f"{p}/filters"], w[f"{p}/bias"])
        model.fc.weight.data = torch.from_numpy(np.ascontiguousarray(w["fc/weights"].T))
        model.fc.bias.data = torch.from_numpy(w["fc/bias"].copy())
        return model.eval()


def model_dir() -> Path:
    return fetch(FACE_API) / "package" / "model"


def load_ssd() -> SsdMobilenetV1:
    return SsdMobilenetV1.from_tfjs(read_tfjs_weights(model_dir() / "ssd_mobilenetv1_model-weights_manifest.json"))


def load_landmarks() -> FaceLandmark68Net:
    return FaceLandmark68Net.from_tfjs(read_tfjs_weights(model_dir() / "face_landmark_68_model-weights_manifest.json"))


# ---- face-api's input tensors, in numpy ---------------------------------------------------------

def pad_to_square(image: np.ndarray, centre: bool) -> np.ndarray:
    """face-api's ``padToSquare``: ``HxWx3`` → ``SxSx3`` float32, S = max(H, W), zeros appended after
    the shorter axis (``centre``: ``round(diff / 2)`` after, the rest before)."""
    h, w = image.shape[:2]
    diff = abs(h - w)
    after = js_round(diff / 2) if centre else diff
    pad = (diff - after, after)
    return np.pad(image.astype(np.float32), (pad if h < w else (0, 0), pad if w < h else (0, 0), (0, 0)))


def resize_bilinear_tf(image: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resizeBilinear(image, [size, size], alignCorners=false, halfPixelCenters=false)``:
    ``HxWxC`` → ``size x size x C`` float32; output cell i reads source ``i * in / size``."""
    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size, dtype=np.float32) * np.float32(n / size)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n - 1), (src - lo).astype(np.float32)

    image = image.astype(np.float32)
    (y0, y1, fy), (x0, x1, fx) = axis(image.shape[0]), axis(image.shape[1])
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx
    return top + (bottom - top) * fy


def ssd_pixels(image: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` RGB photo → ``512x512x3 float32`` pixels as face-api feeds its SSD (before
    the ``x / 127.5 - 1``)."""
    return resize_bilinear_tf(pad_to_square(image, centre=False), SSD_SIZE)


def landmark_pixels(face: np.ndarray) -> np.ndarray:
    """``HxWx3`` face crop → ``112x112x3 float32`` pixels as face-api feeds its landmark net."""
    return resize_bilinear_tf(pad_to_square(face, centre=True), LANDMARK_SIZE)


def to_input(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(B, S, S, 3) float32`` RGB pixels → ``(B, 3, S, S) float32`` ``(x - mean) / std``."""
    out = (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def face_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """face-api's ``extractFaceTensors``: the ``(4,)`` xyxy box (image pixels) clipped to the image,
    its x, y, width and height each floored, cut out of ``HxWx3`` ``image``."""
    h, w = image.shape[:2]
    x, y = max(box[0], 0.0), max(box[1], 0.0)
    bw, bh = min(box[2] - x, w - x), min(box[3] - y, h - y)
    x, y, bw, bh = (math.floor(v) for v in (x, y, bw, bh))
    return image[y:y + bh, x:x + bw]


def to_photo(boxes: np.ndarray, width: int, height: int, size: int = SSD_SIZE) -> np.ndarray:
    """``(N, 4)`` xyxy boxes in SSD input pixels → photo pixels, as ``locateFaces`` maps them: boxes
    clipped to the input, then scaled by ``width / round(width * size / max(width, height))`` (and
    the same for y)."""
    scale = size / max(width, height)
    per_x, per_y = width / js_round(width * scale), height / js_round(height * scale)
    return (np.clip(boxes, 0, size) * np.float32([per_x, per_y, per_x, per_y])).astype(np.float32)


def final_detections(raw: np.ndarray, min_confidence: float = MIN_CONFIDENCE, iou: float = NMS_IOU,
                     max_results: int = MAX_RESULTS) -> np.ndarray:
    """face-api's ``locateFaces`` after its net: ``raw (N, 5)`` → ``(K, 5)`` x1, y1, x2, y2 (input
    pixels, clipped to the input), score; scores strictly above ``min_confidence``, greedy NMS
    (suppressed above ``iou``, app.vision's ``nms``), best first, at most ``max_results``."""
    rows = raw[raw[:, 4] > min_confidence]
    keep = nms(rows[:, :4], rows[:, 4], iou)[:max_results]
    out = rows[keep].astype(np.float32)
    out[:, :4] = np.clip(out[:, :4], 0, SSD_SIZE)
    return out
