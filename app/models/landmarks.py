"""``crop-landmarks``: a landmark regressor read on a square crop around each face box (Sightline's
own 5-point model, face-api's 68-point net). Its points are reduced to the 5 the API serves (left
eye, right eye, nose tip, left mouth corner, right mouth corner, as seen in the image) by the
metadata's ``point_groups``, and mapped back to image pixels."""

from __future__ import annotations

import numpy as np

from app.models.base import OnnxModel, normalise
from app.models.metadata import LandmarkMeta
from app.pipeline import Infer, Steps, run_steps
from app.vision.align import average_mirror_reading, crop_box, invert_affine, transform_points, with_mirror


def five_points(points: np.ndarray, groups: list[list[int]] | None) -> np.ndarray:
    """``(N, P, 2)`` model points → ``(N, 5, 2)``: each of the 5 the mean of its group (as is when
    ``groups`` is None: a 5-point model)."""
    if groups is None:
        return points
    return np.stack([points[:, g].mean(axis=1) for g in groups], axis=1).astype(np.float32)


class LandmarkModel(OnnxModel):
    families = ("crop-landmarks",)
    meta: LandmarkMeta

    def expected_output(self) -> tuple[int, ...]:
        return (1, 2 * self.meta.points)

    def predict_steps(self, image: np.ndarray, boxes: np.ndarray) -> Steps[np.ndarray]:
        """``(N, 4)`` face boxes → ``(N, 5, 2)`` landmarks in ``image`` pixels; every face (and, with the
        flip test, its mirror image) in one model run."""
        if not len(boxes):
            return np.zeros((0, 5, 2), np.float32)
        size, margin = self.meta.input_size, self.meta.crop_margin
        cut = [crop_box(image, box, size, margin) for box in boxes]
        crops = np.stack([c for c, _ in cut])
        batch = with_mirror(crops) if self.meta.flip_test else crops
        out = (yield Infer(self, normalise(batch, self.meta.normalization))).reshape(len(batch), -1, 2) * size
        out = five_points(out, self.meta.point_groups)
        if self.meta.flip_test:
            out = average_mirror_reading(out, size)
        return np.stack([transform_points(p, invert_affine(m)) for p, (_, m) in zip(out, cut)])

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return run_steps(self.predict_steps(image, boxes))
