"""The FaceNet-style embedder: a CNN reading an aligned face and producing a 128-d L2-normalised
embedding, trained with the triplet loss on batches of P identities x K photos (online mining),
then DeepFace's verification head on pairs of embeddings:

    p(same) = sigmoid(sum_k w_k |f(x_i)_k - f(x_j)_k| + b)

Training crops are aligned by the annotated landmarks, then jittered by a small random similarity
(what a landmark model's errors do to the alignment), mirrored half the time and colour-shifted.
Since the model learns mirrored faces, it is read at test time on the aligned crop and on its mirror
image, and the two embeddings are averaged (``flip_test`` in the metadata), in validation as in
serving. Validation identities are never trained on; the best epoch is the one with the highest
true-accept rate at FAR 1e-3 there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from app.vision.align import FACE_TEMPLATE, embed_with_mirror, warp
from training.augment import color_shift
from training.faces.calibrate import pair_distances, roc_points, threshold_at_far
from training.faces.data import (NORM_MEAN, NORM_STD, FaceSample, aligned_canvas_transform, batches, cut_crops,
                                 load_faces, to_input)
from training.faces.triplet import triplet_loss
from training.precision import resolve, trunk_features
from training.schedule import set_lr, warmup_cosine
from training.plots import plot_curves

PAD = 8            # canvas border around the aligned face, room for the jitter
TARGET_FAR = 1e-3


@dataclass
class EmbedderConfig:
    input_size: int = 64
    width: int = 32    # channels of the first stage; doubled at each of the 4 stages
    dim: int = 128


class Residual(nn.Module):
    """Two 3x3 convolutions with a shortcut (a 1x1 projection where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class EmbedNet(nn.Module):
    """``(B, 3, S, S)`` aligned face → ``(B, dim)`` unit-length embedding."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        if cfg.width < 16:
            # torch 2.13's CPU backward of a 1x1 stride-2 convolution over 8 channels in channels_last
            # corrupts the heap (seen here: "double free or corruption"); 16 and up are fine.
            raise ValueError(f"embedder width must be at least 16, not {cfg.width}")
        self.cfg = cfg
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(Residual(w, w, 2), Residual(w, 2 * w, 2), Residual(2 * w, 4 * w, 2),
                                    Residual(4 * w, 8 * w, 2))                      # (B, 8w, S/16, S/16)
        cells = (cfg.input_size // 16) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * w * cells, cfg.dim),
                                  nn.BatchNorm1d(cfg.dim))

    def forward(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """``precision="bf16"`` (training only) runs the convolutions under bfloat16 autocast and the
        projection and normalisation in float32; the default is the exported graph."""
        return F.normalize(self.head(trunk_features(lambda t: self.stages(self.stem(t)), x, precision)), dim=1)


class VerificationHead(nn.Module):
    """DeepFace's pair classifier on ``|f_i - f_j|``: a weight per embedding dimension and a bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.linear((a - b).abs()).squeeze(1)   # logit of p(same)


def aligned_canvas(photo: np.ndarray, s: FaceSample, size: int) -> np.ndarray:
    return warp(photo, aligned_canvas_transform(s.landmarks, size, PAD), size + 2 * PAD)


def jitter_alignment(rng: np.random.Generator, canvas: np.ndarray, size: int, rotate: float = 6.0,
                     scale: float = 0.06, shift: float = 2.5) -> np.ndarray:
    """A random similarity about the canvas centre, then the central ``size`` pixels."""
    c = canvas.shape[0] / 2
    a = math.radians(rng.uniform(-rotate, rotate))
    s = math.exp(rng.uniform(-scale, scale))
    tx, ty = rng.uniform(-shift, shift, size=2)
    r = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
    t = np.array([size / 2 + tx, size / 2 + ty]) - r @ np.array([c, c])
    return warp(canvas, np.hstack([r, t[:, None]]), size)


def centre(canvas: np.ndarray, size: int) -> np.ndarray:
    return canvas[PAD:PAD + size, PAD:PAD + size]


def pk_batches(rng: np.random.Generator, labels: np.ndarray, p: int, k: int, steps: int):
    """``steps`` batches of ``p`` identities x ``k`` photos (fewer photos where an identity has fewer)."""
    by_id: dict[int, np.ndarray] = {}
    for lab in np.unique(labels):
        by_id[int(lab)] = np.flatnonzero(labels == lab)
    usable = np.array([lab for lab, idx in by_id.items() if len(idx) >= 2])
    for _ in range(steps):
        chosen = rng.choice(usable, size=min(p, len(usable)), replace=False)
        yield np.concatenate([rng.choice(by_id[int(c)], size=min(k, len(by_id[int(c)])), replace=False)
                              for c in chosen])


@torch.no_grad()
def embed_crops(model: EmbedNet, crops: np.ndarray, flip_test: bool = True, batch: int = 256) -> np.ndarray:
    """Unit embeddings of aligned crops, as served: with the flip test unless ``flip_test`` is off."""
    model.eval()

    def read(part: np.ndarray) -> np.ndarray:
        return model(to_input(part)).numpy()

    return np.concatenate([embed_with_mirror(read, crops[idx]) if flip_test else read(crops[idx])
                           for idx in batches(np.arange(len(crops)), batch)])


def verification_figures(emb: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    gen, imp = pair_distances(emb, labels)
    at = threshold_at_far(gen, imp, TARGET_FAR)
    return {"tar_at_far": at["tar"], "threshold": at["threshold"], "far": at["far"],
            "genuine_pairs": at["genuine_pairs"], "impostor_pairs": at["impostor_pairs"],
            "roc": roc_points(gen, imp)}


def train_head(emb: np.ndarray, labels: np.ndarray, seed: int, steps: int = 600) -> VerificationHead:
    """Fit the verification head on balanced same/different pairs of (frozen) embeddings."""
    rng = np.random.default_rng(seed)
    head = VerificationHead(emb.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    e, by_id = torch.from_numpy(emb), {}
    for i, lab in enumerate(labels):
        by_id.setdefault(int(lab), []).append(i)
    multi = [v for v in by_id.values() if len(v) >= 2]
    for _ in range(steps):
        pos = [tuple(rng.choice(multi[rng.integers(len(multi))], 2, replace=False)) for _ in range(128)]
        neg_i, neg_j = rng.integers(len(emb), size=(2, 256))
        neg = [(i, j) for i, j in zip(neg_i, neg_j) if labels[i] != labels[j]][:128]
        pairs = np.array(pos + neg)
        target = torch.tensor([1.0] * len(pos) + [0.0] * len(neg))
        loss = F.binary_cross_entropy_with_logits(head(e[pairs[:, 0]], e[pairs[:, 1]]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@dataclass
class EmbedderTrainOptions:
    data: Path
    val: Path
    out: Path
    epochs: int = 30
    steps_per_epoch: int = 100
    identities_per_batch: int = 32   # P
    photos_per_identity: int = 4     # K
    margin: float = 0.3
    mining: str = "hard"
    lr: float = 2e-3
    seed: int = 0
    width: int = 32
    input_size: int = 64
    resume: bool = False
    limit: int | None = None
    precision: str = "auto"   # bf16 autocast where the CPU has it (training/precision.py)
    mirror: bool = True       # mirror half the training crops; read with the flip test (validation, serving)


def _subjects(path: Path, limit: int | None) -> tuple[list[FaceSample], np.ndarray]:
    samples = load_faces(path).subjects()
    samples = samples[:limit] if limit else samples
    names = sorted({s.identity for s in samples})
    index = {n: i for i, n in enumerate(names)}
    return samples, np.array([index[s.identity] for s in samples])


def train_embedder(opts: EmbedderTrainOptions) -> dict:
    torch.manual_seed(opts.seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    size = opts.input_size
    train_set, train_labels = _subjects(opts.data, opts.limit)
    val_set, val_labels = _subjects(opts.val, None)
    train_canvas = np.stack(cut_crops(train_set, lambda photo, s: aligned_canvas(photo, s, size)))
    val_crops = np.stack([centre(c, size) for c in cut_crops(val_set, lambda photo, s: aligned_canvas(photo, s, size))])
    print(f"embedder: {len(train_set)} photos of {len(np.unique(train_labels))} identities; validation "
          f"{len(val_set)} photos of {len(np.unique(val_labels))} others (crops cut in {time.time() - started:.0f}s)")
    precision = resolve(opts.precision)
    print(f"embedder: training precision {precision}")
    cfg = EmbedderConfig(input_size=size, width=opts.width)
    model = EmbedNet(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=5e-4)
    history, start_epoch, last = [], 0, opts.out / "last.pt"
    if opts.resume and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history, start_epoch = ckpt["history"], ckpt["epoch"] + 1
    total = opts.epochs * opts.steps_per_epoch
    best = max((h["val_tar_at_far"] for h in history), default=-1.0)
    for epoch in range(start_epoch, opts.epochs):
        model.train()
        rng = np.random.default_rng([opts.seed, epoch])
        sums = {"loss": 0.0, "active": 0.0}
        plan = pk_batches(rng, train_labels, opts.identities_per_batch, opts.photos_per_identity, opts.steps_per_epoch)
        for step, idx in enumerate(tqdm(plan, total=opts.steps_per_epoch, desc=f"epoch {epoch + 1}/{opts.epochs}",
                                        leave=False, mininterval=5)):
            it = epoch * opts.steps_per_epoch + step
            set_lr(opt, warmup_cosine(opts.lr, it, total, 200))
            crops = np.stack([color_shift(rng, jitter_alignment(rng, train_canvas[i], size)) for i in idx])
            if opts.mirror:
                flip = rng.random(len(crops)) < 0.5
                crops[flip] = crops[flip][:, :, ::-1]
            emb = model(to_input(crops).contiguous(memory_format=torch.channels_last), precision)
            loss, stats = triplet_loss(emb, torch.from_numpy(train_labels[idx]), opts.margin, opts.mining)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += loss.item()
            sums["active"] += stats["active"]
        fig = verification_figures(embed_crops(model, val_crops, opts.mirror), val_labels)
        row = {"epoch": epoch + 1, "loss": sums["loss"] / opts.steps_per_epoch,
               "active": sums["active"] / opts.steps_per_epoch, "val_tar_at_far": fig["tar_at_far"],
               "val_threshold": fig["threshold"], "elapsed_s": round(time.time() - started, 1)}
        history.append(row)
        print(f"epoch {epoch + 1}/{opts.epochs} loss {row['loss']:.4f} (active {row['active']:.2f}) val TAR@FAR1e-3 "
              f"{fig['tar_at_far']:.4f} threshold {fig['threshold']:.3f} [{row['elapsed_s']:.0f}s]", flush=True)
        state = {"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                 "history": history, "seed": opts.seed, "margin": opts.margin, "mining": opts.mining,
                 "precision": precision, "flip_test": opts.mirror}
        torch.save(state, last)
        if fig["tar_at_far"] >= best:
            best = fig["tar_at_far"]
            torch.save(state, opts.out / "best.pt")
        plot_curves(opts.out / "curves.png", history,
                    {"triplet loss": ["loss", "active"], "validation TAR at FAR 1e-3": ["val_tar_at_far"]})
        (opts.out / "history.json").write_text(json.dumps(history, indent=1))
    finish(opts.out / "best.pt", train_set, train_labels, train_canvas, val_crops, val_labels, opts.seed)
    return {"history": history, "best_val_tar_at_far": best}


def finish(best_path: Path, train_set, train_labels, train_canvas, val_crops, val_labels, seed: int) -> None:
    """Add the verification head (fitted on training pairs) and the validation figures to ``best.pt``."""
    model, ckpt = load_embedder(best_path)
    size, flip_test = model.cfg.input_size, ckpt.get("flip_test", False)
    train_emb = embed_crops(model, np.stack([centre(c, size) for c in train_canvas]), flip_test)
    head = train_head(train_emb, train_labels, seed)
    ckpt["head"] = {"weights": head.linear.weight.detach().numpy()[0].tolist(), "bias": float(head.linear.bias.detach()[0])}
    ckpt["validation"] = verification_figures(embed_crops(model, val_crops, flip_test), val_labels)
    torch.save(ckpt, best_path)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the parameters and buffers, in state-dict order."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_embedder(path: Path) -> tuple[EmbedNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = EmbedNet(EmbedderConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export_embedder(checkpoint: Path, out: Path, version: str = "1.0.0") -> tuple[Path, float]:
    """ONNX with the alignment template, the verification head and the validation threshold."""
    from training.onnx_export import count_flops, export_onnx, parity

    model, ckpt = load_embedder(checkpoint)
    cfg = model.cfg
    size = cfg.input_size
    example = torch.zeros(1, 3, size, size)
    val = ckpt.get("validation", {})
    meta = {"name": "embedder", "task": "face_embedding", "family": "sightline-facenet", "version": version, "input_size": size,
            "embedding_dim": cfg.dim, "template": FACE_TEMPLATE.tolist(),
            "normalization": {"color": "RGB", "scale": 1 / 255, "mean": list(NORM_MEAN), "std": list(NORM_STD)},
            "distance": "squared_l2", "weights_sha256": weights_digest(model),
            "flip_test": bool(ckpt.get("flip_test", False)),
            "verification": {"threshold": val.get("threshold"), "target_far": TARGET_FAR,
                             "source": "validation identities, annotated landmarks", "roc": val.get("roc"),
                             "tar_at_far": val.get("tar_at_far")},
            "verification_head": ckpt.get("head"),
            "architecture": {"family": "resnet-facenet", **asdict(cfg),
                             "parameters": sum(p.numel() for p in model.parameters()),
                             "flops": count_flops(model, example)},
            "training": {"epochs": len(ckpt.get("history", [])), "seed": ckpt.get("seed"),
                         "loss": f"triplet (margin {ckpt.get('margin')}, {ckpt.get('mining')} mining)",
                         "precision": ckpt.get("precision", "fp32"),
                         "train_seconds": (ckpt.get("history") or [{}])[-1].get("elapsed_s"),
                         "val_tar_at_far": val.get("tar_at_far")}}
    path = export_onnx(model, example, out, meta, output_name="embedding")
    return path, parity(model, path, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
