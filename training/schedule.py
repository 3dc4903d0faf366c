"""The learning-rate schedule every trainer here uses: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch


def warmup_cosine(base_lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    """The rate at ``step`` (0-based) of ``total_steps``, rising linearly over ``warmup_steps``."""
    return base_lr * min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
