"""Export a detector checkpoint (its EMA weights) to ONNX with everything the server needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from app.vision.anchors import OUTPUT_LAYOUT
from training.detect.model import STRIDES, Detector, DetectorConfig
from training.onnx_export import count_flops, export_onnx, parity


def load_checkpoint(path: Path) -> tuple[Detector, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = Detector(DetectorConfig(**ckpt["config"]))
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return model.eval(), ckpt


def detector_metadata(model: Detector, ckpt: dict, name: str, version: str, task: str) -> dict[str, object]:
    cfg = model.cfg
    example = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    best = max(ckpt["history"], key=lambda h: h["map50_95"]) if ckpt.get("history") else {}
    init = ckpt.get("init") or {}
    # weights started from a licensed file (face-api's SSD: Apache-2.0) keep its licence and say so
    origin = ({"license": init["license"],
               "source": f"Sightline detector; backbone started from {init['file']} ({init.get('source')})"}
              if init.get("license") else {})
    return {
        "name": name, "task": task, "family": "anchor-yolo", "version": version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "class_names": ckpt["class_names"], "input_size": cfg.input_size, "train_input_size": cfg.input_size,
        "normalization": {"color": "RGB", "scale": 1 / 255, "mean": list(cfg.norm_mean), "std": list(cfg.norm_std),
                          "letterbox_pad": 114},
        **origin,
        "anchors": cfg.anchors, "strides": list(STRIDES), "output_layout": OUTPUT_LAYOUT,
        "thresholds": {"conf": 0.25, "iou": 0.45},
        "architecture": {"family": f"{cfg.backbone}-yolo",
                         **{k: v for k, v in cfg.to_dict().items() if k not in ("anchors", "norm_mean", "norm_std")},
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "flops": count_flops(model, example)},
        "training": {"epochs": len(ckpt.get("history", [])), "seed": ckpt.get("seed"),
                     "train_seconds": (ckpt.get("history") or [{}])[-1].get("elapsed_s"),
                     "val_map50": best.get("map50"), "val_map50_95": best.get("map50_95"),
                     **({"init_from": init} if init else {})},
    }


def export_detector(checkpoint: Path, out: Path, name: str = "detector", version: str = "1.0.0",
                    task: str = "detection") -> tuple[Path, float]:
    """Write the ONNX file and return it with the ONNX Runtime vs PyTorch max abs difference."""
    model, ckpt = load_checkpoint(checkpoint)
    size = model.cfg.input_size
    path = export_onnx(model, torch.zeros(1, 3, size, size), out, detector_metadata(model, ckpt, name, version, task),
                       output_axes={1: "rows"}, dynamic_size=True)
    gen = torch.Generator().manual_seed(0)
    # parity at the training size and at a larger one (the serving size may be tuned upwards)
    diff = max(parity(model, path, torch.rand(2, 3, s, s, generator=gen)) for s in (size, size + 64))
    return path, diff
