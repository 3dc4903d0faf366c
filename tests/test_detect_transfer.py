"""Training from a real start: the detector's MobileNetV1 backbone takes face-api's SSD MobileNetV1
convolutions (``models/face_detector.onnx``, Apache-2.0) and computes the file's own feature maps on
a real photo; a tiny run started from it reports what it kept, exports, and serves over HTTP.

Measured here (2-core Xeon, astronaut photo at 512): max abs diff 3.2e-5 against the file's ReLU6
outputs (values 0..6) at strides 8, 16 and 32; the test allows 1e-4.
"""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.vision.letterbox import letterbox, to_tensor
from tests.conftest import MODELS, SYNTHETIC, wait_ready
from training.detect.__main__ import main as detect_cli
from training.detect.model import Detector, DetectorConfig
from training.detect.transfer import TransferError, calibrate_batch_norm, transfer_from_onnx
from training.pretrained.faceapi import read_photo
from training.pretrained.packages import SCIKIT_IMAGE, fetch
from training.synth.scenes import SceneConfig, write_scenes

FACE_API = MODELS / "face_detector.onnx"
# the file's backbone outputs: the ReLU6 (Clip) after pairs 5, 11 and 13 (strides 8, 16, 32)
FEATURES = [f"/pairs.{i}/pairs.{i}.1/pairs.{i}.1.1/Clip_output_0" for i in (4, 10, 12)]
TOL = 1e-4


@pytest.fixture(scope="module")
def photo():
    return read_photo(fetch(SCIKIT_IMAGE) / "skimage" / "data" / "astronaut.png")   # 512x512, CC0


@pytest.fixture(scope="module")
def copied():
    model = Detector(DetectorConfig(num_classes=2, backbone="mobilenetv1", width=1.0, base_size=512))
    return model, transfer_from_onnx(model, FACE_API)


def _file_features(x: np.ndarray) -> list[np.ndarray]:
    graph = onnx.load(str(FACE_API))
    for name in FEATURES:
        graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(FEATURES, {"images": x})


def test_backbone_computes_the_files_feature_maps(copied, photo):
    model, transfer = copied
    assert (transfer.backbone_copied, transfer.backbone_total) == (27, 27)
    assert (transfer.rest_copied, transfer.rest_total) == (0, 12)       # the SSD's extra layers and heads stay out
    assert transfer.normalization == ([0.5] * 3, [0.5] * 3)            # the file's x / 127.5 - 1, adopted
    assert tuple(model.cfg.norm_mean) == (0.5, 0.5, 0.5)
    canvas, _ = letterbox(photo, 512)
    x = to_tensor(canvas[None], model.cfg.norm_mean, model.cfg.norm_std)
    want = _file_features(x)
    with torch.no_grad():
        got = [f.numpy() for f in model.backbone.eval()(torch.from_numpy(x))]
    assert [g.shape for g in got] == [w.shape for w in want] == [(1, 256, 64, 64), (1, 512, 32, 32),
                                                                  (1, 1024, 16, 16)]
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= TOL
    assert max(float(np.abs(w).max()) for w in want) > 1.0               # real activations, not zeros

    # batch-norm statistics measured on images: eval mode unchanged, training mode on those images the same
    calibrated = copy.deepcopy(model)
    crops = np.stack([letterbox(photo[y:y + 256, x0:x0 + 256], 128)[0] for y, x0 in ((0, 0), (128, 128), (256, 64))])
    batch = torch.from_numpy(to_tensor(crops, model.cfg.norm_mean, model.cfg.norm_std))
    fresh = [c for c in calibrated.modules() if isinstance(c, torch.nn.Conv2d)][:27]
    assert calibrate_batch_norm(calibrated, fresh, [batch[:2], batch[2:]]) == 27
    with torch.no_grad():
        again = [f.numpy() for f in calibrated.backbone.eval()(torch.from_numpy(x))]
        assert max(float(np.abs(g - w).max()) for g, w in zip(again, want)) <= TOL
        evaluated = calibrated.backbone.eval()(batch)
        trained = calibrated.backbone.train()(batch)                     # normalised by this batch's statistics
    for e, t in zip(evaluated, trained):
        assert float((e - t).abs().mean() / e.abs().mean()) < 1e-3


def test_nothing_to_copy_is_refused_with_the_options_that_fit(copied):
    with pytest.raises(TransferError, match=r"nothing to copy.*--backbone mobilenetv1 --width 1 its first 27"):
        transfer_from_onnx(Detector(DetectorConfig(num_classes=2, base_size=64)), FACE_API)
    with pytest.raises(TransferError, match="matches none of this detector's backbones"):
        transfer_from_onnx(Detector(DetectorConfig(num_classes=2, base_size=64)), MODELS / "face_embedder.onnx")


def test_a_sightline_detector_gives_backbone_and_neck():
    model = Detector(DetectorConfig(num_classes=1, base_size=64))          # the bundled detector's architecture
    transfer = transfer_from_onnx(model, SYNTHETIC / "detector.onnx")
    assert (transfer.backbone_copied, transfer.backbone_total) == (48, 48)
    assert (transfer.rest_copied, transfer.rest_total) == (9, 12)          # heads: 1 class, not 3


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    write_scenes(root / "train", 6, 21, SceneConfig(), workers=1)
    write_scenes(root / "val", 2, 22, SceneConfig(), workers=1)
    return root


def test_tiny_run_from_face_api_reports_exports_and_serves(scenes, photo, capsys):
    run = scenes / "run"
    base = ["train", "--data", str(scenes / "train"), "--val", str(scenes / "val"), "--out", str(run),
            "--epochs", "1", "--batch", "3", "--base-size", "128"]
    assert detect_cli(base + ["--init-from", str(MODELS / "face_embedder.onnx")]) == 2     # refused, no traceback
    assert "refused:" in capsys.readouterr().err
    assert detect_cli(base + ["--backbone", "mobilenetv1", "--init-from", str(FACE_API)]) == 0
    out = capsys.readouterr().out
    assert "backbone (mobilenetv1): 27/27 convolutions copied from face_detector.onnx" in out
    assert "neck and heads: 0/12 copied, 12 left as initialised" in out
    assert "input normalisation: (x / 255 - [0.5, 0.5, 0.5]) / [0.5, 0.5, 0.5]" in out
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["init"]["backbone_copied"] == 27 and ckpt["config"]["backbone"] == "mobilenetv1"
    # a run started from that checkpoint keeps its normalisation and where its weights came from
    again = scenes / "again"
    assert detect_cli([*base[:5], "--out", str(again), *base[7:], "--backbone", "mobilenetv1",
                       "--init-from", str(run / "best.pt"), "--freeze", "backbone"]) == 0
    assert "backbone (mobilenetv1): 135/135 tensors copied" in capsys.readouterr().out
    second = torch.load(again / "last.pt", map_location="cpu", weights_only=False)
    assert tuple(second["config"]["norm_mean"]) == (0.5, 0.5, 0.5)
    assert second["init"]["started_from"]["license"] == "Apache-2.0" == second["init"]["license"]

    served = scenes / "served"
    assert detect_cli(["export", "--checkpoint", str(run / "best.pt"), "--out", str(served / "mine.onnx"),
                       "--name", "mine"]) == 0                                   # parity with PyTorch <= 1e-4
    session = ort.InferenceSession(str(served / "mine.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["family"] == "anchor-yolo" and meta["architecture"]["backbone"] == "mobilenetv1"
    assert meta["normalization"]["mean"] == [0.5] * 3 and meta["license"] == "Apache-2.0"
    with TestClient(create_app(Settings(models_dir=served, data_dir=scenes / "gallery"))) as client:
        wait_ready(client)
        listed = client.get("/models").json()["models"]
        assert [(m["name"], m["task"]) for m in listed] == [("mine", "detection")]
        from tests.images import png_bytes

        r = client.post("/detect", files={"image": ("astronaut.png", png_bytes(photo), "image/png")},
                        params={"conf": 0.0, "max_det": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["name"] == "mine" and len(body["detections"]) == 5
        assert {d["label"] for d in body["detections"]} <= {"pedestrian", "car", "motorcycle"}
