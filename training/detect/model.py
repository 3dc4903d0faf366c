"""A YOLO-style anchor detector on a MobileNetV2 (default) or MobileNetV1 backbone.

Backbone ``mobilenetv2``: MobileNetV2 inverted-residual bottlenecks (1x1 expansion -> 3x3 depthwise
-> 1x1 linear projection, residual when shapes match). ``width``, ``depth`` and ``resolution``
multipliers scale channels, repeats and the input side (EfficientNet's compound scaling knobs).
Backbone ``mobilenetv1``: MobileNetV1's 13 depthwise-separable pairs as in the TF Object Detection
API (ReLU6, TF's 'same' padding), the trunk of face-api's SSD face detector
(``models/face_detector.onnx``), so that a detector can start from those real weights
(``training.detect.onnx_weights``); ``width`` scales its channels (1.0 to copy them). Neck: a small FPN
(top-down, strides 8, 16, 32). Head: a 1x1 conv per scale predicting, per anchor,
``[t_obj, t_x, t_y, t_w, t_h, class logits]``; the exported model returns them raw, flattened to
``(B, N, 5 + C)`` in the row order of :mod:`app.vision.anchors`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
import torch.nn.functional as F

# MobileNetV2 stages: (expansion t, channels c, repeats n, stride s).
MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
FEATURE_STAGES = (2, 4, 6)  # stage indices whose outputs are at strides 8, 16, 32
STRIDES = (8, 16, 32)
# MobileNetV1 (TF OD API, face-api's SSD): (channels, depthwise stride) of the 13 pairs after the
# stride-2 3x3 stem of 32 channels; pairs 4, 10 and 12 end at strides 8, 16 and 32.
MBV1_PAIRS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))
MBV1_FEATURE_PAIRS = (4, 10, 12)
BACKBONES = ("mobilenetv2", "mobilenetv1")
DEFAULT_WIDTH = {"mobilenetv2": 0.5, "mobilenetv1": 1.0}
# Input normalisation, ``(x / 255 - mean) / std`` on RGB; travels in the ONNX metadata. The default;
# a model started from another file's weights takes that file's (``DetectorConfig.norm_mean/std``).
NORM_MEAN = (0.0, 0.0, 0.0)
NORM_STD = (1.0, 1.0, 1.0)


def _round_channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


@dataclass
class DetectorConfig:
    num_classes: int = 3
    width: float = 0.5        # channel multiplier
    depth: float = 0.67       # repeat multiplier
    resolution: float = 1.0   # input side multiplier over base_size
    base_size: int = 320
    expansion: int = 4        # bottleneck expansion cap (MobileNetV2 uses 6; 4 trains ~2x faster on CPU)
    neck_channels: int = 64
    anchors: list[list[list[float]]] = field(default_factory=list)  # per stride: [[w, h], ...]
    backbone: str = "mobilenetv2"   # or "mobilenetv1" (depth and expansion do not apply to it)
    norm_mean: tuple[float, float, float] = NORM_MEAN   # of x / 255, RGB
    norm_std: tuple[float, float, float] = NORM_STD

    @property
    def input_size(self) -> int:
        return max(64, round(self.base_size * self.resolution / 32) * 32)

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchors[0]) if self.anchors else 3

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [conv_bn(cin, hidden, 1)]            # 1x1 expansion
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),            # 3x3 depthwise
                   conv_bn(hidden, cout, 1, act=False)]                          # 1x1 linear projection
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class Backbone(nn.Module):
    """MobileNetV2 trunk returning the outputs of ``feature_stages`` (by default those at strides 8,
    16 and 32; the segmenter's contracting path takes more)."""

    def __init__(self, width: float, depth: float, max_expansion: int = 6,
                 feature_stages: tuple[int, ...] = FEATURE_STAGES) -> None:
        super().__init__()
        self.feature_stages = feature_stages
        stem = _round_channels(32 * width)
        self.stem = conv_bn(3, stem, 3, stride=2)                               # (B, stem, H/2, W/2)
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        cin = stem
        for i, (t, c, n, s) in enumerate(MBV2_STAGES):
            cout = _round_channels(c * width)
            repeats = max(1, math.ceil(n * depth))
            t = min(t, max_expansion)
            blocks = [Bottleneck(cin if j == 0 else cout, cout, s if j == 0 else 1, t) for j in range(repeats)]
            self.stages.append(nn.Sequential(*blocks))
            cin = cout
            if i in feature_stages:
                self.out_channels.append(cout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.feature_stages:
                feats.append(x)
        return feats  # by default [(B, c8, H/8, W/8), (B, c16, H/16, W/16), (B, c32, H/32, W/32)]


class MobileNetV1(nn.Module):
    """MobileNetV1 trunk (TF Object Detection API layout, face-api's SSD): a stride-2 3x3 stem, then 13
    pairs of depthwise 3x3 (+ batch norm, ReLU6) and pointwise 1x1 (+ batch norm, ReLU6). A stride-2
    3x3 pads 0 before and 1 after, TF's 'same' on the even sizes the detector runs at (multiples of
    32), so copied weights see the pixels they were trained on. Returns the outputs of pairs 4, 10
    and 12: ``[(B, 256w, H/8, W/8), (B, 512w, H/16, W/16), (B, 1024w, H/32, W/32)]``."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        stem = _round_channels(32 * width)
        self.stem = _tf_conv_bn(3, stem, 3, 2)                                  # (B, 32w, H/2, W/2)
        self.pairs = nn.ModuleList()
        self.out_channels: list[int] = []
        cin = stem
        for i, (c, s) in enumerate(MBV1_PAIRS):
            cout = _round_channels(c * width)
            self.pairs.append(nn.Sequential(_tf_conv_bn(cin, cin, 3, s, groups=cin),   # depthwise
                                            conv_bn(cin, cout, 1)))                    # pointwise
            cin = cout
            if i in MBV1_FEATURE_PAIRS:
                self.out_channels.append(cout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, pair in enumerate(self.pairs):
            x = pair(x)
            if i in MBV1_FEATURE_PAIRS:
                feats.append(x)
        return feats


def _tf_conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    """``conv_bn`` with TF's 'same' padding on an even input: symmetric at stride 1, ``(0, 1)`` at
    stride 2 (an explicit pad before the conv; the conv-then-batch-norm pair stays adjacent)."""
    if stride == 1:
        return conv_bn(cin, cout, k, stride, groups)
    return nn.Sequential(nn.ZeroPad2d((0, k - stride, 0, k - stride)),
                         nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


def make_backbone(cfg: DetectorConfig) -> nn.Module:
    """The backbone ``cfg.backbone`` names; each has ``out_channels`` (strides 8, 16, 32)."""
    if cfg.backbone == "mobilenetv2":
        return Backbone(cfg.width, cfg.depth, cfg.expansion)
    if cfg.backbone == "mobilenetv1":
        return MobileNetV1(cfg.width)
    raise ValueError(f"unknown backbone {cfg.backbone!r} (one of {', '.join(BACKBONES)})")


class Neck(nn.Module):
    """Top-down FPN: lateral 1x1 convs, upsample-and-add, then a depthwise-separable 3x3 per level."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(conv_bn(channels, channels, 3, groups=channels), conv_bn(channels, channels, 1))
            for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [layer(f) for layer, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        return [s(x) for s, x in zip(self.smooth, lat)]  # each (B, channels, H/s, W/s)


class Detector(nn.Module):
    """(B, 3, S, S) normalised RGB -> (B, N, 5 + C) raw anchor predictions."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = make_backbone(cfg)
        self.neck = Neck(self.backbone.out_channels, cfg.neck_channels)
        self.outputs_per_anchor = 5 + cfg.num_classes
        self.heads = nn.ModuleList(nn.Conv2d(cfg.neck_channels, cfg.anchors_per_cell * self.outputs_per_anchor, 1)
                                   for _ in STRIDES)
        self._init_head_bias()

    def _init_head_bias(self) -> None:
        # Start with a low objectness prior (about 1 object per 1000 anchors) so early training
        # is not swamped by the negatives' loss (RetinaNet's prior-probability init).
        for head in self.heads:
            bias = head.bias.detach().view(self.cfg.anchors_per_cell, self.outputs_per_anchor)
            bias.zero_()
            bias[:, 0] = -math.log((1 - 0.001) / 0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for head, feat in zip(self.heads, self.neck(self.backbone(x))):
            b, _, h, w = feat.shape
            y = head(feat).view(b, self.cfg.anchors_per_cell, self.outputs_per_anchor, h, w)
            outs.append(y.permute(0, 3, 4, 1, 2).reshape(b, h * w * self.cfg.anchors_per_cell, -1))
        return torch.cat(outs, dim=1)  # rows: scale, y, x, anchor
