"""A tiny real training run through the CLI, then export, ONNX parity, resume and transfer."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.detect.__main__ import main as detect_cli
from training.detect.export import load_checkpoint
from training.detect.loss import assign_targets
from training.detect.model import STRIDES, Detector, DetectorConfig
from training.synth.scenes import SceneConfig, write_scenes


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    cfg = SceneConfig()
    write_scenes(root / "train", 24, 11, cfg, workers=1)
    write_scenes(root / "val", 6, 12, cfg, workers=1)
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_sets):
    out = tiny_sets / "run"
    args = ["train", "--data", str(tiny_sets / "train"), "--val", str(tiny_sets / "val"), "--out", str(out),
            "--epochs", "3", "--batch", "8", "--width", "0.25", "--depth", "0.34", "--base-size", "160",
            "--lr", "3e-3"]
    assert detect_cli(args) == 0
    return out


def test_loss_falls_and_artifacts_written(tiny_run):
    history = json.loads((tiny_run / "history.json").read_text())
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    for name in ("last.pt", "best.pt", "curves.png"):
        assert (tiny_run / name).stat().st_size > 0
    assert all(0.0 <= h["map50"] <= 1.0 for h in history)


def test_resume_continues_from_last_epoch(tiny_run, tiny_sets):
    args = ["train", "--data", str(tiny_sets / "train"), "--val", str(tiny_sets / "val"), "--out", str(tiny_run),
            "--epochs", "4", "--batch", "8", "--resume"]
    assert detect_cli(args) == 0
    history = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_export_parity_and_metadata(tiny_run, tmp_path):
    out = tmp_path / "det.onnx"
    assert detect_cli(["export", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out)]) == 0
    model, ckpt = load_checkpoint(tiny_run / "best.pt")
    size = model.cfg.input_size
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))  # batch 3: dynamic axis
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
    # height and width are free: a larger input (a tuned serving size) runs and still agrees
    big = torch.rand(2, 3, size + 32, size + 32, generator=torch.Generator().manual_seed(2))
    got = session.run(None, {"images": big.numpy()})[0]
    with torch.no_grad():
        want = model(big).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["task"] == "detection" and meta["train_input_size"] == size
    assert meta["class_names"] == ["pedestrian", "car", "motorcycle"]
    assert meta["input_size"] == size and meta["strides"] == list(STRIDES)
    assert len(meta["anchors"]) == 3 and meta["normalization"]["std"] == [1.0, 1.0, 1.0]
    assert {"version", "output_layout", "training", "architecture"} <= meta.keys()


def test_tune_size_writes_the_best_validation_size(tiny_run, tiny_sets, tmp_path):
    out = tmp_path / "det.onnx"
    assert detect_cli(["export", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out)]) == 0
    size = load_checkpoint(tiny_run / "best.pt")[0].cfg.input_size
    sizes = [size, size + 32]
    args = ["tune-size", "--model", str(out), "--val", str(tiny_sets / "val"), "--sizes", ",".join(map(str, sizes))]
    assert detect_cli(args) == 0
    meta = {k: json.loads(v) for k, v in
            ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta()
            .custom_metadata_map.items()}
    search = meta["input_size_search"]
    assert sorted(map(int, search["scores"])) == sizes and meta["train_input_size"] == size
    best = max(sizes, key=lambda s: (search["scores"][str(s)]["map50_95"], -s))
    assert meta["input_size"] == search["chosen"] == best
    # the rewritten file serves at its new size: the layout check at load runs a zero batch of it
    from app.models.anchor_detector import ObjectDetector
    from app.settings import Settings

    assert ObjectDetector.load(out, Settings(device="cpu")).meta.input_size == best


def test_tune_size_refuses_sizes_off_the_stride(tiny_run, tmp_path):
    with pytest.raises(SystemExit):
        detect_cli(["tune-size", "--model", str(tmp_path / "x.onnx"), "--val", str(tmp_path), "--sizes", "100"])


def test_onnx_weights_reproduce_the_exported_model(tiny_run, tmp_path):
    """A fresh model filled from the ONNX file (batch norm folded) computes what the file computes."""
    from training.detect.onnx_weights import load_onnx_weights

    out = tmp_path / "det.onnx"
    assert detect_cli(["export", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out)]) == 0
    src, _ = load_checkpoint(tiny_run / "best.pt")
    fresh = Detector(DetectorConfig(**src.cfg.to_dict()))
    copied, total = load_onnx_weights(fresh, out)
    assert copied == total > 0
    size = src.cfg.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    want = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        got = fresh.eval()(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
    # another class count: the heads do not fit and are left alone, the rest is copied
    other = Detector(DetectorConfig(**{**src.cfg.to_dict(), "num_classes": 1}))
    copied, total = load_onnx_weights(other, out)
    assert copied == total - 3


def test_init_from_copies_weights_and_freeze_backbone(tiny_run, tiny_sets):
    out = tiny_sets / "transfer"
    args = ["train", "--data", str(tiny_sets / "train"), "--val", str(tiny_sets / "val"), "--out", str(out),
            "--epochs", "1", "--batch", "8", "--width", "0.25", "--depth", "0.34", "--base-size", "160",
            "--init-from", str(tiny_run / "best.pt"), "--freeze", "backbone"]
    assert detect_cli(args) == 0
    src, _ = load_checkpoint(tiny_run / "best.pt")
    dst = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]
    key = "backbone.stem.0.weight"
    assert torch.equal(src.state_dict()[key], dst[key])  # copied and frozen


def test_assignment_uses_midpoint_cell_and_best_anchor():
    anchors = [[[8, 8], [12, 12], [16, 16]], [[30, 30], [40, 40], [50, 50]], [[90, 90], [120, 120], [150, 150]]]
    box = np.array([[100, 60, 140, 100]], np.float32)  # 40x40, centre (120, 80)
    t = assign_targets([box], [np.array([2])], list(STRIDES), anchors, 320)
    offset16 = (320 // 8) ** 2 * 3
    cells16 = 320 // 16
    assert t.row.tolist() == [offset16 + (80 // 16 * cells16 + 120 // 16) * 3 + 1]
    assert t.labels.tolist() == [2]


def test_model_output_rows_match_grid():
    cfg = DetectorConfig(width=0.25, depth=0.34, base_size=128, anchors=[[[4, 4]] * 3] * 3)
    out = Detector(cfg).eval()(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, sum((128 // s) ** 2 * 3 for s in STRIDES), 8)


@pytest.mark.parametrize("seed", [0, 1])
def test_ignore_mask_matches_per_image_reference(seed):
    from app.vision.boxes import box_iou
    from training.detect.loss import Targets, _ignore_mask

    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(4, 60, 2, generator=g) * 100
    preds = torch.cat([xy, xy + torch.rand(4, 60, 2, generator=g) * 40 + 1], -1)
    batch = torch.tensor([0, 0, 2, 2, 2, 3])
    gxy = torch.rand(6, 2, generator=g) * 100
    gt = torch.cat([gxy, gxy + torch.rand(6, 2, generator=g) * 40 + 1], -1)
    t = Targets(batch, torch.zeros(6, dtype=torch.long), gt, torch.zeros(6, dtype=torch.long))
    got = _ignore_mask(preds, t, 0.3)
    for b in range(4):
        own = gt[batch == b]
        want = box_iou(preds[b].numpy(), own.numpy()).max(1) > 0.3 if len(own) else np.zeros(60, bool)
        assert got[b].numpy().tolist() == list(want)
