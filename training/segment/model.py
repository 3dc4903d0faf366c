"""The U-Net (Ronneberger et al., 2015): a contracting path of two-convolution blocks, each level
halving the resolution (max-pool) and doubling the channels; an expanding path where a stride-2
transpose convolution doubles the resolution, its output is concatenated with the contracting
features of the same level (the skip connection) and another block fuses them; then a 1x1
convolution to class logits.

``output_stride`` 2 makes the first block's first convolution stride 2, so the whole U runs at half
the input resolution and the logits come out at half size (about 4x cheaper); serving reads them
bilinearly at each original pixel (``app.vision.masks.logits_to_mask``), and training does the same
upsampling before the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    num_classes: int
    input_size: int = 256
    width: int = 16          # channels of the first level; doubled at each level down
    depth: int = 4           # downsamplings in the contracting path
    max_width: int = 256     # channel cap for the deep levels (size of the file)
    output_stride: int = 1   # 1: logits at the input resolution; 2: at half of it

    def channels(self) -> list[int]:
        return [min(self.width * 2 ** i, self.max_width) for i in range(self.depth + 1)]

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
        self.stem = ConvBlock(3, ch[0], stride=cfg.output_stride)
        self.down = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), ConvBlock(ch[i], ch[i + 1]))
                                  for i in range(cfg.depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(cfg.depth)))
        self.fuse = nn.ModuleList(ConvBlock(2 * ch[i], ch[i]) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(ch[0], cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]                       # level 0: (B, ch0, S/os, S/os)
        for down in self.down:
            skips.append(down(skips[-1]))            # level i+1: half the side, ch[i+1] channels
        y = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            y = fuse(torch.cat([up(y), skips.pop()], dim=1))   # up one level, joined with its skip
        return self.head(y)
