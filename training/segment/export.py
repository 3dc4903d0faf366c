"""Export a U-Net checkpoint (its EMA weights) to ONNX with everything the server needs: task, class
names, a colour per class, input size, output stride, normalisation, version, training metrics."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from training.onnx_export import count_flops, export_onnx, parity
from training.segment.data import NORM_MEAN, NORM_STD
from training.segment.train import load_segmenter


def palette(n: int) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map: class ``k``'s bits spread over the high bits of R, G and B (0 is black)."""
    colors = []
    for k in range(n):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return colors


def export_segmenter(checkpoint: Path, out: Path, name: str = "segmenter", version: str = "1.0.0"
                     ) -> tuple[Path, float]:
    """Write the ONNX file; returns it with the ONNX Runtime vs PyTorch max abs difference."""
    model, ckpt = load_segmenter(checkpoint)
    cfg = model.cfg
    size = cfg.input_size
    example = torch.zeros(1, 3, size, size)
    history = ckpt.get("history") or []
    best = max(history, key=lambda h: h["val_miou"]) if history else {}
    names = ckpt["class_names"]
    meta = {
        "name": name, "task": "segmentation", "family": "unet", "version": version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "class_names": names, "colors": palette(len(names)), "input_size": size,
        "output_stride": cfg.output_stride, "output_layout": "logits_nchw",
        "normalization": {"color": "RGB", "scale": 1 / 255, "mean": list(NORM_MEAN), "std": list(NORM_STD),
                          "letterbox_pad": 114},
        "architecture": {"family": "unet", **cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
                         "flops": count_flops(model, example)},
        "training": {"epochs": len(history), "seed": ckpt.get("seed"), "precision": ckpt.get("precision", "fp32"),
                     "loss": ckpt.get("loss", "cross-entropy + Dice"),
                     "train_seconds": history[-1]["elapsed_s"] if history else None,
                     "best_epoch": best.get("epoch"), "val_miou": best.get("val_miou"),
                     "val_iou": {c: best.get(f"val_iou_{c}") for c in names}},
    }
    path = export_onnx(model, example, out, meta, output_name="logits")
    diff = parity(model, path, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return path, diff
