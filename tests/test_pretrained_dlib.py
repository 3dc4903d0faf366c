"""dlib's ResNet face descriptor converted to ONNX (training/pretrained/dlib_models.py): the reader
on hand-built bytes and on the real file, the converted network against dlib itself on real photos,
and the chip template against dlib's own chips."""

import math
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

dlib = pytest.importorskip("dlib")   # the reference runtime (dlib-bin, in the train extra)

from app.models import load_model  # noqa: E402
from training.onnx_export import file_metadata, parity  # noqa: E402
from training.pretrained import dlib_models as dm  # noqa: E402

COMMITTED = Path(__file__).resolve().parent.parent / "models" / "face_embedder.onnx"


# ---- the reader, on bytes built by hand from dlib/serialize.h and dlib/cuda/tensor.h ----

@pytest.mark.parametrize("data, value", [
    (b"\x01\x00", 0),
    (b"\x01\x02", 2),
    (b"\x02\x2c\x01", 300),                 # two magnitude bytes, little-endian
    (b"\x82\x2c\x01", -300),                # 0x80: negative
    (b"\x04\x78\x56\x34\x12", 0x12345678),
])
def test_read_int(data, value):
    assert dm.read_int(data + b"tail", 0) == (value, len(data))


@pytest.mark.parametrize("data", [b"\x00", b"\x09" + bytes(9), b"1", b"\x03\x01"])
def test_read_int_refuses_what_is_no_integer(data):
    with pytest.raises(dm.FormatError):
        dm.read_int(data, 0)


@pytest.mark.parametrize("data, value", [
    (b"\x03\x9a\x99\x99\x81\x18", float(np.float32(0.6))),     # 0x99999a * 2**-24, as in the file's loss
    (b"\x81\x03\x81\x01", -1.5),                                 # -3 * 2**-1
    (b"\x01\x00\x02\x00\x7d", math.inf),                         # exponent 32000
])
def test_read_float(data, value):
    assert dm.read_float(data, 0) == (value, len(data))


def test_read_string_bool_and_tensor():
    tensor = (b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x01"      # version 2, dims (1, 2, 1, 1)
              + struct.pack("<2f", 1.5, -2.0))
    data = b"\x01\x05con_4" + b"1" + tensor
    tag, pos = dm.read_string(data, 0)
    flag, pos = dm.read_bool(data, pos)
    values, pos = dm.read_tensor(data, pos)
    assert (tag, flag, pos) == ("con_4", True, len(data))
    assert values.shape == (1, 2, 1, 1) and values.ravel().tolist() == [1.5, -2.0]
    with pytest.raises(dm.FormatError):
        dm.read_tensor(tensor[:-1], 0)                           # a float short


def test_read_layers():
    alias = b"\x01\x01" + b"\x01\x01\x01\x02\x01\x01\x01\x01"       # alias tensor v1, (1, 2, 1, 1)
    affine = (b"\x01\x07affine_" + b"\x01\x02" + b"\x01\x04\x01\x01\x01\x01\x01\x01"
              + struct.pack("<4f", 2.0, 3.0, 0.5, -1.0) + alias + alias + b"\x01\x00")
    pool = b"\x01\x0aavg_pool_2" + b"\x01\x02" * 4 + b"\x01\x00" * 2
    (kind, p), pos = dm.read_layer(affine + pool, 0)
    assert kind == "affine" and p["gamma"].tolist() == [2.0, 3.0] and p["beta"].tolist() == [0.5, -1.0]
    assert dm.read_layer(affine + pool, pos) == (
        ("avg_pool", {"size": (2, 2), "stride": (2, 2), "padding": (0, 0)}), len(affine + pool))
    with pytest.raises(dm.FormatError, match="bn_con2"):
        dm.read_layer(b"\x01\x07bn_con2", 0)


def test_read_real_file():
    records = dm.read_network((dm.model_dir() / dm.RESNET_FILE).read_bytes())
    kinds = [k for k, _ in records]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {"input": 1, "con": 29, "affine": 29, "relu": 29, "max_pool": 1, "avg_pool": 5,
                      "add_prev": 14, "fc": 1, "loss_metric": 1}
    first, fc = records[1][1], records[-2][1]
    assert first["weight"].shape == (32, 3, 7, 7) and first["stride"] == (2, 2) and first["padding"] == (0, 0)
    assert fc["weight"].shape == (256, 128) and fc["bias"] is None
    convs = [p for k, p in records if k == "con"]
    assert sum(p["stride"] == (2, 2) for p in convs) == 5                     # the stem and 4 down blocks
    assert {p["weight"].shape for p in convs} >= {(64, 32, 3, 3), (256, 256, 3, 3)}
    assert np.allclose(records[0][1]["avg"], (122.782, 117.001, 104.298)) and records[0][1]["size"] == (150, 150)
    assert records[-1] == ("loss_metric", {"margin": pytest.approx(0.04), "distance_threshold": pytest.approx(0.6)})


def test_loader_refuses_another_geometry():
    records = dm.read_network((dm.model_dir() / dm.RESNET_FILE).read_bytes())
    con = records[1][1]
    with pytest.raises(dm.FormatError, match="layer 0"):
        dm.load_records(dm.DlibResNet(), [records[0], ("con", {**con, "stride": (1, 1)}), *records[2:]])
    with pytest.raises(dm.FormatError, match="sequence"):
        dm.load_records(dm.DlibResNet(), [r for r in records if r[0] != "max_pool"])


# ---- the converted network against dlib ----

@pytest.fixture(scope="module")
def dat() -> Path:
    return dm.model_dir() / dm.RESNET_FILE


@pytest.fixture(scope="module")
def converted(dat, tmp_path_factory) -> Path:
    return dm.export_resnet(dat, tmp_path_factory.mktemp("dlib") / "dlib_resnet.onnx", dm.resnet_metadata(dat))


@pytest.fixture(scope="module")
def faces() -> list[dm.Face]:
    return dm.find_faces(dm.real_photos(), dm.model_dir())


def test_faces_found(faces):
    photos = [f.photo for f in faces]
    assert all(photos.count(p) == 1 for p in dm.PORTRAITS)
    assert photos.count("solvay") >= 20


def test_onnx_matches_torch(dat, converted):
    x = torch.randn(3, 3, 150, 150) / 2                  # inputs on the scale of (rgb - avg) / 256
    assert parity(dm.build_resnet(dat), converted, x) < 1e-4
    assert file_metadata(converted)["family"] == "dlib-resnet"


def test_served_embedder_reads_the_file(converted, faces):
    """The server's FaceEmbedder, from the file's metadata alone: a template chip with the template
    as its landmarks is embedded as itself, unit length."""
    session = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    embedder = load_model(session, file_metadata(converted), converted)
    chip = faces[0].template_chip
    want = dm.onnx_descriptors(converted, chip[None])
    got = embedder.embed(chip, dm.chip_template()[None])
    assert np.abs(got - want / np.linalg.norm(want)).max() < 1e-4


@pytest.mark.parametrize("which", ["converted", "committed"])
def test_onnx_matches_dlib_on_real_faces(which, dat, converted, faces):
    path = converted if which == "converted" else COMMITTED
    if which == "committed":   # the served default is this conversion
        assert file_metadata(path)["family"] == "dlib-resnet"
    report = dm.compare(path, dat, faces)
    assert report.min_cosine >= 0.9999 and report.max_abs_diff < 1e-3, report
    for (a, b), (by_dlib, by_onnx) in report.portraits.items():
        same = a.startswith("obama") and b.startswith("obama")
        assert (by_onnx < 0.6) == same and (by_dlib < 0.6) == same, (a, b, by_dlib, by_onnx)


# ---- the chip template ----

@pytest.mark.parametrize("size, padding", [(150, 0.25), (200, 0.1)])
def test_mean_face_is_where_dlib_puts_it(size, padding):
    """A face shaped like the mean face, placed by a known similarity: dlib's get_face_chip_details
    must find that similarity, so mean_face() is where dlib's chip has the mean face."""
    scale, angle, shift = 5.0, 0.3, np.array([900.0, 700.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    image_points = np.nan_to_num(dm.mean_face(size, padding)) @ rot.T + shift   # the jaw is ignored
    det = dlib.full_object_detection(dlib.rectangle(0, 0, 2000, 2000),
                                     [dlib.point(round(x), round(y)) for x, y in image_points])
    chip = dlib.get_face_chip_details(det, size, padding)
    r = chip.rect                                      # a drectangle (its dcenter() binding rounds)
    centre = np.array([r.left() + r.right(), r.top() + r.bottom()]) / 2
    assert chip.angle == pytest.approx(angle, abs=1e-3)
    assert np.abs(centre - (rot @ [size / 2, size / 2] + shift)).max() < 0.3
    assert r.right() - r.left() == pytest.approx(size * scale - 1, abs=0.5)   # dlib's centered_drect


def test_chip_template_values():
    t = dm.chip_template()
    assert t.shape == (5, 2) and t.dtype == np.float32
    assert t[2] == pytest.approx(((0.25 + 0.490127) / 1.5 * 150, (0.25 + 0.515625) / 1.5 * 150), abs=1e-4)
    assert t[0, 1] == t[1, 1] and t[3, 1] == t[4, 1]                     # eyes level, mouth level
    assert t[0, 0] < t[2, 0] < t[1, 0] and t[1, 1] < t[2, 1] < t[3, 1]  # image-left first


def test_template_chips_embed_like_dlibs(converted, faces):
    """The 68-point predictor's points reduced to Sightline's 5 and aligned onto chip_template() by
    the eyes and nose (``ALIGN_POINTS``, as dlib's own chips) give about the descriptor of dlib's
    chips: far below dlib's 0.6, and within the spread between dlib's own chips of its 5-point and
    68-point predictors."""
    check = dm.check_template(converted, faces)
    assert np.median(check.to_dlib_chip) < 0.11 and check.to_dlib_chip.max() < 0.2
    assert np.median(check.to_dlib_chip) < 1.2 * np.median(check.dlib_5_vs_68)
    assert np.median(check.to_dlib_chip68) < 0.11 and check.to_dlib_chip68.max() < 0.3


def test_fitting_eyes_and_nose_comes_closer_to_dlibs_chips_than_all_five(converted, faces):
    """Why ALIGN_POINTS leaves the mouth out: dlib's chips are fitted to the eye corners and nose."""
    from app.vision.align import align_face

    ref = dm.onnx_descriptors(converted, np.stack([f.dlib_chip for f in faces]))
    template = dm.chip_template() / dm.CHIP

    def distances(points):
        chips = np.stack([align_face(f.image, f.points, dm.CHIP, template, points) for f in faces])
        return np.linalg.norm(dm.onnx_descriptors(converted, chips) - ref, axis=1)

    three, five = distances(list(dm.ALIGN_POINTS)), distances(None)
    assert np.median(three) < np.median(five) and three.max() < five.max()
