"""The verification threshold set on a user's own labelled faces: genuine and impostor pair
distances of embeddings made by the served pipeline, the ROC, the threshold at a stated
false-accept rate, and the ROC drawn as a small SVG (no plotting library in the server).

A pair is accepted as the same person when its squared distance (of unit embeddings) is at or
below the threshold.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from app.faces import FaceAnalyzer
from app.pipeline import Steps

ROC_FARS = tuple(float(f) for f in 10.0 ** np.arange(-6.0, -0.9, 0.5))   # 1e-6, 3.2e-6, ..., 1e-1


def pair_distances(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances of every pair of rows of ``emb (N, D)``: (genuine, impostor) by ``labels (N,)``."""
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
            "tar": float((np.asarray(genuine) <= threshold).mean()) if len(genuine) else float("nan"),
            "target_far": far, "genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(imp))}


def roc_points(genuine: np.ndarray, impostor: np.ndarray, fars=ROC_FARS) -> list[dict[str, float]]:
    """Threshold and TAR at each FAR that the impostor pairs can measure (one false accept at least)."""
    return [{k: v for k, v in threshold_at_far(genuine, impostor, f).items() if k in ("threshold", "far", "tar")}
            for f in fars if f * len(impostor) >= 1]


class CalibrationError(ValueError):
    """Too few faces or identities to measure a threshold at the false-accept rate asked."""


def calibrate(emb: np.ndarray, labels: np.ndarray, far: float, source: str) -> dict[str, object]:
    """The ``verification`` metadata of an embedder calibrated on ``emb`` / ``labels``: the threshold
    at ``far``, the TAR it gives, the ROC, and how it was set. Needs at least one genuine pair and
    ``1 / far`` impostor pairs (so that ``far`` is measurable)."""
    genuine, impostor = pair_distances(emb, labels)
    if len(genuine) < 1 or len(impostor) * far < 1:
        raise CalibrationError(
            f"{len(genuine)} genuine and {len(impostor)} impostor pairs cannot measure a false-accept rate of "
            f"{far:g}: give at least two photos of some people and {math.ceil(1 / far)} pairs of different people "
            f"(e.g. {math.ceil((1 + math.sqrt(1 + 8 / far)) / 2)} people), or ask for a larger rate")
    at = threshold_at_far(genuine, impostor, far)
    return {**at, "method": f"calibrated at FAR {far:g} on {source}: {len(set(labels.tolist()))} people, "
                            f"{len(emb)} faces, through the served pipeline",
            "roc": roc_points(genuine, impostor),
            "genuine_distance_max": float(genuine.max()), "impostor_distance_min": float(impostor.min())}


def roc_svg(roc: list[dict[str, float]], mark_far: float | None = None, width: int = 480, height: int = 320) -> str:
    """The ROC (TAR against log10 FAR) as a standalone SVG document."""
    left, bottom, right, top = 56, height - 40, width - 16, 16
    lo, hi = -6.0, 0.0

    def x(far: float) -> float:
        return left + (math.log10(max(far, 10 ** lo)) - lo) / (hi - lo) * (right - left)

    def y(tar: float) -> float:
        return bottom - tar * (bottom - top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{top}" stroke="black"/>']
    for e in range(int(lo), int(hi) + 1):
        parts.append(f'<text x="{x(10.0 ** e):.1f}" y="{bottom + 14}" text-anchor="middle">1e{e}</text>')
    for t in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{height - 6}" text-anchor="middle">false-accept rate</text>')
    parts.append(f'<text x="14" y="{(top + bottom) / 2}" transform="rotate(-90 14 {(top + bottom) / 2})" '
                 f'text-anchor="middle">true-accept rate</text>')
    points = sorted((p["far"], p["tar"]) for p in roc if p["far"] > 0)
    if points:
        path = " ".join(f"{x(f):.1f},{y(t):.1f}" for f, t in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    if mark_far:
        parts.append(f'<line x1="{x(mark_far):.1f}" y1="{bottom}" x2="{x(mark_far):.1f}" y2="{top}" '
                     f'stroke="grey" stroke-dasharray="3,3"/>')
    return "\n".join(parts + ["</svg>"]) + "\n"


# ---- labelled photos: a folder (or zip archive) per identity --------------------------------------

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def labelled_folder(root: Path) -> list[tuple[str, str, bytes]]:
    """``(identity, file name, bytes)`` of every photo in ``root/<identity>/``, sorted."""
    return [(person.name, photo.name, photo.read_bytes())
            for person in sorted(p for p in Path(root).iterdir() if p.is_dir())
            for photo in sorted(person.iterdir()) if photo.suffix.lower() in PHOTO_SUFFIXES]


def labelled_zip(data: bytes, max_files: int, max_bytes: int) -> list[tuple[str, str, bytes]]:
    """``(identity, file name, bytes)`` of every photo in a zip archive of ``<identity>/<photo>``
    entries (any folders above the identity's ignored). ``ValueError`` for an archive that is not a
    zip, holds more than ``max_files`` photos or would inflate past ``max_bytes`` (read from the
    entries' headers before anything is inflated)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError("the upload is not a zip archive") from exc
    entries = [e for e in archive.infolist()
               if not e.is_dir() and PurePosixPath(e.filename).suffix.lower() in PHOTO_SUFFIXES
               and len(PurePosixPath(e.filename).parts) >= 2]
    if len(entries) > max_files:
        raise ValueError(f"{len(entries)} photos in the archive; at most {max_files}")
    if sum(e.file_size for e in entries) > max_bytes:
        raise ValueError(f"the archive's photos add up to more than {max_bytes} bytes")
    out = []
    for e in sorted(entries, key=lambda e: e.filename):
        path = PurePosixPath(e.filename)
        try:
            out.append((path.parts[-2], path.name, archive.read(e)))
        except (zipfile.BadZipFile, OSError, RuntimeError) as exc:   # corrupt, or encrypted
            raise ValueError(f"{e.filename}: cannot be read from the archive ({exc})") from exc
    return out


def largest_face_steps(faces: FaceAnalyzer, data: bytes, max_pixels: int) -> Steps[np.ndarray | None]:
    """The embedding of a photo's largest face through the served pipeline; None when it has none."""
    photo = yield from faces.photo_steps(data, max_pixels)
    if not photo.faces:
        return None
    face = max(photo.faces, key=lambda f: f.area)
    return (yield from faces.embed_photo_steps(photo, [face]))[0]


class CalibrationStore:
    """Thresholds calibrated through the API, kept in the data folder (the models folder may be
    read-only): ``calibration.json`` maps an embedder's fingerprint to its ``verification``; a model
    file with other weights never picks up another's threshold."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "calibration.json"

    def _read(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def load(self, fingerprint: str) -> dict | None:
        return self._read().get(fingerprint)

    def _write(self, values: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values, indent=1))
        os.replace(tmp, self.path)                # atomic: a reader sees the old file or the new one

    def save(self, fingerprint: str, verification: dict) -> None:
        self._write({**self._read(), fingerprint: verification})

    def clear(self, fingerprint: str) -> None:
        values = self._read()
        if values.pop(fingerprint, None) is not None:
            self._write(values)
