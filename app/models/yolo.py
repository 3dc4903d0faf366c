"""``yolov5``, ``yolov8`` and their ``-seg`` variants: Ultralytics' YOLO exports as people already have
them (YOLOv5; YOLOv8 and YOLO11, which share one head layout), detection and instance segmentation.

Outputs, per image, ``N`` candidates (``boxes`` in the metadata) of ``C`` classes:

- ``yolov5``: rows ``(B, N, 5 + C)``: ``cx, cy, w, h`` in input pixels, objectness, C class scores;
  a candidate's score is objectness x its best class score;
- ``yolov8``: columns ``(B, 4 + C, N)``: ``cx, cy, w, h``, C class scores (no objectness);
- ``-seg``: the same with ``M`` (32) mask coefficients after the class scores, and a second
  output of M prototype planes ``(B, M, P, P)``, ``P = input / 4``.

Preprocessing is Ultralytics' own: the photo letterboxed (centred, grey 114) into the square input,
RGB, ``x / 255`` (``app.vision.letterbox``; the resize is bilinear, an area average below half
size, where Ultralytics always resizes bilinearly). Candidates scoring above ``conf`` (strictly, as
Ultralytics), class-aware NMS (``app.vision.boxes.nms_per_class``), boxes back to the photo.

**One output for the segmentation layout.** The server's runner hands a model's FIRST output to
its decoder, and the dynamic batcher splits that one tensor into each request's rows
(``app.runtime``, ``app.batching``). Rather than teach both about several outputs, the import
command rewrites a segmentation export: two ``Reshape`` nodes flatten each image's detections and
prototypes, a ``Concat`` joins them into one ``(B, N F + M P P)`` output (``flatten_outputs``), and
the decoder splits it again with the sizes the metadata carries (``YoloLayout.split``). Everything
the runner does (fixed batch sizes, IO binding, the lone session) then holds for these models too;
the cost is that a ``-seg`` file must come through ``python -m app.models import``, which every
outside file does anyway to get its metadata.

**Instance masks.** After NMS, each kept candidate's logits over the prototype grid are
``coefficients @ prototypes`` (``(P, P)``). Each pixel of the photo whose centre lies in the
detection's box reads them bilinearly at that centre (taken through the letterbox, and through the
JPEG's DCT shrink when the upload was decoded shrunk), and belongs to the instance where the logit
is above 0, i.e. ``sigmoid > 0.5``. That is Ultralytics' ``process_mask`` (logits cropped to the
box, upsampled bilinearly, thresholded at 0) with its two resamplings (prototypes to the input,
input to the photo) made one, so masks are drawn at the photo's own resolution and agree with
Ultralytics' up to a pixel along their edges. A mask is painted only over its box's pixels
(``InstanceMask``) and encoded for the API as COCO RLE or polygons.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import cv2
import numpy as np
import onnxruntime as ort

from app.imaging import DecodedImage
from app.models.anchor_detector import DetectParams, Detector, StageTimes
from app.models.base import normalise
from app.models.metadata import YoloMeta, YoloSegMeta
from app.pipeline import Steps
from app.runtime import ModelLoadError
from app.vision.boxes import nms_per_class
from app.vision.letterbox import Letterbox, letterbox, unletterbox_boxes
from app.vision.masks import rle_counts, rle_string
from app.vision.postprocess import Detections

SEG_OUTPUT = "sightline_detections_and_protos"     # the one output of a rewritten segmentation graph
SEGMENT_FAMILIES = ("yolov5-seg", "yolov8-seg")


class NotYolo(ValueError):
    """Outputs or metadata that are not an Ultralytics YOLO export Sightline serves, and why."""


# ---- the layout of one image's output ----

@dataclass(frozen=True)
class YoloLayout:
    """Where each value lies in one image's output. ``F = 4 + objectness + classes + masks`` values
    per candidate: rows ``(N, F)`` with objectness (``yolov5``), columns ``(F, N)`` without."""

    objectness: bool    # yolov5's layout
    classes: int
    boxes: int          # N
    masks: int = 0      # M mask coefficients per candidate (and M prototype planes)
    proto: int = 0      # P, the side of the prototype planes

    @property
    def values(self) -> int:
        return 4 + int(self.objectness) + self.classes + self.masks

    @property
    def detection_shape(self) -> tuple[int, int]:
        return (self.boxes, self.values) if self.objectness else (self.values, self.boxes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One image's served output: the detections, or (segmentation) detections and prototypes
        flattened and concatenated."""
        if not self.masks:
            return self.detection_shape
        return (self.boxes * self.values + self.masks * self.proto ** 2,)

    def split(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One image's output → candidates ``(N, F)`` (a view, whatever the family's layout) and
        the prototypes ``(M, P, P)`` (None without masks)."""
        protos = None
        if self.masks:
            cut = self.boxes * self.values
            raw, protos = raw[:cut].reshape(self.detection_shape), raw[cut:].reshape(self.masks, self.proto, self.proto)
        return (raw if self.objectness else raw.T), protos

    def describe(self) -> str:
        """What each candidate holds, in words."""
        parts = ["4 box values", *(["objectness"] if self.objectness else []), f"{self.classes} class scores",
                 *([f"{self.masks} mask coefficients"] if self.masks else [])]
        return " + ".join(parts)


def layout_of(meta: YoloMeta) -> YoloLayout:
    """The layout a file's metadata declares."""
    seg = isinstance(meta, YoloSegMeta)
    return YoloLayout(meta.family.startswith("yolov5"), len(meta.class_names), meta.boxes,
                      meta.mask_channels if seg else 0, meta.proto_size if seg else 0)


# ---- decoding ----

def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` centre, width, height → ``(N, 4) float32`` xyxy."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def score_candidates(rows: np.ndarray, layout: YoloLayout, conf: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows (N, F)`` → the candidates whose best class score (x objectness for ``yolov5``) is above
    ``conf``: their indices ``(K,) int64``, scores ``(K,) float32`` and classes ``(K,) int64``."""
    first = 4 + int(layout.objectness)
    rows_in = np.arange(len(rows))
    if layout.objectness:                       # obj x cls <= obj: only rows whose objectness passes
        rows_in = np.flatnonzero(rows[:, 4] > conf)
    cls = rows[rows_in, first:first + layout.classes]
    if layout.objectness:
        cls = cls * rows[rows_in, 4:5]
    ids = cls.argmax(axis=1)
    scores = cls[np.arange(len(cls)), ids]
    passed = scores > conf
    return rows_in[passed].astype(np.int64), scores[passed].astype(np.float32), ids[passed].astype(np.int64)


def keep_detections(rows: np.ndarray, layout: YoloLayout, geo: Letterbox, params: DetectParams
                    ) -> tuple[Detections, np.ndarray]:
    """One image's candidates ``(N, F)`` → at most ``params.max_det`` detections, best first, boxes
    ``(K, 4) float32`` xyxy in the image's pixels; and the kept candidates' indices ``(K,)``.
    ``params.classes`` is applied before the (class-aware) NMS, so other classes never suppress."""
    idx, scores, ids = score_candidates(rows, layout, params.conf)
    if params.classes is not None:
        wanted = np.isin(ids, list(params.classes))
        idx, scores, ids = idx[wanted], scores[wanted], ids[wanted]
    boxes = cxcywh_to_xyxy(rows[idx, :4])
    keep = nms_per_class(boxes, scores, ids, params.iou, params.max_det)
    return Detections(unletterbox_boxes(boxes[keep], geo), scores[keep], ids[keep]), idx[keep]


# ---- instance masks ----

@dataclass(frozen=True)
class InstanceMask:
    """One detection's pixels in a photo: ``pixels (h, w) bool`` whose top-left pixel is the photo's
    ``(x, y)``; no pixel outside the detection's box belongs to it."""

    x: int
    y: int
    pixels: np.ndarray

    def full(self, width: int, height: int) -> np.ndarray:
        """The ``(height, width) bool`` mask of the whole photo."""
        out = np.zeros((height, width), bool)
        h, w = self.pixels.shape
        out[self.y:self.y + h, self.x:self.x + w] = self.pixels
        return out

    def rle(self, width: int, height: int) -> dict[str, Any]:
        """COCO's compressed RLE of the mask in a ``width`` x ``height`` photo (what
        ``pycocotools.mask.decode`` reads), built from the columns the box spans only."""
        h, w = self.pixels.shape
        columns = np.zeros((w, height), bool)       # the box's columns of the photo, one per row
        columns[:, self.y:self.y + h] = self.pixels.T
        counts = rle_counts(columns.T) or [0]       # column-major runs (a view: no copy), zeros first
        counts[0] += self.x * height                # the columns left of the box: zeros
        after = (width - self.x - w) * height
        if len(counts) % 2:                         # the last run is of zeros: the columns right of it join it
            counts[-1] += after
        elif after:
            counts.append(after)
        return {"size": [int(height), int(width)], "counts": rle_string(counts)}

    def polygons(self) -> list[list[tuple[float, float]]]:
        """The outer outlines of the mask's pixels (``cv2.findContours``, external contours, simple
        chains), each a list of ``(x, y)`` vertices at the centres of outline pixels, in the photo's
        continuous coordinates; a part too small to make 3 vertices is left out."""
        contours, _ = cv2.findContours(self.pixels.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        offset = np.array([self.x + 0.5, self.y + 0.5])
        return [[(float(px), float(py)) for px, py in c.reshape(-1, 2) + offset] for c in contours if len(c) >= 3]


def pixel_window(lo: float, hi: float) -> tuple[int, int]:
    """The pixels ``i`` whose centre ``i + 0.5`` lies in ``[lo, hi)``: ``range(first, end)``."""
    first = math.ceil(lo - 0.5)
    return first, max(first, math.ceil(hi - 0.5))


def bilinear_taps(positions: np.ndarray, cell: float, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (input pixels, ``(n,)``) read on a grid of ``side`` cells ``cell`` input pixels wide,
    bilinearly with PyTorch's ``align_corners=False`` (clamped at the edges): the two cells read
    ``(n,) intp`` each, and the second one's weight ``(n,) float32``."""
    u = np.clip(positions / cell - 0.5, 0, side - 1)
    lower = np.floor(u).astype(np.intp)
    return lower, np.minimum(lower + 1, side - 1), (u - lower).astype(np.float32)


def paint_mask(plane: np.ndarray, box: np.ndarray, geo: Letterbox, reduction: int = 1) -> InstanceMask:
    """One detection's logits ``(P, P)`` over the model input → its pixels in the photo: those whose
    centre lies in ``box`` (xyxy, photo pixels) and where the logits read bilinearly at that centre
    are above 0. A photo pixel ``X`` is the decoded image's ``X / reduction`` (DCT shrink), placed in
    the input by ``geo``."""
    x0, x1 = pixel_window(float(box[0]), float(box[2]))
    y0, y1 = pixel_window(float(box[1]), float(box[3]))
    cell = geo.size / plane.shape[-1]
    xs = (np.arange(x0, x1) + 0.5) / reduction * geo.scale + geo.pad_x
    ys = (np.arange(y0, y1) + 0.5) / reduction * geo.scale + geo.pad_y
    cx0, cx1, fx = bilinear_taps(xs, cell, plane.shape[1])
    cy0, cy1, fy = bilinear_taps(ys, cell, plane.shape[0])
    rows = plane[cy0] * (1 - fy)[:, None] + plane[cy1] * fy[:, None]        # (h, P)
    logits = rows[:, cx0] * (1 - fx) + rows[:, cx1] * fx                      # (h, w)
    return InstanceMask(x0, y0, logits > 0)


@dataclass(frozen=True)
class InstanceDetections(Detections):
    """Detections of an instance-segmentation model, each with its mask logits over the prototype
    grid (``planes (K, P, P) float32``); ``masks()`` paints them in the pixels the boxes are in."""

    planes: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.float32))
    geo: Letterbox | None = None    # where the image the model saw lay in its input
    reduction: int = 1              # box pixels per pixel of that image (a DCT-shrunk decode's factor)

    def masks(self) -> list[InstanceMask]:
        """One mask per detection, in order."""
        if self.geo is None:
            raise ValueError("instance detections without their letterbox cannot paint masks")
        return [paint_mask(plane, box, self.geo, self.reduction) for plane, box in zip(self.planes, self.boxes)]


# ---- the served models ----

class YoloDetector(Detector):
    """An Ultralytics detection export (``yolov5``, ``yolov8``) serving ``/detect``."""

    families = ("yolov5", "yolov8")
    gives_landmarks: ClassVar[bool] = False
    meta: YoloMeta

    def __init__(self, session: ort.InferenceSession, meta: YoloMeta, path) -> None:
        super().__init__(session, meta, path)
        self.layout = layout_of(meta)

    def expected_output(self) -> tuple[int, ...]:
        return (1, *self.layout.output_shape)

    def check_output(self) -> None:
        try:
            super().check_output()
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}: a {self.meta.family} output of {self.layout.boxes} candidates, each "
                                 f"{self.layout.describe()} ({len(self.meta.class_names)} class names)") from None

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` (centred on grey 114) and its geometry."""
        canvas, geo = letterbox(image, self.meta.input_size)
        return normalise(canvas[None], self.meta.normalization), geo

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        rows, _ = self.layout.split(raw)
        return keep_detections(rows, self.layout, geo, params)[0]


class YoloSegDetector(YoloDetector):
    """An Ultralytics instance-segmentation export (``yolov5-seg``, ``yolov8-seg``), its outputs
    joined into one by the import command: detections with their masks."""

    families = SEGMENT_FAMILIES
    meta: YoloSegMeta

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> InstanceDetections:
        rows, protos = self.layout.split(raw)
        assert protos is not None
        dets, kept = keep_detections(rows, self.layout, geo, params)
        coeffs = rows[kept, -self.layout.masks:].astype(np.float32)                       # (K, M)
        planes = (coeffs @ protos.reshape(self.layout.masks, -1)).reshape(-1, *protos.shape[1:])   # (K, P, P)
        return InstanceDetections(dets.boxes, dets.scores, dets.class_ids, planes=planes, geo=geo)

    def photo_steps(self, image: DecodedImage, params: DetectParams
                    ) -> Steps[tuple[InstanceDetections, StageTimes]]:
        """``detect_steps`` on a decoded upload: boxes in the photo's pixels, masks painted there."""
        dets, times = yield from self.detect_steps(image.rgb, params)
        return replace(dets, boxes=image.to_photo(dets.boxes), reduction=image.reduction), times


# ---- what the import command reads: Ultralytics' metadata, the outputs, the graph rewrite ----

def class_names(value: Any) -> list[str]:
    """Ultralytics' ``names`` (``"{0: 'person', 1: 'bicycle'}"``, a Python literal read with
    ``ast.literal_eval``, never ``eval``; a list in older YOLOv5 exports; a JSON object's string
    keys) → the names by class id. ``NotYolo`` unless the ids are exactly 0 to C - 1."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise NotYolo(f"its names {value[:60]!r} are not a Python literal") from None
    if isinstance(value, dict):
        by_id = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in value.items()}
        if not all(type(k) is int for k in by_id):
            raise NotYolo("its names' keys are not class ids")
        if sorted(by_id) != list(range(len(by_id))):
            raise NotYolo(f"its names' class ids are not 0 to {len(by_id) - 1}")
        value = [by_id[i] for i in range(len(by_id))]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(n, str) and n for n in value):
        raise NotYolo("its names are not a dict of class ids to names (nor a list of names)")
    return list(value)


def image_size(value: Any) -> tuple[int, int]:
    """Ultralytics' ``imgsz`` (``[640, 640]`` as height, width, or one side) → ``(height, width)``."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise NotYolo(f"its imgsz {value[:30]!r} is not a size") from None
    sides = [value] if isinstance(value, int) else list(value) if isinstance(value, list | tuple) else []
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or not all(isinstance(s, int) and s > 0 for s in sides):
        raise NotYolo(f"its imgsz {value!r} is not a size")
    return sides[0], sides[1]


@dataclass(frozen=True)
class UltralyticsExport:
    """What an Ultralytics export's ``metadata_props`` say (YOLOv5's carry ``names`` and ``stride``
    only), or a Sightline file's own for one imported before."""

    names: list[str] | None
    imgsz: tuple[int, int] | None
    task: str | None            # "detect", "segment", ...
    stride: int | None
    license: str | None
    description: str | None     # e.g. "Ultralytics YOLOv8n model trained on coco.yaml", with who and when

    @classmethod
    def read(cls, carried: dict[str, Any]) -> UltralyticsExport:
        """From a file's ``metadata_props`` (JSON-decoded where they are JSON): Ultralytics' keys, or
        Sightline's own (``family``, ``class_names``, ``input_size``) in a file imported before."""
        if "family" in carried:
            names, size = carried.get("class_names"), carried.get("input_size")
            return cls(None if names is None else class_names(names), None if size is None else image_size(size),
                       None, _integer(carried.get("stride")), None, None)
        names, size = carried.get("names"), carried.get("imgsz")
        license_ = carried.get("license")
        made = ", ".join(f"{k} {carried[k]}" for k in ("author", "version", "date") if carried.get(k))
        text = carried.get("description")
        description = f"{text} ({made})" if text and made else (str(text) if text else None)
        return cls(names=None if names is None else class_names(names),
                   imgsz=None if size is None else image_size(size),
                   task=str(carried["task"]) if carried.get("task") else None, stride=_integer(carried.get("stride")),
                   license=str(license_) if license_ else None, description=description)

    def check_task(self, layout: YoloLayout | None = None) -> None:
        """``NotYolo`` when the export's task is not one served, or (given its ``layout``) not what
        its outputs are."""
        if self.task is None:
            return
        if self.task not in ("detect", "segment"):
            raise NotYolo(f"a {self.task!r} export; Sightline serves Ultralytics' detect and segment exports")
        if layout is not None and (self.task == "segment") != bool(layout.masks):
            raise NotYolo(f"its metadata says task {self.task!r} but it has "
                          f"{'a' if layout.masks else 'no'} prototype output")


def _integer(value: Any) -> int | None:
    """An int metadata value (``32`` or ``"32"``), or None."""
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def read_layout(family: str, shapes: list[tuple[int, ...]], names: int) -> YoloLayout:
    """The layout of an Ultralytics export from its outputs' shapes for one image (in the graph's
    order) and its count of class names; ``NotYolo`` saying why not."""
    v5 = family.startswith("yolov5")
    ranks = sorted(len(s) for s in shapes)
    if ranks not in ([3], [3, 4]):
        raise NotYolo(f"its outputs are {[list(s) for s in shapes]}; an Ultralytics export has detections "
                      f"(1, ., .) and, for segmentation, prototypes (1, M, P, P)")
    det = next(s for s in shapes if len(s) == 3)
    protos = next((s for s in shapes if len(s) == 4), None)
    if family in SEGMENT_FAMILIES and protos is None:
        raise NotYolo(f"no prototype output: not a segmentation export (import it as {family[:-4]})")
    if protos is not None and protos[2] != protos[3]:
        raise NotYolo(f"its prototypes {list(protos)} are not square")
    masks, proto = (protos[1], protos[2]) if protos is not None else (0, 0)
    boxes, values = (det[1], det[2]) if v5 else (det[2], det[1])
    classes = values - 4 - int(v5) - masks
    if classes != names:
        raise NotYolo(_mismatch(family, det, masks, names, YoloLayout(v5, classes, boxes, masks, proto)))
    return YoloLayout(v5, classes, boxes, masks, proto)


def _mismatch(family: str, det: tuple[int, ...], masks: int, names: int, read: YoloLayout) -> str:
    """Why detections ``det`` do not hold ``names`` classes, with a hint where another layout fits."""
    other = "yolov8" if read.objectness else "yolov5"
    other_classes = (det[1] if read.objectness else det[2]) - 4 - int(not read.objectness) - masks
    if other_classes == names:
        hint = f"; that is the {other} layout: import it with --family {other}{'-seg' if masks else ''}"
    elif det[-1] in (6, 7):
        hint = "; it looks like an export with NMS in the graph (nms=True, end-to-end heads): export it without"
    else:
        hint = ""
    held = f"{read.values} values per candidate ({read.describe()})" if read.classes > 0 else \
        f"{read.values} values per candidate, too few for {read.describe().replace(f'{read.classes} ', 'any ')}"
    return f"its output {list(det)} read as {family} holds {held}, but its names list {names} classes{hint}"


def flatten_outputs(model, detections: str, prototypes: str, batch: int | str, size: int):
    """A copy of the ONNX ``model`` whose two outputs, ``detections`` and ``prototypes``, are replaced
    by one ``(batch, size)``: each flattened per image (``Reshape`` to ``[0, -1]``) and concatenated,
    detections first. Needs the ``onnx`` package."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    shape = "sightline_per_image_shape"
    out.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape))
    flat = [f"sightline_{detections}_flat", f"sightline_{prototypes}_flat"]
    out.graph.node.extend([helper.make_node("Reshape", [detections, shape], [flat[0]], name="sightline_flatten_det"),
                           helper.make_node("Reshape", [prototypes, shape], [flat[1]], name="sightline_flatten_protos"),
                           helper.make_node("Concat", flat, [SEG_OUTPUT], name="sightline_join", axis=1)])
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(SEG_OUTPUT, TensorProto.FLOAT, [batch, size]))
    return out
