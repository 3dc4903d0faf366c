"""The one metadata contract: every family's required values, refused with a message that says
what is wrong, at export (before a file is written) as at load."""

import pytest
import torch

from app.models.metadata import MetadataError, validate_metadata
from training.onnx_export import export_onnx, file_metadata

BASE = {"name": "m", "version": "1", "input_size": 112, "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}}
EMBEDDER = {**BASE, "task": "face_embedding", "family": "dlib-resnet", "embedding_dim": 128,
            "template": [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]],
            "verification": {"threshold": 0.2}}
LANDMARKS = {**BASE, "task": "face_landmarks", "family": "crop-landmarks", "crop_margin": 1.0}


def test_a_complete_file_validates_as_its_familys_class():
    meta = validate_metadata(EMBEDDER)
    assert type(meta).__name__ == "EmbedderMeta" and meta.verification.threshold == 0.2
    assert validate_metadata({**LANDMARKS, "points": 68, "point_groups": [[36, 37], [42], [30], [48], [54]]}).points == 68


@pytest.mark.parametrize("change, message", [
    ({"family": "mystery"}, "family 'mystery' is not one Sightline serves"),
    ({"family": None}, "family None"),
    ({"task": "detection"}, "serves face_embedding, not task 'detection'"),
    ({"template": [[0, 0]] * 4}, "template"),
    ({"verification": {"threshold": -1}}, "threshold"),
    ({"align_points": [0, 0]}, "align_points"),
    ({"align_points": [0, 7]}, "align_points"),
    ({"normalization": {"color": "YUV", "mean": [0] * 3, "std": [1] * 3}}, "color"),
    ({"input_size": 0}, "input_size"),
])
def test_a_bad_embedder_is_refused_with_what_is_wrong(change, message):
    with pytest.raises(MetadataError, match="m.onnx") as err:
        validate_metadata({**EMBEDDER, **change}, "m.onnx")
    assert message in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"points": 68}, "needs point_groups"),
    ({"points": 68, "point_groups": [[36], [42], [30], [48]]}, "5 non-empty lists"),
    ({"points": 68, "point_groups": [[36], [42], [30], [48], [68]]}, "below 68"),
    ({"points": 68, "point_groups": [[36], [42], [30], [48], [54]], "flip_test": True}, "flip test"),
])
def test_a_bad_landmark_model_is_refused(change, message):
    with pytest.raises(MetadataError, match=message):
        validate_metadata({**LANDMARKS, **change})


def test_the_exporter_refuses_before_writing(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(128))
    example = torch.zeros(1, 3, 112, 112)
    model(example)
    with pytest.raises(MetadataError, match="family"):
        export_onnx(model, example, tmp_path / "bad.onnx", {**EMBEDDER, "family": "mystery"})
    assert not (tmp_path / "bad.onnx").exists()
    export_onnx(model, example, tmp_path / "good.onnx", EMBEDDER)
    assert file_metadata(tmp_path / "good.onnx")["family"] == "dlib-resnet"
