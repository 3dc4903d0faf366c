"""The U-Net (Ronneberger et al., 2015): a contracting path of two-convolution blocks, each level
halving the resolution (max-pool) and doubling the channels; an expanding path where a stride-2
transpose convolution doubles the resolution, its output is concatenated with the contracting
features of the same level (the skip connection) and another block fuses them; then a 1x1
convolution to class logits.

Two contracting paths (``encoder``):

- ``plain``: the paper's, a two-convolution block then a max-pool per level, ``width`` channels at
  the top, doubled per level (capped at ``max_width``), ``depth`` levels down.
- ``mobilenetv2``: the detector's backbone (``training.detect.model.Backbone``) as the contracting
  path: MobileNetV2 inverted-residual stages (1x1 expansion, 3x3 depthwise, 1x1 projection) down to stride
  32, with ``width / 16`` as its channel multiplier and ``repeats`` as its repeat multiplier; a
  two-convolution block on the image itself is the full-resolution level. Its skips are the stages'
  outputs at strides 2, 4, 8 and 16. About a tenth of the plain path's arithmetic per pixel (width 8
  against 16) for a far larger receptive field; it trains 3.7 times as many pixels per second on a
  2-core CPU in float32 (depthwise convolutions and the full-resolution level are memory-bound), and
  it can start from a trained detector (``--init-from``). The expanding path is the same in both.

``output_stride`` 2 makes the first block's first convolution stride 2 (mobilenetv2: leaves out the
full-resolution level), so the whole U runs at half
the input resolution and the logits come out at half size (about 4x cheaper); serving reads them
bilinearly at each original pixel (``app.vision.masks.logits_to_mask``), and training does the same
upsampling before the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.detect.model import MBV2_STAGES, Backbone, _round_channels

ENCODERS = ("plain", "mobilenetv2")
# MobileNetV2 stages (training.detect.model.MBV2_STAGES) whose outputs are the skips at strides 2, 4,
# 8, 16 and the bottom at 32.
MBV2_LEVEL_STAGES = (0, 1, 2, 4, 6)


@dataclass
class UNetConfig:
    num_classes: int
    input_size: int = 256
    width: int = 16          # channels of the first level; doubled at each level down
    depth: int = 4           # downsamplings in the contracting path
    max_width: int = 256     # channel cap for the deep levels (size of the file)
    output_stride: int = 1   # 1: logits at the input resolution; 2: at half of it
    encoder: str = "plain"   # "plain" or "mobilenetv2" (see the module docstring)
    expansion: int = 4       # mobilenetv2: cap on the bottlenecks' expansion
    repeats: float = 1.0     # mobilenetv2: multiplier on the stages' repeats

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {self.encoder!r}")
        if self.encoder == "mobilenetv2" and self.depth != len(MBV2_LEVEL_STAGES):
            raise ValueError(f"the mobilenetv2 encoder has depth {len(MBV2_LEVEL_STAGES)}, not {self.depth}")

    def channels(self) -> list[int]:
        """Channels of each level, full resolution first."""
        if self.encoder == "plain":
            return [min(self.width * 2 ** i, self.max_width) for i in range(self.depth + 1)]
        return [self.width, *(_round_channels(MBV2_STAGES[i][1] * self.width / 16) for i in MBV2_LEVEL_STAGES)]

    def to_dict(self) -> dict:
        return asdict(self)


class ConvBlock(nn.Sequential):
    """(3x3 conv, batch norm, ReLU) x 2; the first convolution may stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``(B, 3, S, S)`` → logits ``(B, C, S / output_stride, S / output_stride)``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        if cfg.input_size % (cfg.output_stride * 2 ** cfg.depth):
            raise ValueError(f"input_size {cfg.input_size} must be a multiple of {cfg.output_stride * 2 ** cfg.depth}")
        self.cfg = cfg
        ch = cfg.channels()
        if cfg.encoder == "plain":
            self.stem = ConvBlock(3, ch[0], stride=cfg.output_stride)
            self.down = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), ConvBlock(ch[i], ch[i + 1]))
                                      for i in range(cfg.depth))
            top = 0
        else:   # the encoder starts at stride 2; a full-resolution block on the image unless output stride 2
            self.encoder = Backbone(cfg.width / 16, cfg.repeats, cfg.expansion, MBV2_LEVEL_STAGES)
            top = cfg.output_stride - 1
            if top == 0:
                self.stem = ConvBlock(3, ch[0])
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2)
                                for i in reversed(range(top, cfg.depth)))
        self.fuse = nn.ModuleList(ConvBlock(2 * ch[i], ch[i]) for i in reversed(range(top, cfg.depth)))
        self.head = nn.Conv2d(ch[top], cfg.num_classes, 1)

    def contract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The contracting path's features, from the logits' resolution down to the bottom."""
        if self.cfg.encoder == "plain":
            skips = [self.stem(x)]                   # level 0: (B, ch0, S/os, S/os)
            for down in self.down:
                skips.append(down(skips[-1]))        # level i+1: half the side, ch[i+1] channels
            return skips
        levels = self.encoder(x)
        return [self.stem(x), *levels] if self.cfg.output_stride == 1 else levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.contract(x)
        y = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            y = fuse(torch.cat([up(y), skips.pop()], dim=1))   # up one level, joined with its skip
        return self.head(y)
