"""face-api's SSD MobileNetV1 and 68-point landmark net, converted to ONNX, against face-api itself
(TF.js 4.22, wasm backend, in Node.js) on the same input tensors built from real photos.

Measured here (2-core Xeon): score diffs at most 1.6e-6, box diffs at most 4e-4 px at 512,
landmark diffs at most 2e-5 px at 112, our pad + resize identical to face-api's toBatchTensor.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest

from app.models.metadata import validate_metadata
from training.onnx_export import file_metadata
from training.pretrained import faceapi as fa



def test_manifest_reader_dequantizes_uint8_across_shards(tmp_path):
    q = np.array([[0, 1, 2], [127, 254, 255]], np.uint8)
    raw = np.array([1.5, -2.25], "<f4")
    data = q.tobytes() + raw.tobytes()
    (tmp_path / "w.bin1").write_bytes(data[:4])                 # the shard boundary cuts the uint8 entry
    (tmp_path / "w.bin2").write_bytes(data[4:])
    manifest = [{"paths": ["w.bin1", "w.bin2"], "weights": [
        {"name": "q", "shape": [2, 3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "raw", "shape": [2], "dtype": "float32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    weights = fa.read_tfjs_weights(tmp_path / "m.json")
    np.testing.assert_array_equal(weights["q"], q.astype(np.float32) * 0.5 - 1.0)
    assert weights["q"].dtype == np.float32 and weights["q"][1, 2] == 126.5
    np.testing.assert_array_equal(weights["raw"], raw)

    manifest[0]["weights"].pop()                                 # the shards now hold 8 bytes too many
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shards hold"):
        fa.read_tfjs_weights(tmp_path / "m.json")


@pytest.mark.parametrize("shape, rows_before, rows_after", [((3, 6), 1, 2), ((4, 6), 1, 1), ((5, 6), 0, 1)])
def test_centred_pad_puts_the_odd_row_after(shape, rows_before, rows_after):
    """face-api's padToSquare(centre): Math.round(diff / 2) after (halves up), the rest before."""
    padded = fa.pad_to_square(np.ones((*shape, 3), np.uint8), centre=True)
    rows = padded[:, 0, 0]
    assert padded.shape == (6, 6, 3)
    assert rows[:rows_before].sum() == 0 and rows[len(rows) - rows_after:].sum() == 0
    assert rows[rows_before:len(rows) - rows_after].all()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faceapi")
    return (fa.export_ssd(out / "ssd.onnx", fa.ssd_metadata(fa.MIN_FACE)),
            fa.export_landmarks(out / "landmarks.onnx", fa.landmark_metadata()))


@pytest.fixture(scope="module")
def parity(converted):
    return fa.check_parity(*converted, fa.parity_photos())


def test_files_carry_valid_metadata_and_a_dynamic_batch(converted):
    rng = np.random.default_rng(0)
    for path, family, size, out_shape in ((converted[0], "ssd-boxes", fa.SSD_SIZE, (5118, 5)),
                                          (converted[1], "crop-landmarks", fa.LANDMARK_SIZE, (136,))):
        assert validate_metadata(file_metadata(path), path.name).family == family
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batch = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
        both = session.run(None, {"images": batch})[0]
        assert both.shape == (2, *out_shape)
        np.testing.assert_allclose(both[1], session.run(None, {"images": batch[1:]})[0][0], atol=1e-4)


def test_ssd_matches_faceapi(parity):
    with_faces = [s for s in parity.ssd if len(s.theirs)]
    assert len(with_faces) >= 6, [s.name for s in with_faces]   # 4 portraits/astronaut + 3 Solvay windows (+ cat)
    assert sum(len(s.theirs) for s in parity.ssd if s.name.startswith("solvay")) >= 10
    for s in parity.ssd:
        assert s.score_diff < fa.SCORE_TOL, (s.name, s.score_diff)
        assert s.box_diff < fa.BOX_TOL, (s.name, s.box_diff)
        assert s.match, (s.name, s.ours, s.theirs)
    assert all(s.anchors > 0 for s in with_faces)


def test_landmarks_match_faceapi_on_face_crops(parity):
    assert len(parity.landmark_diffs) >= 10
    worst = max(parity.landmark_diffs, key=parity.landmark_diffs.get)
    assert parity.landmark_diffs[worst] < fa.LANDMARK_TOL, (worst, parity.landmark_diffs[worst])


def test_our_pad_and_resize_are_faceapis(parity):
    assert len(parity.preprocess_diffs) == 2
    assert max(parity.preprocess_diffs.values()) < 1e-3, parity.preprocess_diffs


def test_one_face_on_a_portrait_none_on_faceless_photos(parity):
    """The cat (chelsea.png) is left out: the SSD, face-api's own included, scores its face 0.93."""
    found = {s.name: s.ours for s in parity.ssd}
    assert len(found["obama"]) == 1 and found["obama"][0, 4] > 0.9, found["obama"]
    for name in fa.FACELESS:
        assert len(found[name.split(".")[0]]) == 0, (name, found[name.split(".")[0]])
