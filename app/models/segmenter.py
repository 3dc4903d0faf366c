"""``unet`` and ``foreground-mask``: the semantic segmenters as served: the preprocessing contract
(input size, normalisation, output stride, class names and colours) read from the model's own
metadata, ONNX Runtime inference, then the per-pixel scores taken back to the original image
(``app.vision.masks``). A ``unet`` gives one logit plane per class; a ``foreground-mask`` model one
plane, the probability of its one class, read as the two planes (threshold, probability), and
optionally kept only inside the boxes a served detector finds for that class (``box_gate``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from app.imaging import DecodedImage, decode_image
from app.models.anchor_detector import DetectParams, Detector, StageTimes
from app.models.base import OnnxModel, normalise
from app.models.metadata import ForegroundMaskMeta, SegmenterMeta
from app.pipeline import Infer, Steps, run_steps
from app.vision.letterbox import letterbox
from app.vision.masks import logits_to_mask


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray   # (H, W) uint8 class ids at the original resolution
    times: StageTimes


class Segmenter(OnnxModel):
    """One segmentation model. Thread-safe: ONNX Runtime sessions may be run concurrently."""

    families = ("unet", "foreground-mask")
    meta: SegmenterMeta

    def expected_output(self) -> tuple[int, ...]:
        side = self.meta.input_size // self.meta.output_stride
        planes = 1 if isinstance(self.meta, ForegroundMaskMeta) else len(self.meta.class_names)
        return (1, planes, side, side)

    def class_planes(self, output: np.ndarray) -> np.ndarray:
        """One image's output → ``(C, h, w)`` planes whose per-pixel argmax is the class id."""
        if isinstance(self.meta, ForegroundMaskMeta):
            return np.concatenate([np.full_like(output, self.meta.threshold), output])
        return output

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)

    def segment_steps(self, image: np.ndarray) -> Steps[Segmentation]:
        """``HxWx3 uint8 RGB`` → class ids at the image's own resolution (``app.pipeline`` steps)."""
        return self._steps(image, 1, None)

    def decode(self, data: bytes, max_pixels: int, full: bool = False, at_least: int = 0) -> DecodedImage:
        """An upload decoded for this segmenter: a large JPEG comes already shrunk towards the input
        size (or ``at_least``, a gate detector's) in its DCT (``app.imaging``, rule 7), unless
        ``full`` (an overlay draws on every pixel)."""
        return decode_image(data, max_pixels, fit=None if full else max(self.meta.input_size, at_least))

    def photo_steps(self, image: DecodedImage) -> Steps[Segmentation]:
        """``segment_steps`` on a decoded upload: the mask at the photo's own resolution, however
        shrunk ``image.rgb`` was decoded."""
        return self._steps(image.rgb, image.reduction, (image.photo_width, image.photo_height))

    def _steps(self, image: np.ndarray, reduction: int, photo: tuple[int, int] | None) -> Steps[Segmentation]:
        t0 = time.perf_counter()
        canvas, geo = letterbox(image, self.meta.input_size)
        batch = normalise(canvas[None], self.meta.normalization)
        t1 = time.perf_counter()
        logits = self.class_planes((yield Infer(self, batch))[0])
        t2 = time.perf_counter()
        if reduction != 1 and photo is not None:
            # photo pixel X is decoded coordinate X / reduction (DCT scaling): the photo's own letterbox
            geo = replace(geo, scale=geo.scale / reduction, width=photo[0], height=photo[1])
        mask = logits_to_mask(logits, geo, self.meta.output_stride)
        t3 = time.perf_counter()
        return Segmentation(mask, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000))

    def gate_steps(self, image: DecodedImage, mask: np.ndarray, detector: Detector) -> Steps[float]:
        """``box_gate``: the foreground pixels of ``mask`` (photo size) outside every box of the gate
        label that ``detector`` finds in ``image`` become background, in place. Returns the ms spent."""
        meta = self.meta
        assert isinstance(meta, ForegroundMaskMeta) and meta.box_gate is not None
        t0 = time.perf_counter()
        params = DetectParams(conf=meta.box_gate_score, classes=detector.class_ids([meta.box_gate]))
        dets, _ = yield from detector.photo_steps(image, params)
        keep = np.zeros(mask.shape, bool)
        h, w = mask.shape
        for x1, y1, x2, y2 in dets.boxes:
            mx, my = (x2 - x1) * meta.box_gate_margin, (y2 - y1) * meta.box_gate_margin
            keep[max(0, int(y1 - my)):min(h, int(np.ceil(y2 + my))), max(0, int(x1 - mx)):min(w, int(np.ceil(x2 + mx)))] = True
        mask[~keep] = 0
        return (time.perf_counter() - t0) * 1000

    def gate_detector(self, detectors: list[Detector]) -> Detector | None:
        """The first of ``detectors`` that knows this model's ``box_gate`` label; None when the model
        has no gate or no detector knows the label (the mask is then served ungated)."""
        gate = getattr(self.meta, "box_gate", None)
        return next((d for d in detectors if gate in d.meta.class_names), None) if gate else None

    def segment(self, image: np.ndarray) -> Segmentation:
        return run_steps(self.segment_steps(image))
