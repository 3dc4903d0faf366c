"""The eigenfaces baseline (Turk and Pentland, 1991): PCA on landmark-aligned grey pixels, fitted on
the training identities, faces compared by distance between their unit-length projections. It
shows how hard the synthetic faces are for pixels alone; the embedder is measured the same way.
"""

from __future__ import annotations

import numpy as np

from app.vision.align import align_face
from training.faces.calibrate import pair_distances, threshold_at_far
from training.faces.data import FaceSample, cut_crops

SIZE = 32   # aligned crop side for the baseline


def grey_vectors(samples: list[FaceSample]) -> np.ndarray:
    crops = cut_crops(samples, lambda photo, s: align_face(photo, s.landmarks, SIZE))
    grey = np.stack(crops).astype(np.float32).mean(axis=3).reshape(len(samples), -1) / 255.0
    return grey


def fit_eigenfaces(vectors: np.ndarray, components: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Mean face and the top ``components`` principal axes, ``(components, pixels)``."""
    mean = vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    return mean, vt[:components]


def project(vectors: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    z = (vectors - mean) @ axes.T
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)


def eigenfaces_baseline(train: list[FaceSample], test: list[FaceSample], far: float = 1e-3,
                        components: int = 128) -> dict[str, float]:
    """TAR at ``far`` of eigenfaces on ``test`` identities (never fitted on), annotated landmarks."""
    mean, axes = fit_eigenfaces(grey_vectors(train), components)
    labels = np.array([s.identity for s in test])
    gen, imp = pair_distances(project(grey_vectors(test), mean, axes), labels)
    out = threshold_at_far(gen, imp, far)
    return {"tar_at_far": out["tar"], "far": out["far"], "components": components, "crop": SIZE,
            "genuine_pairs": out["genuine_pairs"], "impostor_pairs": out["impostor_pairs"]}
