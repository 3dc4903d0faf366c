"""Cross-entropy plus soft Dice over the classes, both leaving ``IGNORE`` pixels out. Cross-entropy
trains every pixel; Dice weighs each class by its own overlap, so that small classes (thin
pedestrians) count as much as the background.

``boundary_weight`` adds the U-Net paper's idea of a weight map (Ronneberger et al., 2015, who
weighted the borders between touching cells): cross-entropy counts pixels within ``BOUNDARY_PX`` of
a class boundary ``1 + boundary_weight`` times (a weighted mean, so the loss keeps its scale). A
network learns the coarse layout of a scene first and its outlines late (legs drawn as one blob,
wheels without their holes); the weight moves the gradient to where those errors are."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.vision.masks import IGNORE

BOUNDARY_PX = 2   # pixels on either side of a class boundary that count as on it


def boundary_band(target: torch.Tensor, radius: int = BOUNDARY_PX) -> torch.Tensor:
    """``(B, H, W)`` class ids → bool, true where the ``2 radius + 1`` square around a pixel holds
    more than one class (``IGNORE`` padding read as background: the letterbox edge is no boundary)."""
    ids = torch.where(target == IGNORE, 0, target).unsqueeze(1).float()
    k = 2 * radius + 1
    high = F.max_pool2d(ids, k, stride=1, padding=radius)
    low = -F.max_pool2d(-ids, k, stride=1, padding=radius)
    return (high != low).squeeze(1)


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


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                      boundary_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Logits at the target's resolution (upsample first when the model's output stride is 2)."""
    if boundary_weight:
        per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        weight = (1 + boundary_weight * boundary_band(target).float()) * (target != IGNORE)
        ce = (per_pixel * weight).sum() / weight.sum().clamp(min=1)
    else:
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    dice = dice_loss(logits, target)
    return ce + dice_weight * dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


def loss_name(dice_weight: float, boundary_weight: float) -> str:
    """How a run's loss is named in its checkpoint and the exported metadata."""
    ce = "cross-entropy"
    if boundary_weight:
        ce += f" (x{1 + boundary_weight:g} within {BOUNDARY_PX} px of a class boundary)"
    return f"{ce} + {dice_weight:g} x Dice" if dice_weight != 1 else f"{ce} + Dice"
