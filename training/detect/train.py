"""Training loop for the anchor detector: anchors by k-means, AdamW with warm-up and cosine decay,
an EMA of the weights, per-epoch validation mAP (pycocotools), checkpoints, resume, transfer
learning (``--init-from`` a checkpoint, a Sightline detector or a converted real model such as
face-api's SSD MobileNetV1 with ``--backbone mobilenetv1``; ``--freeze``), curves as PNG."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.vision.anchors import anchor_grid
from app.vision.letterbox import letterbox_geometry
from app.vision.postprocess import Detections, postprocess_detections
from training.anchors import best_possible_recall, kmeans_anchors, mean_best_iou, split_by_stride
from training.detect.data import DetectionData, DetectionDataset, collate, load_dataset
from training.detect.evaluate import EVAL_CONF, coco_map, coco_results, load_gt
from training.detect.loss import assign_targets, detection_loss, grid_tensors
from training.detect.model import DEFAULT_WIDTH, STRIDES, Detector, DetectorConfig
from training.detect.transfer import TransferError
from training.schedule import set_lr, warmup_cosine
from training.plots import plot_curves

log = logging.getLogger("sightline.train")


class DatasetMismatch(ValueError):
    """The validation set's classes are not the training set's."""


@dataclass
class TrainOptions:
    data: Path
    val: Path
    out: Path
    epochs: int = 30
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    box_weight: float = 5.0   # weight of the (1 - CIoU) term against objectness and class
    seed: int = 0
    backbone: str = "mobilenetv2"   # or "mobilenetv1" (face-api's SSD trunk; --init-from models/face_detector.onnx)
    width: float | None = None      # None: the backbone's default (0.5 mobilenetv2, 1.0 mobilenetv1)
    depth: float = 0.67
    resolution: float = 1.0
    base_size: int = 320
    expansion: int = 4
    anchors_per_scale: int = 3
    val_limit: int = 200
    resume: bool = False
    init_from: Path | None = None
    freeze: str = "none"   # "backbone" or "none"
    limit: int | None = None  # use only the first N training images (tests, quick runs)


class EMA:
    """Exponential moving average of the weights, used for validation and export."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9995) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 500))
        for ema_v, v in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                ema_v.copy_(v)


def fit_anchors(data: DetectionData, input_size: int, per_scale: int, seed: int) -> list[list[list[float]]]:
    """k-means (1 - IoU) on the training boxes as they appear in the letterboxed input."""
    wh = []
    for s in data.samples:
        if len(s.boxes):
            scale = input_size / max(s.width, s.height)
            wh.append((s.boxes[:, 2:] - s.boxes[:, :2]) * scale)
    wh_all = np.concatenate(wh)
    anchors = kmeans_anchors(wh_all, per_scale * len(STRIDES), seed=seed)
    print(f"anchors (input px): {np.round(anchors, 1).tolist()}")
    print(f"anchor fit: mean best IoU {mean_best_iou(wh_all, anchors):.3f}, "
          f"best possible recall (IoU>0.25) {best_possible_recall(wh_all, anchors):.4f} over {len(wh_all)} boxes")
    return split_by_stride(anchors, len(STRIDES))


@torch.no_grad()
def predict_dataset(model: Detector, dataset: DetectionDataset, conf: float = EVAL_CONF, iou: float = 0.6,
                    max_det: int = 100, batch: int = 16) -> list[Detections]:
    """Run the model on every image of an un-augmented dataset; the serving post-processing."""
    model.eval()
    cfg = model.cfg
    grid = anchor_grid(cfg.input_size, list(STRIDES), cfg.anchors)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collate)
    out = []
    for images, _, _, idx in loader:
        raw = model(images.contiguous(memory_format=torch.channels_last)).numpy()
        for r, i in zip(raw, idx):
            s = dataset.data.samples[i]
            geo = letterbox_geometry(s.width, s.height, cfg.input_size)
            out.append(postprocess_detections(r, grid, geo, conf, iou, max_det))
    return out


@torch.no_grad()
def predict_one(model: Detector, image: np.ndarray, conf: float = EVAL_CONF, iou: float = 0.6,
                max_det: int = 100) -> Detections:
    """One ``HxWx3 uint8 RGB`` image through the PyTorch model and the serving post-processing."""
    from app.vision.letterbox import letterbox, to_tensor

    cfg = model.eval().cfg
    canvas, geo = letterbox(image, cfg.input_size)
    raw = model(torch.from_numpy(to_tensor(canvas[None], cfg.norm_mean, cfg.norm_std)))[0].numpy()
    grid = anchor_grid(cfg.input_size, list(STRIDES), cfg.anchors)
    return postprocess_detections(raw, grid, geo, conf, iou, max_det)


def validate(model: Detector, dataset: DetectionDataset) -> dict[str, float]:
    data = dataset.data
    gt = load_gt(data.coco_path)
    cat_ids = sorted(gt.getCatIds())
    results = []
    for s, det in zip(data.samples, predict_dataset(model, dataset)):
        results += coco_results(s.image_id, det, cat_ids)
    return coco_map(gt, results, [s.image_id for s in data.samples])


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


CALIBRATION_IMAGES = 16   # training images the copied layers' batch-norm statistics are measured on


def build_model(opts: TrainOptions, train_data: DetectionData) -> tuple[Detector, dict | None, dict | None]:
    """A new model, or the one in ``out/last.pt`` when resuming; ``--init-from`` copies matching
    weights and prints what it kept. Returns the model, the checkpoint resumed (or None) and what
    the model was started from (``Transfer.record``, or None)."""
    last = opts.out / "last.pt"
    if opts.resume and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model = Detector(DetectorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        return model, ckpt, ckpt.get("init")
    width = opts.width if opts.width is not None else DEFAULT_WIDTH.get(opts.backbone, 0.5)
    cfg = DetectorConfig(num_classes=len(train_data.class_names), width=width, depth=opts.depth,
                         resolution=opts.resolution, base_size=opts.base_size, expansion=opts.expansion,
                         backbone=opts.backbone)
    cfg.anchors = fit_anchors(train_data, cfg.input_size, opts.anchors_per_scale, opts.seed)
    model = Detector(cfg)
    if not opts.init_from:
        return model, None, None
    if Path(opts.init_from).suffix == ".onnx":
        from training.detect.transfer import calibrate_batch_norm, transfer_from_onnx

        transfer = transfer_from_onnx(model, Path(opts.init_from))
        # after the copy: the images are normalised as the copied layers expect (the file's normalisation)
        calib = DetectionData(train_data.samples[:CALIBRATION_IMAGES], train_data.class_names)
        calib_set = DetectionDataset(calib, cfg.input_size, augment=False, norm=(cfg.norm_mean, cfg.norm_std))
        loader = torch.utils.data.DataLoader(calib_set, batch_size=8, collate_fn=collate)
        if calibrate_batch_norm(model, transfer.copied, (images for images, *_ in loader)):
            transfer.calibrated_on = len(calib_set)
        for line in transfer.lines():
            print(line)
        return model, None, transfer.record()
    return model, None, _init_from_checkpoint(model, Path(opts.init_from))


def _init_from_checkpoint(model: Detector, path: Path) -> dict:
    """Copy a training checkpoint's tensors whose names and shapes agree (its EMA weights where it has
    them); the model takes its normalisation when the backbone's first convolution came with them."""
    if not path.is_file():
        raise TransferError(f"{path}: no such file")
    src = torch.load(path, map_location="cpu", weights_only=False)
    state = src.get("ema") or src["model"]
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    shaped = [k for k in own if own[k].ndim > 0]          # not the batch norms' step counters
    backbone = [k for k in shaped if k.startswith("backbone.")]
    kept = [k for k in backbone if k in loaded]
    if not kept:
        src_cfg = src.get("config", {})
        raise TransferError(f"{path}: nothing to copy into this {model.cfg.backbone} backbone (width "
                            f"{model.cfg.width:g}); the checkpoint's is {src_cfg.get('backbone', 'mobilenetv2')} "
                            f"width {src_cfg.get('width')} depth {src_cfg.get('depth')} expansion "
                            f"{src_cfg.get('expansion')}: give those options")
    model.load_state_dict(loaded, strict=False)
    src_cfg = src.get("config", {})
    first = next(k for k in own if k.startswith("backbone.") and k.endswith("weight") and own[k].ndim == 4)
    if first in loaded and "norm_mean" in src_cfg:
        model.cfg.norm_mean, model.cfg.norm_std = tuple(src_cfg["norm_mean"]), tuple(src_cfg["norm_std"])
    rest = [k for k in shaped if not k.startswith("backbone.")]
    print(f"init-from {path}: {sum(k in loaded for k in shaped)}/{len(shaped)} tensors copied")
    print(f"  backbone ({model.cfg.backbone}): {len(kept)}/{len(backbone)} tensors copied")
    print(f"  neck and heads: {sum(k in loaded for k in rest)}/{len(rest)} tensors copied, the rest left as "
          "initialised (names or shapes differ)")
    print(f"  input normalisation: (x / 255 - {list(model.cfg.norm_mean)}) / {list(model.cfg.norm_std)}")
    inherited = src.get("init") or {}
    return {"file": path.name, "name": None, "source": inherited.get("source"), "license": inherited.get("license"),
            "backbone": model.cfg.backbone, "tensors_copied": sum(k in loaded for k in shaped),
            "tensors_total": len(shaped),
            **({"started_from": inherited} if inherited else {})}


def train(opts: TrainOptions) -> dict:
    """Train, validate each epoch, keep ``last.pt`` and ``best.pt`` in ``opts.out``; returns the history."""
    torch.manual_seed(opts.seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    train_data, val_data = load_dataset(opts.data), load_dataset(opts.val)
    if val_data.class_names != train_data.class_names:
        raise DatasetMismatch(f"{opts.val}: its classes {val_data.class_names} are not the training set's "
                            f"{train_data.class_names} (same names, same order: convert both with the same names)")
    if opts.limit:
        train_data.samples = train_data.samples[:opts.limit]
    val_data.samples = val_data.samples[:opts.val_limit]
    model, ckpt, init = build_model(opts, train_data)
    cfg = model.cfg
    if opts.freeze == "backbone":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    model = model.to(memory_format=torch.channels_last)
    ema = EMA(model)
    opt = torch.optim.AdamW(_param_groups(model, opts.weight_decay), lr=opts.lr)
    norm = (cfg.norm_mean, cfg.norm_std)
    train_set = DetectionDataset(train_data, cfg.input_size, augment=True, seed=opts.seed, norm=norm)
    val_set = DetectionDataset(val_data, cfg.input_size, augment=False, norm=norm)
    grid = grid_tensors(anchor_grid(cfg.input_size, list(STRIDES), cfg.anchors))
    steps_per_epoch = math.ceil(len(train_set) / opts.batch)
    total_steps, warmup = opts.epochs * steps_per_epoch, min(300, steps_per_epoch * 2)
    history, start_epoch, best = [], 0, -1.0
    if ckpt:
        opt.load_state_dict(ckpt["optimizer"])
        ema.model.load_state_dict(ckpt["ema"])
        ema.updates, history, start_epoch = ckpt["ema_updates"], ckpt["history"], ckpt["epoch"] + 1
        best = max((h["map50_95"] for h in history), default=-1.0)
        print(f"resumed from epoch {ckpt['epoch']}")
    started = time.time()
    for epoch in range(start_epoch, opts.epochs):
        model.train()
        if opts.freeze == "backbone":
            model.backbone.eval()  # frozen means its batch-norm statistics too
        train_set.epoch = epoch
        gen = torch.Generator().manual_seed(opts.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(train_set, batch_size=opts.batch, shuffle=True, generator=gen,
                                             collate_fn=collate, drop_last=len(train_set) > opts.batch)
        sums = {"loss": 0.0, "obj": 0.0, "box": 0.0, "cls": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{opts.epochs}", leave=False, mininterval=5)
        for step, (images, boxes, labels, _) in enumerate(bar):
            it = epoch * steps_per_epoch + step
            lr = warmup_cosine(opts.lr, it, total_steps, warmup)
            set_lr(opt, lr)
            targets = assign_targets(boxes, labels, list(STRIDES), cfg.anchors, cfg.input_size)
            pred = model(images.contiguous(memory_format=torch.channels_last))
            loss, parts = detection_loss(pred, targets, grid, box_weight=opts.box_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            sums["loss"] += loss.item()
            for k in parts:
                sums[k] += parts[k]
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", lr=f"{lr:.1e}")
        n = max(1, len(loader))
        metrics = validate(ema.model, val_set)
        row = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}, **metrics,
               "elapsed_s": round(time.time() - started, 1)}
        history.append(row)
        print(f"epoch {epoch + 1}/{opts.epochs} loss {row['loss']:.4f} (obj {row['obj']:.3f} box {row['box']:.3f} "
              f"cls {row['cls']:.3f}) val mAP@0.5 {metrics['map50']:.4f} mAP@[.5:.95] {metrics['map50_95']:.4f} "
              f"[{row['elapsed_s']:.0f}s]", flush=True)
        state = {"config": cfg.to_dict(), "model": model.state_dict(), "ema": ema.model.state_dict(),
                 "optimizer": opt.state_dict(), "ema_updates": ema.updates, "epoch": epoch, "history": history,
                 "class_names": train_data.class_names, "seed": opts.seed, "init": init}
        torch.save(state, opts.out / "last.pt")
        if metrics["map50_95"] >= best:
            best = metrics["map50_95"]
            torch.save(state, opts.out / "best.pt")
        plot_curves(opts.out / "curves.png", history,
                    {"loss": ["loss", "obj", "box", "cls"], "validation mAP": ["map50", "map50_95"]})
        (opts.out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best_map50_95": best}
