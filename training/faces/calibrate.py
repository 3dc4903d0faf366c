"""Verification figures from embeddings: genuine and impostor pair distances, the ROC, the
distance threshold at a target false-accept rate, and the ROC plot.

A pair is accepted as the same person when its squared distance is at or below the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pair_distances(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances of every pair of rows: (genuine, impostor)."""
    emb = np.asarray(emb, dtype=np.float32)
    sq = (emb * emb).sum(axis=1)
    d = np.maximum(sq[:, None] - 2 * emb @ emb.T + sq[None, :], 0.0)
    i, j = np.triu_indices(len(emb), k=1)
    same = np.asarray(labels)[i] == np.asarray(labels)[j]
    return d[i, j][same], d[i, j][~same]


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> dict[str, float]:
    """The largest threshold whose false-accept rate on ``impostor`` is at most ``far``, with the
    true-accept rate it gives on ``genuine``."""
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    allowed = int(np.floor(far * len(imp)))       # impostor pairs that may be accepted
    threshold = float(np.nextafter(imp[allowed], -np.inf)) if allowed < len(imp) else float(imp[-1])
    return {"threshold": threshold, "far": float((imp <= threshold).mean()),
            "tar": float((np.asarray(genuine) <= threshold).mean()), "target_far": far,
            "genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(imp))}


ROC_FARS = tuple(float(f) for f in 10.0 ** np.arange(-6.0, -0.9, 0.5))   # 1e-6, 3.2e-6, ..., 1e-1


def roc_points(genuine: np.ndarray, impostor: np.ndarray, fars=ROC_FARS) -> list[dict[str, float]]:
    """Threshold and TAR at each FAR that the impostor pairs can measure (one false accept at least)."""
    return [{k: v for k, v in threshold_at_far(genuine, impostor, f).items() if k in ("threshold", "far", "tar")}
            for f in fars if f * len(impostor) >= 1]


def plot_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], mark_far: float = 1e-3) -> Path:
    """One ROC curve (TAR against FAR, log FAR axis) per named (genuine, impostor) pair of arrays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (gen, imp) in curves.items():
        thresholds = np.quantile(np.concatenate([gen, imp]), np.linspace(0, 1, 400))
        far = np.array([(imp <= t).mean() for t in thresholds])
        tar = np.array([(gen <= t).mean() for t in thresholds])
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=name)
    ax.axvline(mark_far, color="grey", linestyle=":", label=f"FAR {mark_far:g}")
    ax.set_xscale("log")
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("true-accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
