"""Targets and loss for the anchor detector.

Assignment (YOLO): an object belongs to the grid cell holding its midpoint, at the scale and
anchor whose shape has the highest IoU with the object's. Loss terms:
- objectness: BCE on every row; at assigned rows the target is the IoU of the predicted box with
  its object (detached, as in YOLOv5), so the score ranks boxes by how well they fit, which is what
  mAP@[.5:.95] rewards; 0 elsewhere, except rows whose predicted box already overlaps an object
  with IoU > ``ignore_iou`` (YOLOv3's ignore rule), which are left out;
- box: ``1 - CIoU`` between the decoded prediction and the object at assigned rows;
- class: cross-entropy at assigned rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from app.vision.anchors import MAX_LOG_SCALE, AnchorGrid
from app.vision.boxes import wh_iou


@dataclass
class Targets:
    batch: torch.Tensor   # (P,) image index of each positive
    row: torch.Tensor     # (P,) output row of each positive
    boxes: torch.Tensor   # (P, 4) xyxy input pixels
    labels: torch.Tensor  # (P,) class index


def assign_targets(boxes: list[np.ndarray], labels: list[np.ndarray],
                   strides: list[int], anchors: list[list[list[float]]], input_size: int) -> Targets:
    """Match each object (xyxy, input pixels) to one output row: its midpoint's cell, best anchor."""
    shapes = np.asarray([wh for group in anchors for wh in group], dtype=np.float32)   # (S*A, 2)
    per_scale = len(anchors[0])
    offsets, start = [], 0
    for stride in strides:
        offsets.append(start)
        start += (input_size // stride) ** 2 * per_scale
    out_b, out_r, out_box, out_lab = [], [], [], []
    for b, (bx, lb) in enumerate(zip(boxes, labels)):
        bx = bx.reshape(-1, 4)
        wh = np.stack([bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]], axis=1)
        keep = (wh > 1).all(axis=1)
        bx, lb, wh = bx[keep], lb[keep], wh[keep]
        if not len(bx):
            continue
        best = wh_iou(wh, shapes).argmax(axis=1)
        scale, anchor = best // per_scale, best % per_scale
        st = np.asarray(strides)[scale]
        cells = input_size // st
        cx = np.clip(((bx[:, 0] + bx[:, 2]) / 2 // st).astype(int), 0, cells - 1)
        cy = np.clip(((bx[:, 1] + bx[:, 3]) / 2 // st).astype(int), 0, cells - 1)
        rows = np.asarray(offsets)[scale] + (cy * cells + cx) * per_scale + anchor
        out_b.append(np.full(len(rows), b))
        out_r.append(rows)
        out_box.append(bx)
        out_lab.append(lb)
    if not out_b:
        empty = torch.zeros(0, dtype=torch.long)
        return Targets(empty, empty, torch.zeros(0, 4), empty)
    return Targets(torch.from_numpy(np.concatenate(out_b)).long(), torch.from_numpy(np.concatenate(out_r)).long(),
                   torch.from_numpy(np.concatenate(out_box)).float(), torch.from_numpy(np.concatenate(out_lab)).long())


def decode_boxes(raw: torch.Tensor, grid: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(..., 4)`` raw ``t_x, t_y, t_w, t_h`` → xyxy input pixels (the torch twin of app's decode)."""
    cx = (grid["cell_x"] + torch.sigmoid(raw[..., 0])) * grid["stride"]
    cy = (grid["cell_y"] + torch.sigmoid(raw[..., 1])) * grid["stride"]
    w = grid["anchor_w"] * torch.exp(raw[..., 2].clamp(max=MAX_LOG_SCALE))
    h = grid["anchor_h"] * torch.exp(raw[..., 3].clamp(max=MAX_LOG_SCALE))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of aligned ``(P, 4)`` xyxy boxes, ``(P,)``."""
    iw = (torch.min(a[:, 2], b[:, 2]) - torch.max(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.min(a[:, 3], b[:, 3]) - torch.max(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    wb, hb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    iou = inter / (wa * ha + wb * hb - inter + eps)
    cw = torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0])
    ch = torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1])
    diag = cw ** 2 + ch ** 2 + eps
    centre = ((a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) ** 2 + (a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + 1 + eps)
    return iou - centre / diag - alpha * v


def grid_tensors(grid: AnchorGrid) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(getattr(grid, k)) for k in ("cell_x", "cell_y", "stride", "anchor_w", "anchor_h")}


def _ignore_mask(pred_boxes: torch.Tensor, targets: Targets, ignore_iou: float) -> torch.Tensor:
    """``(B, N)`` True where a prediction overlaps any object of its image above ``ignore_iou``."""
    b, n = pred_boxes.shape[:2]
    if targets.batch.numel() == 0:
        return torch.zeros((b, n), dtype=torch.bool)
    counts = torch.bincount(targets.batch, minlength=b)
    slot = torch.arange(targets.batch.numel()) - (torch.cumsum(counts, 0) - counts)[targets.batch]
    gt = torch.zeros((b, int(counts.max()), 4))                                # (B, G, 4), zero-padded
    gt[targets.batch, slot] = targets.boxes
    lt = torch.max(pred_boxes[:, :, None, :2], gt[:, None, :, :2])
    rb = torch.min(pred_boxes[:, :, None, 2:], gt[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)                                    # (B, N, G)
    area_p = (pred_boxes[..., 2:] - pred_boxes[..., :2]).clamp(min=0).prod(-1)
    area_g = (gt[..., 2:] - gt[..., :2]).prod(-1)
    iou = inter / (area_p[:, :, None] + area_g[:, None, :] - inter + 1e-7)      # padding gives 0
    return iou.max(dim=2).values > ignore_iou


def detection_loss(pred: torch.Tensor, targets: Targets, grid: dict[str, torch.Tensor],
                   box_weight: float = 5.0, cls_weight: float = 1.0, ignore_iou: float = 0.5
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """``pred (B, N, 5 + C)`` raw; returns the total loss and its parts for logging."""
    n_pos = max(1, targets.row.numel())
    obj_target = torch.zeros(pred.shape[:2])
    weight = torch.ones(pred.shape[:2])
    with torch.no_grad():
        pred_boxes = decode_boxes(pred[..., 1:5].float(), grid)
        weight[_ignore_mask(pred_boxes, targets, ignore_iou)] = 0.0
    weight[targets.batch, targets.row] = 1.0
    if targets.row.numel():
        pos = pred[targets.batch, targets.row]                                 # (P, 5 + C)
        sel = {k: v[targets.row] for k, v in grid.items()}
        fit = ciou(decode_boxes(pos[:, 1:5], sel), targets.boxes)
        box = (1.0 - fit).mean()
        cls = F.cross_entropy(pos[:, 5:], targets.labels)
        obj_target[targets.batch, targets.row] = fit.detach().clamp(min=0.0)
    else:
        box = cls = pred.sum() * 0.0
    obj = F.binary_cross_entropy_with_logits(pred[..., 0], obj_target, weight=weight, reduction="sum") / n_pos
    total = obj + box_weight * box + cls_weight * cls
    return total, {"obj": obj.item(), "box": box.item(), "cls": cls.item()}
