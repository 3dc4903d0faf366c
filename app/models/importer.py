"""The import command's work (``python -m app.models import``, ``app.models.__main__``): an ONNX file
someone already has, written as a COPY that carries Sightline's complete metadata, or refused with
a one-line reason.

What the file says is read, never guessed from its name: its input shape (a fixed side is the
input size), its outputs (which must be the family's), the metadata it already carries. Two
families get defaults for everything, InsightFace's layouts being known: ``scrfd`` (the graph is
rewritten into one decoded output, ``app.models.scrfd_graph``) and ``arcface`` (InsightFace's 112 px
template and normalisation, the latter read from the graph as InsightFace does). Ultralytics' YOLO
exports (``yolov5``, ``yolov8`` for YOLOv8 and YOLO11, and their ``-seg`` variants) are read from
their own metadata_props (class names, image size, task, licence) and outputs; a segmentation
export's two outputs are joined into one (``app.models.yolo``). The others
(``crop-landmarks``, ``ssd-boxes``, ``anchor-yolo``, ``dlib-resnet``) are written when every value
their metadata needs is on the command line or already in the file. The metadata is validated by
the one contract (``validate_metadata``), and the copy is loaded as the server loads it
(``load_model``, which runs it once) before it takes the target's name.

Needs the ``onnx`` package, which the server's own install leaves out."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from app.models import load_model
from app.models.metadata import FAMILIES, MetadataError, ModelMeta, validate_metadata
from app.runtime import ModelLoadError, create_session, read_metadata
from app.settings import Settings

YOLO = ("yolov5", "yolov8", "yolov5-seg", "yolov8-seg")
IMPORTABLE = ("scrfd", "arcface", "crop-landmarks", "ssd-boxes", "anchor-yolo", "dlib-resnet", *YOLO)
EMBEDDERS = ("arcface", "dlib-resnet")
ONNX_INSTALL = "pip install onnx==1.23.2"

INSIGHTFACE_LICENSE = "InsightFace pretrained models: non-commercial research purposes only"
SCRFD_SIZE = 640            # InsightFace's detection size, for a graph whose input side is free
SCRFD_MIN_FACE = 16.0       # SCRFD's smallest anchors: 16 px at stride 8
# InsightFace's arcface_dst: the 5 points of its 112 px crop, in OpenCV pixel indices (norm_crop
# hands them to cv2.warpAffine); Sightline's template is in continuous coordinates: + 0.5
ARCFACE_DST = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
ARCFACE_SIZE = 112
# 2 x deepface's ArcFace cosine-distance threshold 0.68 (deepface/config/threshold.py), as squared L2
# of unit embeddings: a starting point only, for other weights than these
ARCFACE_THRESHOLD = 1.36
PLACEHOLDER = ("placeholder, not calibrated on these weights: 1.36 squared L2 (cosine 0.32), 2 x deepface's "
               "ArcFace cosine distance 0.68; calibrate it (POST /admin/calibration) before relying on verdicts")


class Refused(Exception):
    """A file the import command will not write, and why, in one line."""


@dataclass(frozen=True)
class Request:
    family: str
    source: Path
    target: Path
    values: dict[str, Any] = field(default_factory=dict)   # metadata values given on the command line
    threshold: float | None = None    # a detector's score threshold, an embedder's distance threshold
    force: bool = False               # overwrite an existing target


@dataclass
class Prepared:
    """A family's reading of a file: ``facts`` the graph fixes (a value given otherwise is refused),
    ``defaults`` the file's metadata and the command line may override, the graph to write
    (``proto``, rewritten or as it came) and, where it was rewritten, what was done (``rewrite``)."""

    proto: Any
    facts: dict[str, Any]
    defaults: dict[str, Any]
    rewrite: str | None = None
    carried: dict[str, Any] | None = None    # the file's metadata as the family reads it (None: as it came)


@dataclass(frozen=True)
class Graph:
    """What an ONNX file says about itself."""

    input_shape: tuple[int | str, ...]     # ints where fixed, names (or "?") where free
    carried: dict[str, Any]                # its metadata_props, JSON-decoded

    @property
    def fixed_side(self) -> int | None:
        """The input's side where the graph fixes a square one."""
        h, w = self.input_shape[2:4] if len(self.input_shape) == 4 else (None, None)
        return h if isinstance(h, int) and h == w else None


def require_onnx():
    """The ``onnx`` module; ``Refused`` saying how to install it where it is missing."""
    try:
        import onnx
    except ImportError:
        raise Refused(f"the import command needs the onnx package, which the server's install leaves out: "
                      f"{ONNX_INSTALL}") from None
    return onnx


def import_model(request: Request) -> ModelMeta:
    """Write ``request.target``: a copy of ``request.source`` with the family's complete metadata
    (and, for ``scrfd``, its graph rewritten); returns that metadata. ``Refused`` otherwise; the
    source is only ever read."""
    onnx = require_onnx()
    source, target = request.source, request.target
    if request.family not in IMPORTABLE:
        raise Refused(f"family {request.family!r} cannot be imported (one of {', '.join(IMPORTABLE)})")
    if not source.is_file():
        raise Refused(f"{source}: no such file")
    if target.resolve() == source.resolve():
        raise Refused(f"{target}: the import writes a copy and never changes its source; give another target")
    if target.exists() and not request.force:
        raise Refused(f"{target} exists; give --force to replace it")
    data = source.read_bytes()
    proto = _parse(onnx, data, source.name)
    graph = _describe(proto, source.name, request.family)
    prepared = family_values(request, proto, graph, data)
    raw = assemble(request, graph, prepared)
    if prepared.rewrite and prepared.rewrite not in raw["source"]:
        raw["source"] = f"{raw['source']}; {prepared.rewrite}"
    meta = validated(raw, target.name)
    _write_checked(onnx, prepared.proto, meta, target)
    return meta


def _parse(onnx, data: bytes, name: str):
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError) as exc:
        raise Refused(f"{name}: not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None
    return proto


def _describe(proto, name: str, family: str) -> Graph:
    """The file's input shape and the metadata it carries (none of it when it names another family:
    another family's fields are not this one's)."""
    stored = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in stored]     # old files list weights as inputs
    if len(inputs) != 1:
        raise Refused(f"{name}: {len(inputs)} inputs; Sightline runs models of one image input")
    shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                  for d in inputs[0].type.tensor_type.shape.dim)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise Refused(f"{name}: its input is {list(shape)}; Sightline feeds (batch, 3, height, width) images")
    carried: dict[str, Any] = {}
    for prop in proto.metadata_props:
        try:
            carried[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            carried[prop.key] = prop.value
    if carried.get("family", family) != family:
        carried = {}
    return Graph(shape, carried)


def _session(data: bytes, name: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise Refused(f"{name}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None


def _output_shapes(session: ort.InferenceSession, name: str, size: int, rows: int | None = None
                   ) -> dict[str, tuple[int, ...]]:
    """Each output's shape with ``rows`` zero images of ``size`` x ``size`` in (as many as a fixed
    batch takes, else one)."""
    first = session.get_inputs()[0]
    rows = rows or (first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else 1)
    try:
        outs = session.run(None, {first.name: np.zeros((rows, 3, size, size), np.float32)})
    except Exception as exc:  # onnxruntime's own types: a graph that does not take such images
        raise Refused(f"{name}: ONNX Runtime cannot run it on {rows} image(s) of {size} x {size}: "
                      f"{str(exc).splitlines()[0]}") from None
    return {o.name: tuple(v.shape) for o, v in zip(session.get_outputs(), outs)}


def family_values(request: Request, proto, graph: Graph, data: bytes) -> Prepared:
    """What the family makes of the file: the graph's facts, the family's defaults."""
    family, name = request.family, request.source.name
    side = graph.fixed_side
    facts: dict[str, Any] = {"family": family}
    tasks = FAMILIES[family][1]
    if len(tasks) == 1:
        facts["task"] = tasks[0]
    if side is not None:
        facts.update(input_size=side, fixed_size=True)
    digest = hashlib.sha256(data).hexdigest()
    defaults: dict[str, Any] = {"name": request.target.stem, "version": "1", "weights_sha256": digest,
                                "source": f"{name} (sha256 {digest[:12]}), imported by python -m app.models "
                                          f"import --family {family}"}
    if family == "scrfd":
        return scrfd_values(request, proto, graph, data, Prepared(proto, facts, defaults))
    if family in YOLO:
        return yolo_values(request, proto, graph, data, Prepared(proto, facts, defaults))
    if family in EMBEDDERS:
        size = side or request.values.get("input_size") or graph.carried.get("input_size") \
            or (ARCFACE_SIZE if family == "arcface" else None)
        if size is None:
            raise Refused(f"{name}: its input side is free; give it with --input-size")
        shapes = _output_shapes(_session(data, name), name, int(size))
        first, shape = next(iter(shapes.items()))
        if len(shape) != 2:
            raise Refused(f"{name}: its output {first} is {list(shape)}; a {family} embedder's is (batch, D)")
        facts["embedding_dim"] = shape[1]
    if family == "arcface":
        defaults.update(input_size=ARCFACE_SIZE, license=INSIGHTFACE_LICENSE,
                        normalization=arcface_normalization(proto), template=arcface_template(),
                        verification={"threshold": ARCFACE_THRESHOLD, "method": PLACEHOLDER})
    return Prepared(proto, facts, defaults)


def arcface_template() -> list[list[float]]:
    """InsightFace's ``arcface_dst`` as Sightline's template: continuous coordinates (+ 0.5), as
    fractions of the 112 px side. Sightline's warp then cuts InsightFace's ``norm_crop`` exactly."""
    return [[round((x + 0.5) / ARCFACE_SIZE, 6), round((y + 0.5) / ARCFACE_SIZE, 6)] for x, y in ARCFACE_DST]


def arcface_normalization(proto) -> dict[str, Any]:
    """InsightFace's rule (``ArcFaceONNX``): a graph with a ``Sub`` and a ``Mul`` node among its first
    8 nodes (by name, as MXNet exports name them) normalises its own input and is fed the raw 0-255
    pixels; any other takes ``(x - 127.5) / 127.5``. RGB either way."""
    names = [n.name for n in proto.graph.node[:8]]
    subtracts = any(n.startswith(("Sub", "_minus")) for n in names)
    multiplies = any(n.startswith(("Mul", "_mul")) for n in names)
    if subtracts and multiplies:
        return {"color": "RGB", "mean": [0.0, 0.0, 0.0], "std": [1 / 255] * 3}
    return {"color": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def scrfd_values(request: Request, proto, graph: Graph, data: bytes, prepared: Prepared) -> Prepared:
    """An SCRFD graph rewritten (``app.models.scrfd_graph``), its facts, and InsightFace's defaults:
    RGB, ``(x - 127.5) / 128``, the photo at the top left on black, score threshold 0.5."""
    from app.models.scrfd_graph import NotScrfd, read_layout, rewrite

    name = request.source.name
    size = graph.fixed_side or int(request.values.get("input_size") or SCRFD_SIZE)
    if size % 32:
        raise Refused(f"{name}: not an SCRFD graph: input side {size} is not a multiple of 32 (its coarsest stride)")
    session = _session(data, name)
    shapes = _output_shapes(session, name, size)
    facts = prepared.facts
    if len(shapes) == 1 and graph.carried.get("family") == "scrfd":     # rewritten already: stamped anew
        facts["boxes"] = next(iter(shapes.values()))[1]
    else:
        try:
            layout = read_layout(shapes, size)
        except NotScrfd as exc:
            raise Refused(f"{name}: not an SCRFD graph: {exc}") from None
        rows = graph.input_shape[0]
        batch: int | str = rows if isinstance(rows, int) else 1
        if not isinstance(rows, int) and layout.batched and _batches(session, name, size):
            batch = "batch"
        facts["boxes"] = layout.total
        prepared.proto = rewrite(proto, layout, size, batch)
        prepared.rewrite = (f"graph rewritten on import: its 9 outputs (score, "
                            f"bbox, kps at strides 8, 16, 32) decoded into one (B, {layout.total}, 15) output at "
                            f"{size} px, {layout.anchors} anchors per cell")
    facts.update(input_size=size, fixed_size=True, landmarks=True)
    prepared.defaults.update(license=INSIGHTFACE_LICENSE, min_face=SCRFD_MIN_FACE, score_threshold=0.5,
                             pad="bottom_right", class_names=["face"],
                             normalization={"color": "RGB", "mean": [0.5, 0.5, 0.5], "std": [128 / 255] * 3})
    return prepared


def yolo_values(request: Request, proto, graph: Graph, data: bytes, prepared: Prepared) -> Prepared:
    """An Ultralytics YOLO export: class names, input size, task, licence and description from its own
    metadata_props (Ultralytics' ``names`` a Python literal), its layout from its outputs; a
    segmentation export (``--family yolov8`` or ``yolov8-seg`` alike) written as ``yolov8-seg`` with
    its two outputs joined into one (``app.models.yolo``). Ultralytics' preprocessing: letterboxed
    (centred, grey 114), RGB, ``x / 255``."""
    from app.models.yolo import NotYolo, UltralyticsExport, class_names, flatten_outputs, read_layout

    name, base = request.source.name, request.family.removesuffix("-seg")
    given = request.values.get("class_names")
    try:
        export = UltralyticsExport.read(graph.carried)
        names = class_names(given) if given is not None else export.names
    except NotYolo as exc:
        raise Refused(f"{name}: not an Ultralytics export Sightline can read: {exc}") from None
    if not names:
        raise Refused(f"{name}: its metadata carries no class names (Ultralytics' names); "
                      f"give them with --set 'class_names=[\"person\", ...]'")
    size = _yolo_size(request, graph, export)
    outputs = _output_shapes(_session(data, name), name, size)
    try:
        export.check_task()
        layout = read_layout(request.family, list(outputs.values()), len(names))
        export.check_task(layout)
    except NotYolo as exc:
        raise Refused(f"{name}: not an Ultralytics {request.family} export: {exc}") from None
    family = f"{base}-seg" if layout.masks else base
    prepared.facts.update(family=family, input_size=size, boxes=layout.boxes)
    if layout.masks:
        prepared.facts.update(mask_channels=layout.masks, proto_size=layout.proto)
        detections = next(n for n, s in outputs.items() if len(s) == 3)
        prototypes = next(n for n, s in outputs.items() if len(s) == 4)
        batch = graph.input_shape[0] if graph.input_shape[0] != "?" else "batch"
        prepared.proto = flatten_outputs(proto, detections, prototypes, batch, layout.output_shape[0])
        prepared.rewrite = (f"graph rewritten on import: its detections {list(layout.detection_shape)} and prototypes "
                            f"{[layout.masks, layout.proto, layout.proto]} per image joined into one output")
    if "family" not in graph.carried:           # Ultralytics' keys, read above, are not Sightline's
        prepared.carried = {}
    source = prepared.defaults["source"]
    prepared.defaults.update(class_names=names, stride=export.stride, license=export.license,
                             source=f"{export.description}; {source}" if export.description else source,
                             normalization={"color": "RGB", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    return prepared


def _yolo_size(request: Request, graph: Graph, export) -> int:
    """The square input side: the graph's where it fixes one, else ``--input-size``, else the
    export's ``imgsz``; ``Refused`` for a rectangular input (Sightline letterboxes to a square)."""
    name = request.source.name
    height, width = graph.input_shape[2:4]
    if isinstance(height, int) and isinstance(width, int) and height != width:
        raise Refused(f"{name}: its input is {height} x {width}; Sightline letterboxes photos into a square "
                      f"input: export it with a square imgsz (e.g. imgsz=640)")
    size = graph.fixed_side or request.values.get("input_size")
    if size is None and export.imgsz is not None:
        if export.imgsz[0] != export.imgsz[1]:
            raise Refused(f"{name}: its imgsz is {list(export.imgsz)}, not square; give the square side to "
                          f"serve it at with --input-size")
        size = export.imgsz[0]
    if size is None:
        raise Refused(f"{name}: its input side is free and its metadata gives no imgsz; give it with --input-size")
    if export.stride and int(size) % export.stride:
        raise Refused(f"{name}: input side {size} is not a multiple of its stride {export.stride}")
    return int(size)


def _batches(session: ort.InferenceSession, name: str, size: int) -> bool:
    """Whether a graph with a free batch dimension really runs 2 images at once."""
    try:
        shapes = _output_shapes(session, name, size, rows=2)
    except Refused:               # a graph that only runs one image
        return False
    return all(s[0] == 2 for s in shapes.values())


def assemble(request: Request, graph: Graph, prepared: Prepared) -> dict[str, Any]:
    """The metadata: defaults, then what the file carries, then the command line; the graph's facts
    over all (a command-line value contradicting one is refused)."""
    given = dict(request.values)
    for key, value in prepared.facts.items():
        if key in given and given[key] != value:
            raise Refused(f"{request.source.name}: {key} is {value!r} in the graph; {given[key]!r} was given")
    carried = graph.carried if prepared.carried is None else prepared.carried
    raw = {**prepared.defaults, **carried, **given, **prepared.facts}
    if request.threshold is not None:
        if request.family in EMBEDDERS:
            raw["verification"] = {**(raw.get("verification") or {}), "threshold": request.threshold,
                                   "method": "given on the import command line (--threshold)", "roc": None}
        elif request.family in ("scrfd", "ssd-boxes"):
            raw["score_threshold"] = request.threshold
        else:
            raise Refused(f"--threshold has no meaning for a {request.family} model")
    return raw


def validated(raw: dict[str, Any], where: str) -> ModelMeta:
    """``raw`` through the one contract; ``Refused`` naming every missing or wrong value otherwise."""
    try:
        return validate_metadata(raw, where)
    except MetadataError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ValidationError):
            raise Refused(str(exc)) from None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'metadata'}"
                             f"{' is missing' if e['type'] == 'missing' else ': ' + e['msg']}" for e in cause.errors())
        raise Refused(f"{where}: not a complete {raw.get('family')} model file: {problems} "
                      f"(give values with --set KEY=JSON)") from None


def _write_checked(onnx, proto, meta: ModelMeta, target: Path) -> None:
    """``proto`` with ``meta`` as its metadata_props, loaded as the server loads it (one run of a
    zero image, its output checked against the metadata) under a temporary name, then renamed."""
    del proto.metadata_props[:]
    for key, value in meta.model_dump(mode="json").items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.importing")
    onnx.save(proto, str(staging))
    try:
        session = create_session(staging, Settings(device="cpu"), intra_op=1)
        load_model(session, read_metadata(session), target)
    except ModelLoadError as exc:
        staging.unlink()
        raise Refused(str(exc).splitlines()[0]) from None
    os.replace(staging, target)
