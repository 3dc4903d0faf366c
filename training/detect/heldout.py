"""Held-out scoring the way users reach the model: POST each image to ``/detect`` (a running
server with ``--url``, or the app in-process through its HTTP interface with ``--model``), or a
training checkpoint directly; then pycocotools."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.vision.postprocess import Detections
from training.detect.evaluate import EVAL_CONF, evaluate_predictor

EVAL_QUERY = {"conf": EVAL_CONF, "iou": 0.6, "max_det": 100}


def _from_response(body: dict) -> Detections:
    dets = body["detections"]
    boxes = np.asarray([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in dets], dtype=np.float32)
    return Detections(boxes.reshape(-1, 4), np.asarray([d["score"] for d in dets], dtype=np.float32),
                      np.asarray([d["class_id"] for d in dets], dtype=np.int64))


def http_predictor(post: Callable[..., object]) -> Callable[[Path], Detections]:
    """``post(url, files=..., params=...)`` is httpx's or TestClient's ``post``."""

    def predict(path: Path) -> Detections:
        response = post("/detect", files={"image": (path.name, path.read_bytes(), "image/png")},
                        params=EVAL_QUERY)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: /detect answered {response.status_code}: {response.text}")
        return _from_response(response.json())

    return predict


@contextmanager
def in_process_client(model: Path, data_dir: Path | None = None) -> Iterator[object]:
    """A TestClient over the real app serving ``model``'s folder (``model`` may be the folder),
    with its gallery in ``data_dir`` (default: a temporary folder), ready when yielded."""
    import tempfile

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per image otherwise
    models_dir = Path(model) if Path(model).is_dir() else Path(model).parent
    with tempfile.TemporaryDirectory(prefix="sightline-data-") as tmp, \
            TestClient(create_app(Settings(models_dir=models_dir, data_dir=data_dir or Path(tmp)))) as client:
        deadline = time.time() + 120
        while client.get("/readyz").status_code != 200:
            if time.time() > deadline:
                raise RuntimeError(f"server not ready: {client.get('/readyz').text}")
            time.sleep(0.1)
        yield client


@contextmanager
def api_client(models: Path | None, url: str | None) -> Iterator[object]:
    """An HTTP client: httpx on a running server at ``url``, else the app in-process over ``models``."""
    if url:
        import httpx

        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    else:
        with in_process_client(models) as client:
            yield client


def serving_predictor(model: Path) -> Callable[[Path], Detections]:
    """The serving classes in-process, without HTTP: the server's decoder and ``ObjectDetector``
    (any detection task, the face detector included)."""
    from app.models.anchor_detector import DetectParams, ObjectDetector
    from app.settings import Settings

    settings = Settings(device="cpu")
    detector = ObjectDetector.load(Path(model), settings)
    params = DetectParams(conf=EVAL_QUERY["conf"], iou=EVAL_QUERY["iou"], max_det=EVAL_QUERY["max_det"])
    return lambda path: detector.detect_upload(path.read_bytes(), settings.max_pixels, params)


def checkpoint_predictor(checkpoint: Path) -> Callable[[Path], Detections]:
    from training.detect.data import read_rgb
    from training.detect.export import load_checkpoint
    from training.detect.train import predict_one

    model, _ = load_checkpoint(checkpoint)
    return lambda path: predict_one(model, read_rgb(path))


def _check_served(client: object, model: Path) -> None:
    """``/detect`` answers with the first detection model of the folder served: when ``model`` names a
    file, make sure it is that one and not another detector beside it."""
    if model.is_dir():
        return
    listed = client.get("/models").json()["models"]  # type: ignore[attr-defined]
    served = [m["file"] for m in listed if m["task"] == "detection"]
    if served[:1] != [model.name]:
        first = served[0] if served else "no model"
        raise RuntimeError(f"{model}: /detect is served by {first} from {model.parent}; "
                           "score a folder whose only detector is this one")


def evaluate(data: Path, checkpoint: Path | None = None, model: Path | None = None, url: str | None = None,
             limit: int | None = None) -> dict[str, float]:
    coco = Path(data) / "annotations.json" if Path(data).is_dir() else Path(data)
    started = time.time()
    if url:
        import httpx

        with httpx.Client(base_url=url, timeout=60) as client:
            metrics = evaluate_predictor(http_predictor(client.post), coco, limit=limit)
    elif model:
        with in_process_client(model) as client:
            _check_served(client, Path(model))
            metrics = evaluate_predictor(http_predictor(client.post), coco, limit=limit)
    else:
        metrics = evaluate_predictor(checkpoint_predictor(checkpoint), coco, limit=limit)
    n = limit or len(json.loads(coco.read_text())["images"])
    return {**metrics, "images": n, "seconds": round(time.time() - started, 1),
            "source": url or str(model or checkpoint)}
