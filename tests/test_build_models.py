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
