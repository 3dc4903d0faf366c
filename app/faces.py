"""The face models as served: the face detector (the object detector with one class), the 5-point
landmark regressor, and the embedder with its calibrated threshold and verification head; each
reads its preprocessing contract from its own metadata. ``FaceAnalyzer`` chains them:

    photo ─► face boxes ─► square crop per box ─► 5 landmarks ─► aligned crop ─► unit embedding

An upload is decoded twice at most (``FaceAnalyzer.photo_steps``): shrunk for the face detector,
as ``POST /detect`` does (``app.imaging`` rule 7), and the crops are cut from that same decode when
its smallest face still spans ``CROP_DETAIL`` times the crop models' input; otherwise the photo is
decoded again, shrunk less or not at all, for the crops. A phone selfie's face spans hundreds of
pixels even in a decode shrunk 8 times, so it is read once, small.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict

from app.detector import DetectParams, Normalization, ObjectDetector
from app.imaging import REDUCTIONS, DecodedImage, decode_image
from app.pipeline import Infer, Steps, run_steps
from app.runtime import ModelLoadError, SessionRunner, parse_metadata
from app.vision.align import (align_face, average_mirror_reading, crop_box, invert_affine, sum_mirror_embeddings,
                              transform_points, unit, with_mirror)
from app.vision.letterbox import to_tensor

FACE_DETECTION, FACE_LANDMARKS, FACE_EMBEDDING = "face_detection", "face_landmarks", "face_embedding"

# the crops are cut from a decode where every face's box spans at least this many times the crop
# models' input side, so that a crop is always a shrink (area-averaged by ``app.vision.align.warp``)
CROP_DETAIL = 2.0


def _normalise(crops: np.ndarray, norm: Normalization) -> np.ndarray:
    """``(B, S, S, 3) uint8`` → ``(B, 3, S, S) float32`` with the model's mean and std (of x / 255)."""
    return to_tensor(crops, norm.mean, norm.std)


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    task: str
    version: str
    input_size: int
    normalization: Normalization


class LandmarkMeta(_Meta):
    crop_margin: float
    flip_test: bool = False   # average with the mirrored crop's points (a model trained with mirroring)


class VerificationMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    threshold: float
    target_far: float
    roc: list[dict[str, float]] | None = None   # [{"far", "tar", "threshold"}, ...] on validation identities


class HeadMeta(BaseModel):
    weights: list[float]
    bias: float


class EmbedderMeta(_Meta):
    embedding_dim: int
    template: list[tuple[float, float]]
    distance: str
    verification: VerificationMeta
    verification_head: HeadMeta | None = None
    weights_sha256: str | None = None
    flip_test: bool = False   # embed the aligned crop and its mirror image, and average (trained with mirroring)


class _OnnxModel(ABC):
    """An ONNX Runtime session with validated metadata; thread-safe like the session itself."""

    meta_class: type[_Meta] = _Meta

    def __init__(self, session: ort.InferenceSession, meta: _Meta, path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.runner = SessionRunner(session)
        self.raw_metadata: dict[str, Any] = {}

    @classmethod
    def from_session(cls, session: ort.InferenceSession, raw: dict[str, Any], path: Path):
        meta = parse_metadata(cls.meta_class, raw, path, f"a {raw.get('task')} model")
        model = cls(session, meta, path)
        model.raw_metadata = raw
        out = model.run(np.zeros((1, 3, meta.input_size, meta.input_size), np.float32))
        if out.shape != (1, model.output_width()):
            raise ModelLoadError(f"{path.name}: output shape {out.shape} != (1, {model.output_width()}) "
                                 "from its metadata")
        return model

    @abstractmethod
    def output_width(self) -> int:
        """Values per input row that the metadata implies."""

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)


class LandmarkModel(_OnnxModel):
    meta_class = LandmarkMeta
    meta: LandmarkMeta

    def output_width(self) -> int:
        return 10

    def predict_steps(self, image: np.ndarray, boxes: np.ndarray) -> Steps[np.ndarray]:
        """``(N, 4)`` face boxes → ``(N, 5, 2)`` landmarks in ``image`` pixels; every face (and, with the
        flip test, its mirror image) in one model run."""
        if not len(boxes):
            return np.zeros((0, 5, 2), np.float32)
        size, margin = self.meta.input_size, self.meta.crop_margin
        cut = [crop_box(image, box, size, margin) for box in boxes]
        crops = np.stack([c for c, _ in cut])
        batch = with_mirror(crops) if self.meta.flip_test else crops
        out = (yield Infer(self, _normalise(batch, self.meta.normalization))).reshape(-1, 5, 2) * size
        if self.meta.flip_test:
            out = average_mirror_reading(out, size)
        return np.stack([transform_points(p, invert_affine(m)) for p, (_, m) in zip(out, cut)])

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return run_steps(self.predict_steps(image, boxes))


class FaceEmbedder(_OnnxModel):
    meta_class = EmbedderMeta
    meta: EmbedderMeta

    @property
    def fingerprint(self) -> str:
        """Version plus a digest of the weights (written at export, so recalibrating the threshold keeps
        it): the gallery compares only faces embedded by these very weights."""
        if not hasattr(self, "_fingerprint"):
            digest = self.meta.weights_sha256
            if digest is None:
                digest = hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path.is_file() else "unknown"
            # the flip test changes every embedding, so it is part of what the gallery matches on
            self._fingerprint = f"{self.meta.version}+{digest[:12]}" + ("+flip" if self.meta.flip_test else "")
        return self._fingerprint

    def output_width(self) -> int:
        return self.meta.embedding_dim

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
        crops = np.stack([align_face(image, pts, size, template) for pts in landmarks])
        batch = with_mirror(crops) if self.meta.flip_test else crops
        out = yield Infer(self, _normalise(batch, self.meta.normalization))
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


@dataclass(frozen=True)
class Face:
    box: np.ndarray         # (4,) xyxy pixels
    score: float
    landmarks: np.ndarray   # (5, 2) pixels

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass(frozen=True)
class FacePhoto:
    """An upload's faces, in the photo's own pixels, and ``image``, the decode their crops come from
    (the photo shrunk ``image.reduction`` times)."""

    image: DecodedImage
    faces: list[Face]

    def landmarks_in_image(self, faces: list[Face]) -> np.ndarray:
        """``(N, 5, 2)`` landmarks of ``faces`` in ``image``'s pixels."""
        if not faces:
            return np.zeros((0, 5, 2), np.float32)
        return np.stack([f.landmarks for f in faces]).astype(np.float32) / self.image.reduction


@dataclass
class FaceAnalyzer:
    detector: ObjectDetector
    landmarks: LandmarkModel
    embedder: FaceEmbedder | None

    def detect_steps(self, image: np.ndarray, conf: float = 0.5, max_faces: int = 50) -> Steps[list[Face]]:
        """Faces by descending score, each with its 5 landmarks."""
        dets, _ = yield from self.detector.detect_steps(image, DetectParams(conf=conf, iou=0.4, max_det=max_faces))
        points = yield from self.landmarks.predict_steps(image, dets.boxes)
        return [Face(b.astype(np.float32), float(s), p) for b, s, p in zip(dets.boxes, dets.scores, points)]

    def embed_steps(self, image: np.ndarray, faces: list[Face]) -> Steps[np.ndarray]:
        if self.embedder is None:
            raise ModelLoadError("no face embedding model is installed")
        landmarks = np.stack([f.landmarks for f in faces]) if faces else np.zeros((0, 5, 2))
        return (yield from self.embedder.embed_steps(image, landmarks))

    def detect(self, image: np.ndarray, conf: float = 0.5, max_faces: int = 50) -> list[Face]:
        return run_steps(self.detect_steps(image, conf, max_faces))

    def photo_steps(self, data: bytes, max_pixels: int, conf: float = 0.5, max_faces: int = 50
                    ) -> Steps[FacePhoto]:
        """The faces of an upload (what the face routes answer), each with its 5 landmarks, in the
        photo's own pixels: found in a decode shrunk for the detector, their landmarks read from a
        decode detailed enough for the smallest of them (the same one when it is)."""
        small = self.detector.decode(data, max_pixels)
        params = DetectParams(conf=conf, iou=0.4, max_det=max_faces)
        dets, _ = yield from self.detector.detect_steps(small.rgb, params)
        boxes = small.to_photo(dets.boxes)
        reduction = self.crop_reduction(boxes, small.reduction)
        image = small if reduction == small.reduction else decode_image(data, max_pixels, reduction=reduction)
        points = yield from self.landmarks.predict_steps(image.rgb, boxes / image.reduction)
        faces = [Face(b.astype(np.float32), float(s), (p * image.reduction).astype(np.float32))
                 for b, s, p in zip(boxes, dets.scores, points)]
        return FacePhoto(image, faces)

    def crop_reduction(self, boxes: np.ndarray, most: int) -> int:
        """The most a photo may be shrunk (at most ``most``) for its crops: every face box of
        ``boxes`` (photo pixels) keeps ``CROP_DETAIL`` times the crop models' input side."""
        if not len(boxes) or most == 1:
            return most
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        crop = max(self.landmarks.meta.input_size, self.embedder.meta.input_size if self.embedder else 0)
        smallest = float(sides.min())
        return max((r for r in REDUCTIONS if r <= most and smallest / r >= CROP_DETAIL * crop), default=1)

    def embed_photo_steps(self, photo: FacePhoto, faces: list[Face]) -> Steps[np.ndarray]:
        """``(N, D)`` embeddings of ``faces`` (some of ``photo.faces``), from ``photo``'s decode."""
        if self.embedder is None:
            raise ModelLoadError("no face embedding model is installed")
        return (yield from self.embedder.embed_steps(photo.image.rgb, photo.landmarks_in_image(faces)))

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return run_steps(self.embed_steps(image, faces))
