"""Calibrating the 1:1 threshold on one's own labelled photos: the maths against a simple reference,
the admin endpoint and the command on real photos through the served pipeline, the threshold kept
across a restart and reset."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.calibration import CalibrationError, calibrate, labelled_zip, roc_svg, threshold_at_far
from app.settings import Settings
from tests.conftest import MODELS, wait_ready
from training.pretrained.realphotos import real_photos

PEOPLE = {"obama": ["obama", "obama2", "obama3"], "biden": ["biden"], "collins": ["collins"],
          "hopper": ["hopper"], "gauss": ["gauss"]}


@pytest.fixture(scope="module")
def labelled():
    portraits = real_photos().portraits
    return [(person, f"{key}{portraits[key].suffix}", portraits[key].read_bytes())
            for person, keys in PEOPLE.items() for key in keys]


def archive(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for person, name, data in entries:
            z.writestr(f"team/{person}/{name}", data)
        z.writestr("team/README.txt", "not a photo")
    return buf.getvalue()


@pytest.mark.parametrize("far", [0.05, 0.1, 0.25])
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_at_far_against_a_simple_reference(far, seed):
    """The largest threshold accepting at most far of the impostors, counted pair by pair."""
    rng = np.random.default_rng(seed)
    impostor = rng.uniform(0.2, 2.0, 40).round(2)          # ties included
    genuine = rng.uniform(0.0, 0.6, 15)
    got = threshold_at_far(genuine, impostor, far)
    candidates = np.sort(np.concatenate([impostor, np.nextafter(impostor, -np.inf)]))
    best = max(t for t in candidates if (impostor <= t).mean() <= far)
    assert got["threshold"] == pytest.approx(best) and got["far"] <= far
    assert got["tar"] == pytest.approx((genuine <= got["threshold"]).mean())


def test_calibration_refuses_what_cannot_measure_the_rate():
    emb = np.eye(4, dtype=np.float32)
    with pytest.raises(CalibrationError, match="genuine"):
        calibrate(emb, np.array(["a", "b", "c", "d"]), 0.1, "x")        # nobody twice
    with pytest.raises(CalibrationError, match="impostor"):
        calibrate(emb, np.array(["a", "a", "b", "b"]), 0.01, "x")       # 4 impostor pairs cannot show 1 %


def test_zip_reading_refuses_bombs_and_non_zips():
    with pytest.raises(ValueError, match="not a zip"):
        labelled_zip(b"PK not really", 10, 10_000)
    big = archive([("a", f"{i}.jpg", b"\0" * 1000) for i in range(5)])
    with pytest.raises(ValueError, match="at most 4"):
        labelled_zip(big, 4, 10**6)
    with pytest.raises(ValueError, match="more than 4000 bytes"):
        labelled_zip(big, 10, 4000)
    assert [(p, n) for p, n, _ in labelled_zip(big, 10, 10**6)][:2] == [("a", "0.jpg"), ("a", "1.jpg")]


def test_roc_svg_draws_the_curve():
    svg = roc_svg([{"far": 1e-3, "tar": 0.5, "threshold": 0.1}, {"far": 1e-1, "tar": 0.9, "threshold": 0.3}], 1e-3)
    assert svg.startswith("<svg") and svg.count("<polyline") == 1 and "stroke-dasharray" in svg


def test_the_endpoint_calibrates_persists_and_resets(tmp_path, labelled):
    data = tmp_path / "data"
    with TestClient(create_app(Settings(models_dir=MODELS, data_dir=data))) as client:
        wait_ready(client)
        before = client.get("/admin/calibration").json()
        assert before["source"] == "model_file" and "published operating point" in before["method"]
        r = client.post("/admin/calibration", params={"far": 0.1},
                        files={"archive": ("team.zip", archive(labelled), "application/zip")})
        assert r.status_code == 200, r.text
        cal = r.json()
        # 7 photos of 5 people: 3 genuine pairs (Obama), 18 impostor pairs; one impostor may pass at 10 %
        assert cal["source"] == "calibration" and cal["photos"] == 7 and cal["photos_without_face"] == 0
        assert cal["genuine_pairs"] == 3 and cal["impostor_pairs"] == 18 and cal["far"] <= 0.1
        assert cal["tar"] == 1.0 and cal["threshold"] != before["threshold"]
        verify = client.post("/verify", files={"image1": ("a.jpg", labelled[0][2]), "image2": ("b.jpg", labelled[1][2])})
        assert verify.json()["threshold"] == pytest.approx(cal["threshold"], abs=1e-5)
        svg = client.get("/admin/calibration/roc.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and "<polyline" in svg.text
        bad = client.post("/admin/calibration", files={"archive": ("x.zip", b"not a zip")})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_archive"
        few = client.post("/admin/calibration", params={"far": 0.001},
                          files={"archive": ("team.zip", archive(labelled), "application/zip")})
        assert few.status_code == 422 and few.json()["error"]["code"] == "too_few_faces"
        assert client.get("/admin/calibration").json()["threshold"] == cal["threshold"]   # unchanged by the refusal
    with TestClient(create_app(Settings(models_dir=MODELS, data_dir=data))) as client:   # a restart keeps it
        wait_ready(client)
        assert client.get("/admin/calibration").json()["threshold"] == cal["threshold"]
        reset = client.delete("/admin/calibration").json()
        assert reset["source"] == "model_file" and reset["threshold"] == before["threshold"]
    assert json.loads((data / "calibration.json").read_text()) == {}


def test_the_command_writes_the_threshold_into_a_copy_of_the_model(tmp_path, labelled):
    from training.faces.calibrate import main
    from training.onnx_export import file_metadata

    models, photos = tmp_path / "models", tmp_path / "photos"
    models.mkdir()
    for name in ("face_detector.onnx", "face_landmarks.onnx", "face_embedder.onnx"):
        shutil.copy(MODELS / name, models)
    for person, name, data in labelled:
        (photos / person).mkdir(parents=True, exist_ok=True)
        (photos / person / name).write_bytes(data)
    assert main(["--photos", str(photos), "--far", "0.1", "--models", str(models), "--roc", str(tmp_path / "roc.png")]) == 0
    v = file_metadata(models / "face_embedder.onnx")["verification"]
    assert v["target_far"] == 0.1 and v["genuine_pairs"] == 3 and v["impostor_pairs"] == 18 and v["roc"]
    assert (tmp_path / "roc.png").stat().st_size > 0
    assert file_metadata(MODELS / "face_embedder.onnx")["verification"]["target_far"] is None   # the original untouched
