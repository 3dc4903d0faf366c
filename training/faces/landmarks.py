"""The 5-point landmark regressor: a small CNN reading a square crop around a detected face box and
regressing the 5 (x, y) points as fractions of the crop side. Metric: NME, the mean point error
over the inter-ocular distance (eye centre to eye centre).

Training crops jitter the box (shift, scale) the way a detector's boxes miss, mirror the face
(swapping left and right points) and shift colours; validation crops use the annotated boxes.
Since the model learns mirrored faces, it is read at test time on the crop and on its mirror image,
and the two sets of points are averaged (``flip_test`` in the metadata), in validation as in serving.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from app.vision.align import box_crop_transform, invert_affine, mirror_points, read_with_mirror, transform_points, warp
from training.augment import color_shift
from training.faces.data import (NORM_MEAN, NORM_STD, PRE_MARGIN, PRE_SIZE, FaceSample, batches, cut_crops,
                                 landmark_precrop, load_faces, to_input)
from training.precision import resolve, trunk_features
from training.schedule import set_lr, warmup_cosine
from training.plots import plot_curves

@dataclass
class LandmarkConfig:
    input_size: int = 64
    margin: float = 1.25   # crop side over the box's longer side
    width: int = 16        # channels of the first stage; doubled at each of the 4 stages


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """``(B, 3, S, S)`` normalised crop → ``(B, 10)``: x1, y1, ..., x5, y5 as fractions of S."""

    def __init__(self, cfg: LandmarkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.features = nn.Sequential(_block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
                                      _block(4 * w, 8 * w, 2))                      # (B, 8w, S/16, S/16)
        cells = (cfg.input_size // 16) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * w * cells, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, 10))

    def forward(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """``precision="bf16"`` (training only): convolutions under bfloat16 autocast, the regression
        head in float32; the default is the exported graph."""
        # + 0.5: centred on the crop at initialisation
        return self.head(trunk_features(self.features, x, precision)) + 0.5


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer ∘ inner`` of two ``(2, 3)`` matrices."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def jitter_box(rng: np.random.Generator, box: np.ndarray, shift: float = 0.08, scale: float = 0.12) -> np.ndarray:
    """Move the box by up to ``shift`` of its size and resize it by up to ``scale``, like a detector's miss."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + rng.uniform(-shift, shift) * w, (y1 + y2) / 2 + rng.uniform(-shift, shift) * h
    s = math.exp(rng.uniform(-scale, scale))
    return np.array([cx - s * w / 2, cy - s * h / 2, cx + s * w / 2, cy + s * h / 2], dtype=np.float32)


def make_crop(precrop: np.ndarray, sample: FaceSample, box: np.ndarray, cfg: LandmarkConfig
              ) -> tuple[np.ndarray, np.ndarray]:
    """Re-cut the model's crop for ``box`` from the stored pre-crop; the points in crop fractions."""
    to_crop = box_crop_transform(box, cfg.input_size, cfg.margin)
    pre = box_crop_transform(sample.box, PRE_SIZE, PRE_MARGIN)
    crop = warp(precrop, compose(to_crop, invert_affine(pre)), cfg.input_size)
    return crop, transform_points(sample.landmarks, to_crop) / cfg.input_size


def nme(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per face: mean point distance over the inter-ocular distance; ``(N, 5, 2)`` inputs, same units."""
    iod = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)
    return np.linalg.norm(pred - truth, axis=2).mean(axis=1) / np.maximum(iod, 1e-6)


@dataclass
class LandmarkTrainOptions:
    data: Path
    val: Path
    out: Path
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0
    width: int = 16
    resume: bool = False
    limit: int | None = None
    precision: str = "auto"   # bf16 autocast where the CPU has it (training/precision.py)


def _train_batch(rng, precrops, samples, idx, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    crops, points = [], []
    for i in idx:
        crop, pts = make_crop(precrops[i], samples[i], jitter_box(rng, samples[i].box), cfg)
        if rng.random() < 0.5:
            crop, pts = crop[:, ::-1], mirror_points(pts * cfg.input_size, cfg.input_size) / cfg.input_size
        crops.append(color_shift(rng, np.ascontiguousarray(crop)))
        points.append(pts)
    return to_input(np.stack(crops)), torch.from_numpy(np.stack(points).reshape(len(idx), 10))


@torch.no_grad()
def predict_points(model: LandmarkNet, precrops, samples, flip_test: bool = True) -> np.ndarray:
    """``(N, 5, 2)`` predicted points in photo pixels, from crops of the annotated boxes (averaged
    with their mirror images' points, as served, unless ``flip_test`` is off)."""
    model.eval()
    cfg, out = model.cfg, []

    def read(crops: np.ndarray) -> np.ndarray:
        return model(to_input(crops)).numpy().reshape(-1, 5, 2) * cfg.input_size

    for idx in batches(np.arange(len(samples)), 256):
        crops = np.stack([make_crop(precrops[i], samples[i], samples[i].box, cfg)[0] for i in idx])
        pred = read_with_mirror(read, crops) if flip_test else read(crops)
        for i, p in zip(idx, pred):
            to_crop = box_crop_transform(samples[i].box, cfg.input_size, cfg.margin)
            out.append(transform_points(p, invert_affine(to_crop)))
    return np.stack(out)


def train_landmarks(opts: LandmarkTrainOptions) -> dict:
    torch.manual_seed(opts.seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    train_set, val_set = load_faces(opts.data).samples, load_faces(opts.val).samples
    train_set = train_set[:opts.limit] if opts.limit else train_set
    started = time.time()
    train_pre, val_pre = cut_crops(train_set, landmark_precrop), cut_crops(val_set, landmark_precrop)
    print(f"landmarks: {len(train_set)} training faces, {len(val_set)} validation faces "
          f"(crops cut in {time.time() - started:.0f}s)")
    precision = resolve(opts.precision)
    print(f"landmarks: training precision {precision}")
    cfg = LandmarkConfig(width=opts.width)
    model = LandmarkNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=1e-4)
    history, start_epoch = [], 0
    last = opts.out / "last.pt"
    if opts.resume and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history, start_epoch = ckpt["history"], ckpt["epoch"] + 1
    steps = math.ceil(len(train_set) / opts.batch)
    total, truth = opts.epochs * steps, np.stack([s.landmarks for s in val_set])
    best = min((h["val_nme"] for h in history), default=math.inf)
    for epoch in range(start_epoch, opts.epochs):
        model.train()
        rng = np.random.default_rng([opts.seed, epoch])
        order, loss_sum = rng.permutation(len(train_set)), 0.0
        for step, idx in enumerate(tqdm(list(batches(order, opts.batch)), desc=f"epoch {epoch + 1}/{opts.epochs}",
                                        leave=False, mininterval=5)):
            it = epoch * steps + step
            set_lr(opt, warmup_cosine(opts.lr, it, total, 200))
            x, y = _train_batch(rng, train_pre, train_set, idx, cfg)
            loss = nn.functional.smooth_l1_loss(model(x, precision), y.float(), beta=0.01)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        val_nme = float(nme(predict_points(model, val_pre, val_set), truth).mean())
        history.append({"epoch": epoch + 1, "loss": loss_sum / steps, "val_nme": val_nme,
                        "elapsed_s": round(time.time() - started, 1)})
        print(f"epoch {epoch + 1}/{opts.epochs} loss {loss_sum / steps:.5f} val NME {val_nme:.4f} "
              f"[{history[-1]['elapsed_s']:.0f}s]", flush=True)
        state = {"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "epoch": epoch, "history": history, "seed": opts.seed, "precision": precision}
        torch.save(state, last)
        if val_nme <= best:
            best = val_nme
            torch.save(state, opts.out / "best.pt")
        plot_curves(opts.out / "curves.png", history, {"loss": ["loss"], "validation NME": ["val_nme"]})
        (opts.out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best_val_nme": best}


def load_landmarks(path: Path) -> tuple[LandmarkNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = LandmarkNet(LandmarkConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export_landmarks(checkpoint: Path, out: Path, version: str = "1.0.0") -> tuple[Path, float]:
    from training.onnx_export import count_flops, export_onnx, parity

    model, ckpt = load_landmarks(checkpoint)
    cfg, size = model.cfg, model.cfg.input_size
    example = torch.zeros(1, 3, size, size)
    best = min(ckpt["history"], key=lambda h: h["val_nme"]) if ckpt.get("history") else {}
    meta = {"name": "landmarks", "task": "face_landmarks", "family": "crop-landmarks", "version": version, "input_size": size,
            "crop_margin": cfg.margin, "flip_test": True, "landmark_names": ["left_eye", "right_eye", "nose_tip", "left_mouth",
                                                          "right_mouth"],
            "normalization": {"color": "RGB", "scale": 1 / 255, "mean": list(NORM_MEAN), "std": list(NORM_STD)},
            "output_layout": "x1,y1,...,x5,y5 as fractions of the crop side",
            "architecture": {"family": "cnn-landmarks", **asdict(cfg),
                             "parameters": sum(p.numel() for p in model.parameters()),
                             "flops": count_flops(model, example)},
            "training": {"epochs": len(ckpt.get("history", [])), "seed": ckpt.get("seed"),
                         "precision": ckpt.get("precision", "fp32"),
                         "train_seconds": (ckpt.get("history") or [{}])[-1].get("elapsed_s"),
                         "val_nme": best.get("val_nme")}}
    path = export_onnx(model, example, out, meta)
    return path, parity(model, path, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
