"""Cross-entropy plus soft Dice over the classes, both leaving ``IGNORE`` pixels out. Cross-entropy
trains every pixel; Dice weighs each class by its own overlap, so that small classes (thin
pedestrians) count as much as the background."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.vision.masks import IGNORE


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean_c (2 |P_c . T_c| + eps) / (|P_c| + |T_c| + eps)`` over the classes present in the
    batch's target or prediction; ``logits (B, C, H, W)``, ``target (B, H, W)`` class ids."""
    valid = (target != IGNORE).unsqueeze(1)                              # (B, 1, H, W)
    prob = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    sizes = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (sizes + eps)
    present = onehot.sum(dim=(0, 2, 3)) > 0
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """Logits at the target's resolution (upsample first when the model's output stride is 2)."""
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    dice = dice_loss(logits, target)
    return ce + dice_weight * dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}
