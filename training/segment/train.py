"""Training loop for the U-Net: AdamW with warm-up and cosine decay, cross-entropy plus Dice, an EMA
of the weights, per-epoch validation mIoU at the original resolution through the serving
post-processing, checkpoints (``last.pt``, ``best.pt``), ``--resume``, loss and mIoU curves as PNG."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.vision.letterbox import letterbox, to_tensor
from app.vision.masks import logits_to_mask
from training.detect.train import EMA, _param_groups
from training.precision import resolve, trunk_features
from training.schedule import set_lr, warmup_cosine
from training.plots import plot_curves
from training.segment.data import NORM_MEAN, NORM_STD, SegmentationData, SegmentationDataset, load_segmentation
from training.segment.loss import loss_name, segmentation_loss
from training.segment.metrics import confusion, summarize
from training.segment.model import UNet, UNetConfig


@dataclass
class SegmentTrainOptions:
    data: Path
    val: Path
    out: Path
    epochs: int = 20
    batch: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    boundary_weight: float = 0.0   # extra cross-entropy weight within 2 px of a class boundary (loss.py)
    input_size: int = 256
    crop: int | None = None    # train on crop x crop windows of the letterboxed input (None: all of it)
    object_p: float = 0.0      # share of the windows centred on an object (a class drawn uniformly)
    windows: int = 1           # windows cut from each image read (the batch holds batch x windows)
    encoder: str = "plain"     # or "mobilenetv2" (training.segment.model)
    width: int = 16
    depth: int = 4
    repeats: float = 1.0
    expansion: int = 4
    init_from: Path | None = None   # mobilenetv2: start the contracting path from a detector's ONNX backbone
    output_stride: int = 1
    seed: int = 0
    val_limit: int = 100
    limit: int | None = None   # use only the first N training images
    workers: int = 1           # data-loading processes beside the training one
    resume: bool = False
    precision: str = "auto"    # bf16 autocast where the CPU has it (training/precision.py)


def forward_logits(model: UNet, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Logits at the input resolution: the model's, upsampled bilinearly when its output stride is 2
    (what serving does at each original pixel)."""
    logits = trunk_features(model, images, precision)
    if model.cfg.output_stride > 1:
        logits = F.interpolate(logits, scale_factor=model.cfg.output_stride, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def predict_mask(model: UNet, image: np.ndarray) -> np.ndarray:
    """One ``HxWx3 uint8 RGB`` image → class ids at its resolution, by the serving post-processing."""
    model.eval()
    canvas, geo = letterbox(image, model.cfg.input_size)
    logits = model(torch.from_numpy(to_tensor(canvas[None], NORM_MEAN, NORM_STD)))[0].numpy()
    return logits_to_mask(logits, geo, model.cfg.output_stride)


def evaluate_model(model: UNet, data: SegmentationData) -> dict[str, object]:
    """mIoU and per-class IoU over ``data`` at the original resolution."""
    matrix = np.zeros((len(data.class_names),) * 2, np.int64)
    for i in range(len(data.samples)):
        image, truth = data.read(i)
        matrix += confusion(truth, predict_mask(model, image), len(data.class_names))
    return summarize(matrix, data.class_names)


def build_model(opts: SegmentTrainOptions, num_classes: int) -> tuple[UNet, dict | None]:
    last = opts.out / "last.pt"
    if opts.resume and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model = UNet(UNetConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        return model, ckpt
    model = UNet(UNetConfig(num_classes=num_classes, input_size=opts.input_size, width=opts.width, depth=opts.depth,
                            output_stride=opts.output_stride, encoder=opts.encoder, repeats=opts.repeats,
                            expansion=opts.expansion))
    if opts.init_from:
        if model.cfg.encoder != "mobilenetv2":
            raise ValueError("--init-from needs the mobilenetv2 encoder (a detector's backbone)")
        from training.detect.onnx_weights import load_onnx_weights

        copied, total = load_onnx_weights(model.encoder, opts.init_from, torch.zeros(1, 3, 64, 64),
                                          input_norm=(NORM_MEAN, NORM_STD))
        if copied < total:
            raise ValueError(f"{opts.init_from}: only {copied} of the encoder's {total} convolutions fit; a detector "
                             f"with the same width and repeats (e.g. width 0.5, depth 0.67 for --width 8 "
                             f"--repeats 0.67) is needed")
        print(f"init-from {opts.init_from}: the contracting path's {copied} convolutions copied")
    return model, None


def train_segmenter(opts: SegmentTrainOptions) -> dict:
    torch.manual_seed(opts.seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    train_data, val_data = load_segmentation(opts.data), load_segmentation(opts.val)
    if train_data.class_names != val_data.class_names:
        raise ValueError(f"training classes {train_data.class_names} != validation classes {val_data.class_names}")
    if opts.limit:
        train_data.samples = train_data.samples[:opts.limit]
    val_data.samples = val_data.samples[:opts.val_limit]
    model, ckpt = build_model(opts, len(train_data.class_names))
    model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, decay=0.999)
    opt = torch.optim.AdamW(_param_groups(model, opts.weight_decay), lr=opts.lr)
    precision = resolve(opts.precision)
    train_set = SegmentationDataset(train_data, model.cfg.input_size, augment=True, seed=opts.seed, crop=opts.crop,
                                    object_p=opts.object_p, windows=opts.windows)
    steps_per_epoch = max(1, len(train_set) // opts.batch)
    total_steps, warmup = opts.epochs * steps_per_epoch, min(200, steps_per_epoch)
    history, start_epoch, best = [], 0, -1.0
    if ckpt:
        opt.load_state_dict(ckpt["optimizer"])
        ema.model.load_state_dict(ckpt["ema"])
        ema.updates, history, start_epoch = ckpt["ema_updates"], ckpt["history"], ckpt["epoch"] + 1
        best = max((h["val_miou"] for h in history), default=-1.0)
        print(f"resumed from epoch {ckpt['epoch'] + 1}")
    print(f"segmenter: {len(train_data.samples)} training images, {len(val_data.samples)} validation; classes "
          f"{train_data.class_names}; {sum(p.numel() for p in model.parameters()):,} parameters; precision {precision}")
    started = time.time()
    for epoch in range(start_epoch, opts.epochs):
        model.train()
        train_set.epoch = epoch
        loader = torch.utils.data.DataLoader(train_set, batch_size=opts.batch, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(opts.seed * 1000 + epoch),
                                             num_workers=opts.workers, persistent_workers=False)
        sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{opts.epochs}", leave=False, mininterval=5)
        for step, (images, targets) in enumerate(bar):
            if opts.windows > 1:   # (B, windows, ...) → (B x windows, ...)
                images, targets = images.flatten(0, 1), targets.flatten(0, 1)
            lr = warmup_cosine(opts.lr, epoch * steps_per_epoch + step, total_steps, warmup)
            set_lr(opt, lr)
            logits = forward_logits(model, images.contiguous(memory_format=torch.channels_last), precision)
            loss, parts = segmentation_loss(logits, targets, opts.dice_weight, opts.boundary_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(model)
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += v
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", lr=f"{lr:.1e}")
        n = max(1, len(loader))
        val = evaluate_model(ema.model, val_data)
        row = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}, "val_miou": val["miou"],
               **{f"val_iou_{name}": v for name, v in val["iou"].items()}, "elapsed_s": round(time.time() - started, 1)}
        history.append(row)
        ious = " ".join(f"{name} {v:.3f}" for name, v in val["iou"].items() if v is not None)
        print(f"epoch {epoch + 1}/{opts.epochs} loss {row['loss']:.4f} (ce {row['ce']:.3f} dice {row['dice']:.3f}) "
              f"val mIoU {val['miou']:.4f} [{ious}] [{row['elapsed_s']:.0f}s]", flush=True)
        state = {"config": model.cfg.to_dict(), "model": model.state_dict(), "ema": ema.model.state_dict(),
                 "optimizer": opt.state_dict(), "ema_updates": ema.updates, "epoch": epoch, "history": history,
                 "class_names": train_data.class_names, "seed": opts.seed, "precision": precision,
                 "loss": loss_name(opts.dice_weight, opts.boundary_weight)}
        torch.save(state, opts.out / "last.pt")
        if val["miou"] >= best:
            best = val["miou"]
            torch.save(state, opts.out / "best.pt")
        plot_curves(opts.out / "curves.png", history,
                    {"loss": ["loss", "ce", "dice"],
                     "validation IoU": ["val_miou", *[f"val_iou_{c}" for c in train_data.class_names]]})
        (opts.out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best_val_miou": best, "seconds": round(time.time() - started, 1)}


def load_segmenter(path: Path) -> tuple[UNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = UNet(UNetConfig(**ckpt["config"]))
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return model.eval(), ckpt
