"""The face pipeline as served: detector (any face-detection family), 5 landmarks (from the detector
when its family gives them, else from the landmark model), alignment and the embedder:

    photo ─► face boxes (tiled when small faces need it) ─► 5 landmarks ─► aligned crop ─► unit embedding

An upload is decoded twice at most (``FaceAnalyzer.photo_steps``): once for the detector (shrunk,
as ``POST /detect`` does, ``app.imaging`` rule 7, as far as the smallest face wanted allows), and the
crops are cut from that same decode when its smallest face still spans ``CROP_DETAIL`` times the crop
models' input; otherwise the photo is decoded again, shrunk less or not at all, for the crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.imaging import REDUCTIONS, DecodedImage, decode_image
from app.models import FaceDetector
from app.models.anchor_detector import DetectParams
from app.models.embedder import FaceEmbedder
from app.models.fixed_input import FixedInputDetector
from app.models.landmarks import LandmarkModel
from app.pipeline import Steps, run_steps
from app.runtime import ModelLoadError
from app.vision.boxes import nms
from app.vision.letterbox import resize_interpolation
from app.vision.postprocess import Detections
from app.vision.tiles import cut_by_inner_edge, look_scales, windows

# the crops are cut from a decode where every face's box spans at least this many times the crop
# models' input side, so that a crop is always a shrink (area-averaged by ``app.vision.align.warp``)
CROP_DETAIL = 2.0
FACE_IOU = 0.4          # NMS of face boxes, within a look and across looks


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


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=resize_interpolation(scale)) if scale != 1 else image


def tiled_detect_steps(detector: FixedInputDetector, image: np.ndarray, params: DetectParams, smallest: float
                       ) -> Steps[Detections]:
    """Faces of ``image`` down to ``smallest`` pixels by a fixed-input detector: the whole image in
    one look, then, where the detector's ``min_face`` needs it, finer looks in overlapping tiles
    (``app.vision.tiles``), every look's tiles in one model run. A finer look keeps only faces
    smaller than the tiles' overlap (each lies whole in some tile; larger ones a coarser look finds
    whole) and none cut by an inner tile edge; all looks' boxes (and landmarks, where the detector
    gives them) then go through one NMS."""
    h, w = image.shape[:2]
    tile, min_face = detector.meta.input_size, detector.meta.min_face
    overlap = tile // 4
    boxes, scores, points = [], [], []
    for i, scale in enumerate(look_scales(max(h, w), tile, min_face, smallest)):
        view = image if i == 0 else _scaled(image, scale)         # the first look: the whole image
        vh, vw = view.shape[:2]
        cuts = [(0, 0, vw, vh)] if i == 0 else windows(vw, vh, tile, overlap)
        found = yield from detector.detect_many_steps([view[y1:y2, x1:x2] for x1, y1, x2, y2 in cuts], params)
        for (x1, y1, x2, y2), dets in zip(cuts, found):
            b = dets.boxes + np.array([x1, y1, x1, y1], np.float32)
            keep = ~cut_by_inner_edge(b, (x1, y1, x2, y2), vw, vh)
            if i:   # a face larger than the overlap may be cut anywhere: a coarser look finds it whole
                keep &= np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) <= overlap
            boxes.append(b[keep] * np.float32(w / vw))
            scores.append(dets.scores[keep])
            if dets.landmarks is not None:
                points.append((dets.landmarks[keep] + np.array([x1, y1], np.float32)) * np.float32(w / vw))
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    order = nms(all_boxes, all_scores, params.iou)[:params.max_det]
    landmarks = np.concatenate(points)[order] if points else None
    return Detections(all_boxes[order], all_scores[order], np.zeros(len(order), np.int64), landmarks)


@dataclass
class FaceAnalyzer:
    detector: FaceDetector
    landmarks: LandmarkModel | None     # not needed (nor used) when the detector gives the landmarks
    embedder: FaceEmbedder | None
    min_face: float = 40.0      # the smallest face (photo pixels) a tiled detector looks for...
    min_fraction: float = 0.02  # ... or this share of the photo's longer side, whichever is larger

    @property
    def landmark_model(self) -> LandmarkModel | None:
        """The model that reads the 5 landmarks on crops around the boxes; None when the detector
        gives them with its boxes (``scrfd``)."""
        return None if self.detector.gives_landmarks else self.landmarks

    def find_steps(self, image: np.ndarray, params: DetectParams, smallest: float) -> Steps[Detections]:
        """Faces of ``image`` (pixels of ``image``), with their landmarks where the detector gives
        them, down to ``smallest`` of its pixels where the detector tiles."""
        if isinstance(self.detector, FixedInputDetector):
            return (yield from tiled_detect_steps(self.detector, image, params, smallest))
        dets, _ = yield from self.detector.detect_steps(image, params)
        return dets

    def read_landmarks_steps(self, image: np.ndarray, boxes: np.ndarray) -> Steps[np.ndarray]:
        """``(N, 4)`` face boxes → ``(N, 5, 2)`` landmarks in ``image`` pixels, by the landmark model."""
        model = self.landmark_model
        if model is None:
            raise ModelLoadError("no face landmark model is installed and the face detector gives none")
        return (yield from model.predict_steps(image, boxes))

    def detect_steps(self, image: np.ndarray, conf: float = 0.5, max_faces: int = 50) -> Steps[list[Face]]:
        """Faces by descending score, each with its 5 landmarks."""
        params = DetectParams(conf=conf, iou=FACE_IOU, max_det=max_faces)
        dets = yield from self.find_steps(image, params, self.min_face)
        if dets.landmarks is not None:       # the detector gives them (scrfd)
            points = dets.landmarks
        else:
            points = yield from self.read_landmarks_steps(image, dets.boxes)
        return [Face(b.astype(np.float32), float(s), p) for b, s, p in zip(dets.boxes, dets.scores, points)]

    def embed_steps(self, image: np.ndarray, faces: list[Face]) -> Steps[np.ndarray]:
        if self.embedder is None:
            raise ModelLoadError("no face embedding model is installed")
        landmarks = np.stack([f.landmarks for f in faces]) if faces else np.zeros((0, 5, 2))
        return (yield from self.embedder.embed_steps(image, landmarks))

    def detect(self, image: np.ndarray, conf: float = 0.5, max_faces: int = 50) -> list[Face]:
        return run_steps(self.detect_steps(image, conf, max_faces))

    def decode_for_detection(self, data: bytes, max_pixels: int) -> DecodedImage:
        """The upload decoded for the detector: shrunk in the JPEG's DCT towards the detector's
        input, or, for a tiled detector, as far as faces of ``min_face`` photo pixels still span
        its ``min_face`` input pixels."""
        if not isinstance(self.detector, FixedInputDetector):
            return self.detector.decode(data, max_pixels)
        finest = self.detector.meta.min_face / self.min_face        # input pixels per photo pixel
        reduction = max((r for r in REDUCTIONS if 1 / r >= finest), default=1)
        return decode_image(data, max_pixels, reduction=reduction)

    def photo_steps(self, data: bytes, max_pixels: int, conf: float = 0.5, max_faces: int = 50
                    ) -> Steps[FacePhoto]:
        """The faces of an upload (what the face routes answer), each with its 5 landmarks, in the
        photo's own pixels: found in a decode shrunk for the detector, their landmarks (where the
        detector does not give them) and later their aligned crops read from a decode detailed
        enough for the smallest of them (the same one when it is)."""
        small = self.decode_for_detection(data, max_pixels)
        params = DetectParams(conf=conf, iou=FACE_IOU, max_det=max_faces)
        smallest = max(self.min_face, self.min_fraction * max(small.photo_width, small.photo_height))
        dets = yield from self.find_steps(small.rgb, params, smallest / small.reduction)
        boxes = small.to_photo(dets.boxes)
        reduction = self.crop_reduction(boxes, small.reduction)
        image = small if reduction == small.reduction else decode_image(data, max_pixels, reduction=reduction)
        if dets.landmarks is not None:       # the detector gives them (scrfd)
            points = dets.landmarks * np.float32(small.reduction)
        else:
            points = (yield from self.read_landmarks_steps(image.rgb, boxes / image.reduction)) * image.reduction
        faces = [Face(b.astype(np.float32), float(s), p.astype(np.float32))
                 for b, s, p in zip(boxes, dets.scores, points)]
        return FacePhoto(image, faces)

    def crop_reduction(self, boxes: np.ndarray, most: int) -> int:
        """The most a photo may be shrunk (at most ``most``) for its crops: every face box of
        ``boxes`` (photo pixels) keeps ``CROP_DETAIL`` times the crop models' input side."""
        if not len(boxes) or most == 1:
            return most
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        crop = max([m.meta.input_size for m in (self.landmark_model, self.embedder) if m is not None], default=0)
        smallest = float(sides.min())
        return max((r for r in REDUCTIONS if r <= most and smallest / r >= CROP_DETAIL * crop), default=1)

    def embed_photo_steps(self, photo: FacePhoto, faces: list[Face]) -> Steps[np.ndarray]:
        """``(N, D)`` embeddings of ``faces`` (some of ``photo.faces``), from ``photo``'s decode."""
        if self.embedder is None:
            raise ModelLoadError("no face embedding model is installed")
        return (yield from self.embedder.embed_steps(photo.image.rgb, photo.landmarks_in_image(faces)))

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return run_steps(self.embed_steps(image, faces))
