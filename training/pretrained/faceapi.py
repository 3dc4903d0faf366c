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

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from app.imaging import decode_image
from app.models.metadata import validate_metadata
from app.vision.boxes import box_iou, nms
from app.vision.tiles import cut_by_inner_edge, windows
from training.onnx_export import export_onnx
from training.pretrained.node import NODE_DIR, run_node
from training.pretrained.packages import FACE_API, FACE_RECOGNITION, SCIKIT_IMAGE, SCRFD, fetch

SSD_SIZE, LANDMARK_SIZE = 512, 112
SSD_MEAN, SSD_STD = (127.5,) * 3, (127.5,) * 3                  # pixels 0..255 → -1..1
LANDMARK_MEAN, LANDMARK_STD = (122.782, 117.001, 104.298), (255.0,) * 3
BOX_SCALES = (10.0, 10.0, 5.0, 5.0)                               # TF OD API coder: ty, tx, th, tw
MIN_CONFIDENCE, NMS_IOU, MAX_RESULTS = 0.5, 0.5, 100              # face-api's locateFaces defaults
SCORE_TOL, BOX_TOL, LANDMARK_TOL = 1e-3, 0.5, 0.5                # parity: probability, px at 512, px at 112
# The smallest face (input pixels) found reliably, measured on the Solvay photo tiled at lower
# scales: all 29 faces at scale 0.3 (23 to 35 px at the input), 28 at 0.25, 25 at 0.2 (16-20 px missed).
MIN_FACE = 24.0
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
    """A convolution padded as TF's ``'same'`` for a square input of ``size`` pixels: by the conv
    itself where TF's padding is symmetric, by an explicit pad where it is not (a stride-2 3x3 on
    an even input pads 0 before, 1 after)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
                 bias: bool = True) -> None:
        before, after = tf_same_padding(size, kernel, stride)
        super().__init__(cin, cout, kernel, stride, padding=before if before == after else 0, groups=groups, bias=bias)
        self.pad = None if before == after else (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.pad is None else F.pad(x, self.pad))


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
            pointwise = relu6_conv(cin, cout, 1, 1, size // stride)
            self.pairs.append(nn.Sequential(depthwise_bn(cin, stride, size), pointwise))
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
    if image.shape[:2] == (size, size):
        return image                                             # face-api skips the resize too
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


# ---- export -------------------------------------------------------------------------------------

def export_ssd(out_path: Path, metadata: dict) -> Path:
    """The SSD as ONNX (dynamic batch, 512x512 input) with ``metadata`` in the file."""
    model = load_ssd()
    example = torch.from_numpy(to_input(np.full((1, SSD_SIZE, SSD_SIZE, 3), 128, np.float32), SSD_MEAN, SSD_STD))
    return export_onnx(model, example, out_path, metadata)


def export_landmarks(out_path: Path, metadata: dict) -> Path:
    """The 68-point net as ONNX (dynamic batch, 112x112 input) with ``metadata`` in the file."""
    model = load_landmarks()
    return export_onnx(model, torch.zeros(1, 3, LANDMARK_SIZE, LANDMARK_SIZE), out_path, metadata)


def _weights_sha256(name: str) -> str:
    return hashlib.sha256((model_dir() / f"{name}.bin").read_bytes()).hexdigest()


def _normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    """face-api's ``(x - mean) / std`` on pixels as Sightline's ``(x / 255 - mean) / std``."""
    return {"color": "RGB", "mean": [m / 255 for m in mean], "std": [s / 255 for s in std]}


def ssd_metadata(min_face: float) -> dict:
    """Sightline's ``ssd-boxes`` metadata of the converted SSD, validated by the app's contract."""
    return validate_metadata({
        "name": "faceapi-ssd-mobilenetv1", "task": "face_detection", "family": "ssd-boxes",
        "version": FACE_API.version, "input_size": SSD_SIZE, "fixed_size": True,
        "normalization": _normalization(SSD_MEAN, SSD_STD), "class_names": ["face"], "boxes": 5118,
        "min_face": min_face, "score_threshold": MIN_CONFIDENCE, "pad": "bottom_right",
        "license": "Apache-2.0", "weights_sha256": _weights_sha256("ssd_mobilenetv1_model"),
        "source": f"{FACE_API.label} model/ssd_mobilenetv1_model.bin (TF OD API SSD MobileNetV1, WIDER FACE)",
    }, "faceapi ssd").model_dump(mode="json")


def landmark_metadata() -> dict:
    """Sightline's ``crop-landmarks`` metadata of the converted 68-point net: the 5 served points are
    the means of the eyes' 6 points (36-41, 42-47), the nose tip (30) and the mouth corners (48, 54);
    the crop is the face box, centred in a square (face-api pads it with zeros)."""
    return validate_metadata({
        "name": "faceapi-landmark68", "task": "face_landmarks", "family": "crop-landmarks",
        "version": FACE_API.version, "input_size": LANDMARK_SIZE, "fixed_size": True,
        "normalization": _normalization(LANDMARK_MEAN, LANDMARK_STD), "points": 68,
        "point_groups": [list(range(36, 42)), list(range(42, 48)), [30], [48], [54]], "crop_margin": 1.0,
        "license": "MIT", "weights_sha256": _weights_sha256("face_landmark_68_model"),
        "source": f"{FACE_API.label} model/face_landmark_68_model.bin",
    }, "faceapi landmarks").model_dump(mode="json")


# ---- the reference: face-api in Node.js ---------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """face-api's answers. ``ssd_raw (N, 5118, 5)``: its decoded boxes (x1, y1, x2, y2 at 512) and
    scores before NMS; ``detections``: its ``locateFaces`` (K, 5) per input; ``points (M, 68, 2)``
    at 112; ``batch_tensors``: its ``toBatchTensor`` of the photos asked; milliseconds per call."""

    ssd_raw: np.ndarray
    detections: list[np.ndarray]
    points: np.ndarray
    batch_tensors: list[np.ndarray]
    ssd_ms: float
    landmark_ms: float
    versions: dict


def _write(array: np.ndarray, path: Path) -> dict:
    np.ascontiguousarray(array, dtype="<f4").tofile(path)
    return {"input": str(path), "shape": list(array.shape)}


def run_reference(ssd_inputs: np.ndarray, landmark_inputs: np.ndarray, work: Path,
                  batch_tensors: list[tuple[np.ndarray, int, bool]] = ()) -> Reference:
    """Run face-api on ``ssd_inputs (N, 512, 512, 3)`` and ``landmark_inputs (M, 112, 112, 3)``
    float32 pixels (one tensor at a time), and its ``toBatchTensor(size, centre)`` on each
    ``(image, size, centre)`` of ``batch_tensors``; files go under ``work``."""
    request = {"model_dir": str(model_dir()),
               "ssd": [_write(x[None], work / f"ssd{i}.f32") for i, x in enumerate(ssd_inputs)],
               "landmarks": [_write(x[None], work / f"lm{i}.f32") for i, x in enumerate(landmark_inputs)],
               "batch_tensor": [{**_write(img.astype(np.float32), work / f"photo{i}.f32"), "size": size,
                                 "center": centre, "output": str(work / f"batch{i}.f32")}
                                for i, (img, size, centre) in enumerate(batch_tensors)]}
    answer = run_node(REFERENCE_SCRIPT, request)
    raw = [np.concatenate([np.float32(a["boxes_yxyx"]).reshape(-1, 4)[:, [1, 0, 3, 2]] * SSD_SIZE,
                           np.float32(a["scores"])[:, None]], axis=1) for a in answer["ssd"]]
    dets = [np.float32([[*d["box"], d["score"]] for d in a["detections"]]).reshape(-1, 5) for a in answer["ssd"]]
    batches = [np.fromfile(b["output"], "<f4").reshape(b["shape"][1:]) for b in answer["batch_tensor"]]
    return Reference(ssd_raw=np.stack(raw) if raw else np.zeros((0, 5118, 5), np.float32), detections=dets,
                     points=np.float32([a["points"] for a in answer["landmarks"]]).reshape(-1, 68, 2),
                     batch_tensors=batches, ssd_ms=float(np.median([a["ms"] for a in answer["ssd"]] or [0])),
                     landmark_ms=float(np.median([a["ms"] for a in answer["landmarks"]] or [0])),
                     versions=answer["versions"])


# ---- parity on real photos ----------------------------------------------------------------------

def read_photo(path: Path) -> np.ndarray:
    """A photo as ``HxWx3 uint8`` RGB through the server's own decoder (EXIF, grey → RGB)."""
    return decode_image(Path(path).read_bytes(), max_pixels=50_000_000).rgb


FACELESS = ("coffee.png", "rocket.jpg", "motorcycle_left.png")     # scikit-image photos with no face
SOLVAY_STARTS = [(100, 720), (1000, 760), (2050, 800)]   # top-left corners of windows with 4 to 6 faces


def solvay_tiles(photo: np.ndarray, starts: list[tuple[int, int]], size: int = SSD_SIZE) -> dict[str, np.ndarray]:
    """512x512 windows of the group photo at scale 1.0 (its faces, ~100 px, stay that size)."""
    return {f"solvay@{x},{y}": photo[y:y + size, x:x + size] for x, y in starts}


def parity_photos() -> dict[str, np.ndarray]:
    """The real photos the port is checked on: portraits, an astronaut, three windows of the 1927
    Solvay group photo, three photos with no face (coffee, a rocket, a motorcycle) and a cat (whose
    face the SSD, face-api included, takes for a human one at 0.93)."""
    portraits = fetch(FACE_RECOGNITION) / "face_recognition-1.3.0" / "tests" / "test_images"
    skimage = fetch(SCIKIT_IMAGE) / "skimage" / "data"
    photos = {name: read_photo(portraits / f"{name}.jpg") for name in ("obama", "obama2", "biden")}
    photos["astronaut"] = read_photo(skimage / "astronaut.png")
    solvay = read_photo(fetch(SCRFD) / "scrfd-0.3.0" / "images" / "solvay_conference_1927.jpg")
    photos.update(solvay_tiles(solvay, SOLVAY_STARTS))
    for name in FACELESS + ("chelsea.png",):
        photos[name.split(".")[0]] = read_photo(skimage / name)
    return photos


@dataclass(frozen=True)
class SsdParity:
    """One photo's SSD, ours (ONNX Runtime) against face-api's. Diffs are maxima over the anchors
    where either side scores above ``SCORED`` (``anchors`` of them); boxes in pixels at 512."""

    name: str
    score_diff: float
    box_diff: float
    anchors: int
    ours: np.ndarray        # (K, 5) our detections after face-api's NMS, input pixels
    theirs: np.ndarray      # (K', 5) face-api's locateFaces
    match: bool             # same count, and each pair (in order) with IoU > 0.99


SCORED = 0.05


def compare_ssd(name: str, ours: np.ndarray, theirs_raw: np.ndarray, theirs: np.ndarray) -> SsdParity:
    """``ours``, ``theirs_raw``: ``(5118, 5)``; ``theirs``: face-api's final ``(K, 5)``."""
    scored = (ours[:, 4] > SCORED) | (theirs_raw[:, 4] > SCORED)
    diff = np.abs(ours[scored] - theirs_raw[scored])
    mine = final_detections(ours)
    match = len(mine) == len(theirs) and bool(np.all(np.diag(box_iou(mine[:, :4], theirs[:, :4])) > 0.99))
    return SsdParity(name, float(diff[:, 4].max(initial=0)), float(diff[:, :4].max(initial=0)),
                     int(scored.sum()), mine, theirs, match)


@dataclass(frozen=True)
class Parity:
    ssd: list[SsdParity]
    landmark_diffs: dict[str, float]     # crop name → max |ours - face-api| in pixels at 112
    preprocess_diffs: dict[str, float]   # our pad + resize against face-api's toBatchTensor, pixel units
    ort_ssd_ms: float
    ort_landmark_ms: float
    reference: Reference


def run_onnx(path: Path, batch: np.ndarray) -> tuple[np.ndarray, float]:
    """Outputs of an ONNX file (CPU), one input at a time, and the median milliseconds per input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: batch[:1]})
    outs, times = [], []
    for x in batch:
        t0 = time.perf_counter()
        outs.append(session.run(None, {name: x[None]})[0][0])
        times.append((time.perf_counter() - t0) * 1000)
    return np.stack(outs), float(np.median(times))


def face_crops(photos: dict[str, np.ndarray], detections: list[np.ndarray], most: int = 3) -> dict[str, np.ndarray]:
    """Up to ``most`` faces per photo, cut as face-api cuts them from our final detections."""
    crops = {}
    for (name, photo), dets in zip(photos.items(), detections):
        h, w = photo.shape[:2]
        for k, box in enumerate(to_photo(dets[:most, :4], w, h)):
            crops[f"{name}#{k}"] = face_crop(photo, box)
    return crops


def check_parity(ssd_path: Path, landmarks_path: Path, photos: dict[str, np.ndarray]) -> Parity:
    """Run the ONNX files and face-api (Node.js) on the same input tensors built from ``photos``."""
    names = list(photos)
    ssd_in = np.stack([ssd_pixels(photos[n]) for n in names])
    ours_raw, ssd_ms = run_onnx(ssd_path, to_input(ssd_in, SSD_MEAN, SSD_STD))
    crops = face_crops(photos, [final_detections(r) for r in ours_raw])
    lm_in = np.stack([landmark_pixels(c) for c in crops.values()]).reshape(-1, LANDMARK_SIZE, LANDMARK_SIZE, 3)
    ours_pts, lm_ms = run_onnx(landmarks_path, to_input(lm_in, LANDMARK_MEAN, LANDMARK_STD))
    # our pad + resize checked against face-api's own on a photo and a crop: (image, size, centre, ours)
    probes = {f"{names[0]} → {SSD_SIZE}": (photos[names[0]], SSD_SIZE, False, ssd_in[0])}
    if crops:
        first = next(iter(crops))
        probes[f"{first} → {LANDMARK_SIZE}"] = (crops[first], LANDMARK_SIZE, True, lm_in[0])
    with tempfile.TemporaryDirectory(prefix="faceapi-parity-") as tmp:
        ref = run_reference(ssd_in, lm_in, Path(tmp), [p[:3] for p in probes.values()])
    ssd = [compare_ssd(n, o, r, d) for n, o, r, d in zip(names, ours_raw, ref.ssd_raw, ref.detections)]
    marks = {n: float(np.abs(o.reshape(68, 2) * LANDMARK_SIZE - t).max())
             for n, o, t in zip(crops, ours_pts, ref.points)}
    prep = {k: float(np.abs(p[3] - t).max()) for (k, p), t in zip(probes.items(), ref.batch_tensors)}
    return Parity(ssd, marks, prep, ssd_ms, lm_ms, ref)


# ---- a large group photo, tiled -----------------------------------------------------------------

def tiled_faces(ssd_path: Path, photo: np.ndarray, scales: tuple[float, ...] = (1.0, 0.5), overlap: int = 160,
                min_confidence: float = MIN_CONFIDENCE, iou: float = 0.3) -> np.ndarray:
    """Faces of a photo too large for one 512 input: at each scale, 512-pixel windows overlapping
    by ``overlap`` (app.vision.tiles), face-api's detections in each, boxes that an inner window edge
    may cut dropped, all merged by one NMS at ``iou``. ``(K, 5)`` x1, y1, x2, y2 (photo pixels), score."""
    session = ort.InferenceSession(str(ssd_path), providers=["CPUExecutionProvider"])
    found = []
    for scale in scales:
        image = photo if scale == 1 else cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        for window in windows(w, h, SSD_SIZE, overlap):
            x1, y1, x2, y2 = window
            raw = session.run(None, {"images": to_input(ssd_pixels(image[y1:y2, x1:x2])[None], SSD_MEAN, SSD_STD)})[0]
            dets = final_detections(raw[0], min_confidence)
            dets[:, :4] = to_photo(dets[:, :4], x2 - x1, y2 - y1) + np.float32([x1, y1, x1, y1])
            dets = dets[~cut_by_inner_edge(dets[:, :4], window, w, h)]
            dets[:, :4] /= scale
            found.append(dets)
    rows = np.concatenate(found)
    return rows[nms(rows[:, :4], rows[:, 4], iou)]


# ---- command line -------------------------------------------------------------------------------

def print_parity(result: Parity) -> None:
    ref = result.reference
    print(f"face-api {ref.versions['faceapi']} on TF.js {ref.versions['tfjs']} ({ref.versions['backend']}) "
          f"against ONNX Runtime {ort.__version__}, same input tensors")
    print(f"{'photo':18s} {'score diff':>10s} {'box px':>9s} {'anchors':>7s}  detections (ours/face-api, IoU>0.99)")
    for s in result.ssd:
        print(f"{s.name:18s} {s.score_diff:10.2e} {s.box_diff:9.2e} {s.anchors:7d}  {len(s.ours)}/{len(s.theirs)} "
              f"{'match' if s.match else 'DIFFER'}  scores {[round(float(v), 3) for v in s.ours[:, 4]]}")
    if result.landmark_diffs:
        print(f"landmarks: {len(result.landmark_diffs)} face crops, max diff "
              f"{max(result.landmark_diffs.values()):.2e} px at 112")
    print(f"our pad + resize against face-api's toBatchTensor: {result.preprocess_diffs}")
    print(f"per 512 image: face-api (Node, wasm) {ref.ssd_ms:.0f} ms, ONNX Runtime {result.ort_ssd_ms:.0f} ms; "
          f"per 112 crop: {ref.landmark_ms:.1f} ms vs {result.ort_landmark_ms:.1f} ms")


def parity_failures(result: Parity) -> list[str]:
    """What in ``result`` is outside the tolerances (empty: the port reproduces face-api)."""
    bad = [f"{s.name}: score diff {s.score_diff:.2e}, box diff {s.box_diff:.2e} px, detections "
           f"{len(s.ours)}/{len(s.theirs)}" for s in result.ssd
           if s.score_diff >= SCORE_TOL or s.box_diff >= BOX_TOL or not s.match]
    return bad + [f"landmarks {n}: {d:.2e} px" for n, d in result.landmark_diffs.items() if d >= LANDMARK_TOL]


def main(argv: list[str] | None = None) -> None:
    """``python -m training.pretrained.faceapi --ssd A.onnx --landmarks B.onnx``: convert both nets,
    prove them against face-api in Node.js on real photos, and only then write them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssd", type=Path, required=True, help="where to write the face detector")
    parser.add_argument("--landmarks", type=Path, required=True, help="where to write the 68-point net")
    parser.add_argument("--no-solvay", action="store_true", help="skip the tiled group photo")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="faceapi-") as tmp:
        ssd = export_ssd(Path(tmp) / "ssd.onnx", ssd_metadata(MIN_FACE))
        landmarks = export_landmarks(Path(tmp) / "landmarks.onnx", landmark_metadata())
        result = check_parity(ssd, landmarks, parity_photos())
        print_parity(result)
        if failures := parity_failures(result):
            raise SystemExit("not written: the port differs from face-api:\n" + "\n".join(failures))
        if not args.no_solvay:
            solvay = read_photo(fetch(SCRFD) / "scrfd-0.3.0" / "images" / "solvay_conference_1927.jpg")
            for scales in ((1.0,), (0.5,), (1.0, 0.5)):
                t0 = time.perf_counter()
                faces = tiled_faces(ssd, solvay, scales)
                side = np.sqrt((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]))
                print(f"Solvay 1927 (29 faces), 512 tiles at scales {scales}: {len(faces)} boxes, smallest "
                      f"{side.min():.0f} px (photo), {time.perf_counter() - t0:.1f} s")
        for src, dst in ((ssd, args.ssd), (landmarks, args.landmarks)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            Path(dst).write_bytes(src.read_bytes())
            print(f"wrote {dst}")


if __name__ == "__main__":
    main()
