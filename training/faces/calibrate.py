"""Verification figures from embeddings for training: the maths is the server's own
(``app.services.calibration``: pair distances, ROC, threshold at a false-accept rate), so that a
threshold set here is the one served; this module adds the ROC plot (matplotlib).

A pair is accepted as the same person when its squared distance is at or below the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.services.calibration import ROC_FARS, pair_distances, roc_points, threshold_at_far

__all__ = ["ROC_FARS", "pair_distances", "plot_roc", "roc_points", "threshold_at_far"]


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


def calibrate_folder(models: Path, photos: Path, far: float, roc_png: Path | None = None,
                     write: bool = True) -> dict[str, object]:
    """The served embedder of ``models`` calibrated on ``photos/<person>/*``: every photo's largest
    face through the served pipeline (the registry's own models, no HTTP), the threshold at ``far``,
    written into the embedder's file (``write``) with its ROC, and the ROC plotted."""
    from app.pipeline import run_steps
    from app.registry import ModelRegistry, load_models
    from app.services.calibration import calibrate, labelled_folder, largest_face_steps, pair_distances
    from app.settings import Settings
    from training.onnx_export import update_metadata

    registry = ModelRegistry()
    load_models(Settings(models_dir=models, device="cpu"), registry)
    registry.ready = True
    faces = registry.faces(embedding=True)
    labelled = labelled_folder(photos)
    found = [(person, run_steps(largest_face_steps(faces, data, 100_000_000))) for person, _, data in labelled]
    kept = [(p, e) for p, e in found if e is not None]
    emb = np.stack([e for _, e in kept]) if kept else np.zeros((0, 1), np.float32)
    labels = np.array([p for p, _ in kept])
    verification = calibrate(emb, labels, far, f"{photos}")
    verification["photos_without_face"] = len(found) - len(kept)
    if roc_png is not None:
        plot_roc(roc_png, {f"{faces.embedder.meta.name} on {photos.name}": pair_distances(emb, labels)}, far)
    if write:
        update_metadata(faces.embedder.path, {"verification": verification})
    return verification


def main(argv: list[str] | None = None) -> int:
    """``python -m training.faces.calibrate --photos DIR --far 0.001``: set the served embedder's
    threshold on your own labelled photos (``DIR/<person>/<photo>``)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m training.faces.calibrate", description=main.__doc__)
    parser.add_argument("--photos", type=Path, required=True, help="a folder of <person>/<photo> files")
    parser.add_argument("--far", type=float, default=1e-3, help="the false-accept rate to set the threshold at")
    parser.add_argument("--models", type=Path, default=Path("models"), help="the models folder served")
    parser.add_argument("--roc", type=Path, default=None, help="where to draw the ROC (PNG)")
    parser.add_argument("--dry-run", action="store_true", help="measure and print; leave the model file as is")
    args = parser.parse_args(argv)
    if not args.photos.is_dir():
        parser.error(f"{args.photos} is not a folder")
    verification = calibrate_folder(args.models, args.photos, args.far, args.roc, write=not args.dry_run)
    print(json.dumps({k: v for k, v in verification.items() if k != "roc"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
