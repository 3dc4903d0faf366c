"""The HTTP API over the bundled detector: contract, parameters, bad inputs, EXIF orientation."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.registry import ModelRegistry
from app.api.deps import get_registry
from app.runtime import thread_plan
from app.settings import Settings
from app.vision.boxes import box_iou
from tests import images
from tests.conftest import BUNDLED_MODELS, wait_ready
from training.synth.scenes import SceneConfig, render_scene


def post_image(client, data: bytes, name: str = "photo", **params):
    return client.post("/detect", files={"image": (name, data, "application/octet-stream")}, params=params)


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


@pytest.fixture(scope="module")
def scenes():
    """Scenes from a seed the bundled model never saw, with their ground truth."""
    cfg = SceneConfig(min_objects=2) if "min_objects" in SceneConfig.__dataclass_fields__ else SceneConfig()
    out = []
    for i in range(12):
        scene = render_scene(np.random.default_rng([9090, i]), cfg)
        if scene.objects:
            out.append(scene)
    return out


def png(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", **save)
    return buf.getvalue()


def test_health_ready_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    models = client.get("/models").json()["models"]
    det = next(m for m in models if m["task"] == "detection")
    assert det["execution_provider"] in {"CPUExecutionProvider", "CUDAExecutionProvider"}
    assert not any(m["io_binding"] for m in models)          # off unless SIGHTLINE_IO_BINDING, and CUDA only
    plan = thread_plan(Settings())
    assert all(m["lone_run_threads"] == (plan.lone if plan.lone_session and m["execution_provider"] ==
                                         "CPUExecutionProvider" else 0) for m in models)
    assert det["metadata"]["class_names"] == ["pedestrian", "car", "motorcycle"]
    assert det["metadata"]["anchors"] and det["metadata"]["input_size"]


def test_detect_contract(client, scenes):
    scene = scenes[0]
    r = post_image(client, png(scene.image))
    assert r.status_code == 200, r.text
    body = r.json()
    h, w = scene.image.shape[:2]
    assert body["image"] == {"width": w, "height": h}
    assert body["model"]["name"] == "detector" and body["model"]["version"]
    assert set(body["timings_ms"]) == {"decode", "preprocess", "inference", "postprocess"}
    for d in body["detections"]:
        b = d["box"]
        assert 0 <= b["x1"] < b["x2"] <= w and 0 <= b["y1"] < b["y2"] <= h
        assert 0.25 <= d["score"] <= 1 and d["label"] in ("pedestrian", "car", "motorcycle")
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True)


def test_bundled_model_finds_the_objects(client, scenes):
    """Recall at IoU 0.5 with the right class, on scenes from an unseen seed."""
    found = total = 0
    for scene in scenes:
        dets = post_image(client, png(scene.image)).json()["detections"]
        for cat, box, _ in scene.objects:
            total += 1
            same = [d for d in dets if d["class_id"] == cat - 1]
            if same:
                boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in same])
                found += box_iou(np.asarray(box)[None], boxes).max() >= 0.5
    assert total > 10 and found / total >= 0.8, (found, total)


def test_query_parameters(client, scenes):
    data = png(scenes[0].image)
    few = post_image(client, data, max_det=1, conf=0.01).json()["detections"]
    assert len(few) == 1
    cars = post_image(client, data, classes="car", conf=0.01).json()["detections"]
    assert {d["label"] for d in cars} <= {"car"}
    high = post_image(client, data, conf=0.99).json()["detections"]
    assert all(d["score"] >= 0.99 for d in high)


@pytest.mark.parametrize("params,code", [
    ({"conf": 1.5}, "invalid_request"), ({"conf": "abc"}, "invalid_request"), ({"iou": -0.1}, "invalid_request"),
    ({"max_det": 0}, "invalid_request"), ({"classes": "unicorn"}, "unknown_class"), ({"classes": ","}, "invalid_request"),
])
def test_bad_parameters_are_422(client, params, code):
    assert_error(post_image(client, images.small_jpeg(), **params), 422, code)


def test_missing_image_field_is_422(client):
    assert_error(client.post("/detect", files={"picture": ("x.jpg", images.small_jpeg())}), 422)
    assert_error(client.post("/detect"), 422)


BAD = [
    ("zero bytes", lambda: b"", 400),
    ("text", lambda: b"hello, this is not an image\n" * 10, 400),
    ("random bytes", lambda: images.random_bytes(), 400),
    ("truncated jpeg", images.truncated_jpeg, 400),
    ("truncated png", images.truncated_png, 400),
    ("png claiming 30000x30000", lambda: images.png_claiming(30000, 30000), 413),
    ("tiff", lambda: images.unsupported_image("TIFF"), 415),
]
ODD_BUT_FINE = [
    ("16-bit png", images.gray16_png),
    ("cmyk jpeg", images.cmyk_jpeg),
    ("rgba png", images.rgba_png),
    ("palette png", images.palette_png_with_transparency),
    ("animated gif", images.animated_gif),
    ("webp", lambda: images.solid_webp(40, 30)),
]


@pytest.mark.parametrize("name,make,status", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(client, name, make, status):
    r = post_image(client, make())
    assert_error(r, status)


@pytest.mark.parametrize("name,make", ODD_BUT_FINE, ids=[b[0] for b in ODD_BUT_FINE])
def test_odd_inputs_decode(client, name, make):
    r = post_image(client, make())
    assert r.status_code == 200, r.text


def test_fuzzed_uploads_never_500(client):
    for data in images.mutations(images.small_jpeg(), 40, seed=3):
        assert post_image(client, data).status_code in (200, 400, 413, 415)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_rotated_boxes_are_in_display_coordinates(client, scenes, fmt):
    scene = max(scenes, key=lambda s: len(s.objects))
    display = scene.image
    stored = np.ascontiguousarray(np.rot90(display, k=1))  # orientation 6: viewer turns it 90° clockwise
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[images.ORIENTATION] = 6
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    upright = post_image(client, png(display) if fmt == "PNG" else images.jpeg_bytes(display)).json()
    rotated = post_image(client, buf.getvalue()).json()
    assert rotated["image"] == upright["image"]
    a = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in upright["detections"]])
    b = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in rotated["detections"]])
    assert len(a) and len(b)
    # Each confident upright detection has a twin in the rotated upload at the same display place.
    strong = [i for i, d in enumerate(upright["detections"]) if d["score"] > 0.5]
    assert strong
    assert box_iou(a[strong], b).max(axis=1).min() > 0.8


def test_a_large_photo_is_detected_like_its_small_self(client, scenes):
    """A 4x upscaled JPEG is decoded already shrunk (rule 7 of app.imaging): the answer gives the
    photo's own size and its boxes in the photo's pixels, where the small upload's boxes, scaled
    4x, are."""
    import cv2

    scene = max(scenes, key=lambda s: len(s.objects))
    h, w = scene.image.shape[:2]
    big = cv2.resize(scene.image, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC)
    small = post_image(client, images.jpeg_bytes(scene.image)).json()
    large = post_image(client, images.jpeg_bytes(big)).json()
    assert large["image"] == {"width": 4 * w, "height": 4 * h}

    def boxes(answer):
        return np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in answer["detections"]])

    strong = [i for i, d in enumerate(small["detections"]) if d["score"] > 0.5]
    assert strong and len(large["detections"])
    assert box_iou(boxes(small)[strong] * 4, boxes(large)).max(axis=1).min() > 0.8
    assert boxes(large).max() <= 4 * max(w, h)


def test_a_large_photo_is_segmented_at_its_own_size_like_a_full_decode(client, scenes):
    """/segment decodes a large JPEG already shrunk, yet answers the mask at the photo's own size;
    with an overlay it decodes at full size. The two masks agree."""
    import base64

    import cv2

    scene = max(scenes, key=lambda s: len(s.objects))
    h, w = scene.image.shape[:2]
    big = images.jpeg_bytes(cv2.resize(scene.image, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC))

    def mask(answer):
        return cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask"]["data"]), np.uint8), cv2.IMREAD_UNCHANGED)

    shrunk = client.post("/segment", files={"image": ("big.jpg", big, "image/jpeg")}).json()
    full = client.post("/segment", files={"image": ("big.jpg", big, "image/jpeg")}, params={"overlay": "true"}).json()
    assert shrunk["image"] == full["image"] == {"width": 4 * w, "height": 4 * h}
    a, b = mask(shrunk), mask(full)
    assert a.shape == b.shape == (4 * h, 4 * w)
    assert len(np.unique(b)) > 1 and (a == b).mean() > 0.98


def test_body_over_limit_is_413_before_reading():
    app = create_app(Settings(models_dir=BUNDLED_MODELS, max_body_bytes=50_000))
    with TestClient(app) as c:
        wait_ready(c)
        big = images.random_bytes(200_000)
        assert_error(post_image(c, big), 413, "payload_too_large")
        assert post_image(c, images.small_jpeg()).status_code == 200


def test_pixel_limit_setting():
    app = create_app(Settings(models_dir=BUNDLED_MODELS, max_pixels=1000))
    with TestClient(app) as c:
        wait_ready(c)
        assert_error(post_image(c, images.small_jpeg()), 413, "image_too_large")  # 64x48 > 1000 px


def test_not_ready_answers_503():
    app = create_app(Settings(models_dir=BUNDLED_MODELS))
    app.dependency_overrides[get_registry] = lambda: ModelRegistry(ready=False)
    with TestClient(app) as c:
        r = post_image(c, images.small_jpeg())
        assert_error(r, 503)
        assert r.headers["retry-after"] == "1"


def test_unknown_route_and_method_use_error_shape(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/detect"), 405)
