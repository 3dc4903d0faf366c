"""``make models`` end to end at toy scale: scenes → train → export → held-out through HTTP → card."""

import json

from training.build_models import main


def test_build_models_pipeline(tmp_path):
    models = tmp_path / "models"
    args = ["--out", str(models), "--work", str(tmp_path / "work"), "--train-scenes", "16", "--val-scenes", "4",
            "--heldout-scenes", "4", "--epochs", "1", "--tasks", "detection"]
    assert main(args) == 0
    card = json.loads((models / "detector.card.json").read_text())
    assert (models / "detector.onnx").stat().st_size > 0
    assert card["heldout"]["images"] == 4 and 0.0 <= card["heldout"]["map50"] <= 1.0
    assert card["parity_max_abs_diff"] <= 1e-4
    assert card["architecture"]["parameters"] > 0 and card["architecture"]["flops"] > 0
    search = card["input_size_search"]
    assert search["chosen"] in map(int, search["scores"]) and search["train_input_size"] in map(int, search["scores"])
    # Scoring again keeps what the training run recorded.
    assert main(args + ["--heldout-only"]) == 0
    again = json.loads((models / "detector.card.json").read_text())
    assert again["parity_max_abs_diff"] == card["parity_max_abs_diff"]


def test_build_faces_pipeline(tmp_path):
    """The faces half of ``make models`` at toy scale: identities → face detector from the bundled
    detector's weights → landmarks → embedder → ONNX → calibration → held-out through HTTP → card."""
    import shutil
    from pathlib import Path

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "models" / "synthetic" / "detector.onnx", models)  # init
    args = ["--out", str(models), "--work", str(tmp_path / "work"), "--tasks", "faces",
            "--faces-train-identities", "10", "--faces-per-identity", "3", "--faces-val-identities", "4",
            "--faces-val-per-identity", "3", "--faces-heldout-identities", "4", "--faces-heldout-per-identity", "3",
            "--faces-detector-epochs", "1", "--faces-detector-photos", "30", "--faces-landmark-epochs", "1",
            "--faces-embedder-epochs", "1", "--faces-embedder-steps", "2", "--faces-verify-pairs", "3"]
    assert main(args) == 0
    card = json.loads((models / "faces.card.json").read_text())     # beside the detector, in --out itself
    assert {p.name for p in models.glob("*.onnx")} == {"detector.onnx", "face_detector.onnx", "landmarks.onnx",
                                                       "embedder.onnx"}
    assert set(card["models"]) == {"face_detector", "landmarks", "embedder"}
    assert card["initialised_from"].endswith("detector.onnx")
    assert max(card["parity_max_abs_diff"].values()) <= 1e-4
    assert card["models"]["landmarks"]["training"]["epochs"] == 1
    held = card["heldout"]
    assert held["identities"] == 4 and held["photos"] == 12
    ident = held["identification"]
    assert ident["enrolled"] + ident["enroll_skipped"] == 2          # the first half of the identities
    # a toy detector may find too few faces to calibrate through the serving pipeline: then it says so
    calibration = card["calibration"]
    assert "threshold" in calibration and (calibration.get("served_calibration") or calibration["genuine_pairs"] > 0)
    assert 0.0 <= held["detection"]["ap50"] <= 1.0 and 0.0 <= held["eigenfaces"]["tar_at_far"] <= 1.0
    assert (tmp_path / "work" / "faces-build.json").exists()


def test_build_segmenter_pipeline(tmp_path):
    """The segmentation part of ``make models`` at toy scale: the bundled recipe's U-Net, its
    contracting path started from the detector in the output folder, trained, exported, its serving
    size chosen on validation scenes, scored on held-out scenes through POST /segment, its card written; without a detector it says so."""
    import shutil
    from pathlib import Path

    import pytest

    models = tmp_path / "models"
    models.mkdir()
    args = ["--out", str(models), "--work", str(tmp_path / "work"), "--train-scenes", "16", "--val-scenes", "4",
            "--heldout-scenes", "4", "--segment-epochs", "1", "--tasks", "segmentation"]
    with pytest.raises(SystemExit, match="build it first"):
        main(args)
    shutil.copy(Path(__file__).resolve().parent.parent / "models" / "synthetic" / "detector.onnx", models)
    assert main(args) == 0
    card = json.loads((models / "segmenter.card.json").read_text())
    assert card["initialised_from"].endswith("detector.onnx") and card["parity_max_abs_diff"] <= 1e-4
    assert card["architecture"]["encoder"] == "mobilenetv2" and card["architecture"]["width"] == 8
    assert card["heldout"]["images"] == 4 and 0.0 <= card["heldout"]["miou"] <= 1.0
    search = card["input_size_search"]   # the serving size, chosen on the validation scenes
    assert search["train_input_size"] == 384 and sorted(map(int, search["scores"])) == list(range(384, 577, 32))
    assert card["input_size"] == search["chosen"]
