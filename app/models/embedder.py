"""Face embedders: ``sightline-facenet`` (trained here with triplet loss), ``dlib-resnet`` (dlib's
ResNet descriptor, 150 px chips) and ``arcface`` (InsightFace's recognition models, 112 px). They
differ only in what their metadata says: the aligned face's size and template, colour order and
normalisation, the threshold and how it was set. Each embedding is made unit length, so distances
are squared L2 of unit vectors (``2 - 2 cos``) for every family alike."""

from __future__ import annotations

import hashlib

import numpy as np

from app.models.base import OnnxModel, normalise
from app.models.metadata import EmbedderMeta, VerificationMeta
from app.pipeline import Infer, Steps, run_steps
from app.vision.align import align_face, sum_mirror_embeddings, unit, with_mirror


class FaceEmbedder(OnnxModel):
    families = ("sightline-facenet", "dlib-resnet", "arcface")
    meta: EmbedderMeta

    def expected_output(self) -> tuple[int, ...]:
        return (1, self.meta.embedding_dim)

    @property
    def file_verification(self) -> VerificationMeta:
        """The threshold the model file carries (``use_verification`` may have replaced it)."""
        if not hasattr(self, "_file_verification"):
            self._file_verification = self.meta.verification
        return self._file_verification

    def use_verification(self, verification: VerificationMeta | None) -> None:
        """Serve ``verification`` (a calibration) instead of the file's; None: the file's again."""
        original = self.file_verification
        self.meta.verification = original if verification is None else verification

    @property
    def fingerprint(self) -> str:
        """Family, version and a digest of the weights (written at export, so recalibrating the
        threshold keeps it): the gallery compares only faces embedded by these very weights."""
        if not hasattr(self, "_fingerprint"):
            digest = self.meta.weights_sha256
            if digest is None:
                digest = hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path.is_file() else "unknown"
            prefix = "" if self.meta.family == "sightline-facenet" else f"{self.meta.family}-"
            # the flip test changes every embedding, so it is part of what the gallery matches on
            self._fingerprint = f"{prefix}{self.meta.version}+{digest[:12]}" + ("+flip" if self.meta.flip_test else "")
        return self._fingerprint

    @property
    def threshold(self) -> float:
        """The 1:1 distance threshold, at the calibrated false-accept rate."""
        return self.meta.verification.threshold

    def threshold_at_far(self, far: float) -> float:
        """The distance threshold for a per-comparison false-accept rate, interpolated in log FAR
        between the calibrated ROC points (clamped to their range); never looser than ``threshold``."""
        points = sorted((p["far"], p["threshold"]) for p in (self.meta.verification.roc or []) if p["far"] > 0)
        if not points:
            return self.threshold
        fars, thresholds = np.log10([f for f, _ in points]), [t for _, t in points]
        value = float(np.interp(np.log10(max(far, 1e-12)), fars, thresholds))
        return min(value, self.threshold)

    def identification_threshold(self, gallery_faces: int, fpir: float) -> float:
        """An unknown face is compared with every enrolled face: to name at most ``fpir`` of unknown
        faces, each comparison may falsely accept ``fpir / gallery_faces``."""
        return self.threshold_at_far(fpir / max(1, gallery_faces))

    def embed_steps(self, image: np.ndarray, landmarks: np.ndarray) -> Steps[np.ndarray]:
        """``(N, 5, 2)`` landmarks → ``(N, D)`` unit-length embeddings of the aligned faces."""
        if not len(landmarks):
            return np.zeros((0, self.meta.embedding_dim), np.float32)
        size, template = self.meta.input_size, np.asarray(self.meta.template)
        crops = np.stack([align_face(image, pts, size, template, self.meta.align_points) for pts in landmarks])
        batch = with_mirror(crops) if self.meta.flip_test else crops
        out = yield Infer(self, normalise(batch, self.meta.normalization))
        return sum_mirror_embeddings(out) if self.meta.flip_test else unit(out)

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return run_steps(self.embed_steps(image, landmarks))

    def probability(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """DeepFace's head: p(same person) from ``|a - b|``; None when the file has no head."""
        head = self.meta.verification_head
        if head is None:
            return None
        logit = float(np.dot(np.asarray(head.weights), np.abs(a - b)) + head.bias)
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))))
