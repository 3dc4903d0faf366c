"""Tiny real training runs of the face models through their CLI (loss falls), ONNX parity and
metadata, the serving classes reading the exported files, and the verification figures."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from app.models.embedder import FaceEmbedder
from app.models.landmarks import LandmarkModel
from app.runtime import create_session, read_metadata
from app.settings import Settings
from app.vision.align import align_face, crop_box, invert_affine, mirror_average, transform_points
from training.faces.__main__ import main as faces_cli
from training.faces.calibrate import pair_distances, threshold_at_far
from training.faces.data import load_faces, to_input
from training.faces.eigenfaces import eigenfaces_baseline
from training.faces.embedder import load_embedder
from training.faces.landmarks import load_landmarks, nme
from training.synth.faces import FaceConfig, write_faces


@pytest.fixture(scope="module")
def face_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    write_faces(root / "train", 12, 4, 1, FaceConfig(), workers=1)
    write_faces(root / "val", 6, 3, 2, FaceConfig(), workers=1)
    return root


def _history(run):
    return json.loads((run / "history.json").read_text())


@pytest.fixture(scope="module")
def landmark_run(face_sets):
    out = face_sets / "lm-run"
    assert faces_cli(["landmarks", "train", "--data", str(face_sets / "train"), "--val", str(face_sets / "val"),
                      "--out", str(out), "--epochs", "6", "--width", "8", "--lr", "3e-3"]) == 0
    return out


@pytest.fixture(scope="module")
def embedder_run(face_sets):
    out = face_sets / "emb-run"
    assert faces_cli(["embedder", "train", "--data", str(face_sets / "train"), "--val", str(face_sets / "val"),
                      "--out", str(out), "--epochs", "4", "--steps-per-epoch", "6", "--width", "16",
                      "--identities-per-batch", "8", "--photos-per-identity", "3"]) == 0
    return out


def test_landmark_training_loss_falls(landmark_run):
    history = _history(landmark_run)
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    assert (landmark_run / "curves.png").stat().st_size > 0 and (landmark_run / "best.pt").exists()


def test_embedder_training_loss_falls_and_head_is_fitted(embedder_run):
    history = _history(embedder_run)
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    ckpt = torch.load(embedder_run / "best.pt", map_location="cpu", weights_only=False)
    assert len(ckpt["head"]["weights"]) == 128 and 0.0 <= ckpt["validation"]["tar_at_far"] <= 1.0


def _export_with_parity(kind: str, run, load, tmp_path):
    """Export through the CLI; ONNX Runtime answers like the PyTorch model (within 1e-4)."""
    out = tmp_path / f"{kind}.onnx"
    assert faces_cli([kind, "export", "--checkpoint", str(run / "best.pt"), "--out", str(out)]) == 0
    model, _ = load(run / "best.pt")
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() <= 1e-4
    return out, model, got, create_session(out, Settings(device="cpu"))


def test_landmark_export_parity_and_served(landmark_run, face_sets, tmp_path):
    out, model, _, session = _export_with_parity("landmarks", landmark_run, load_landmarks, tmp_path)
    served = LandmarkModel.from_session(session, read_metadata(session), out)
    assert served.meta.task == "face_landmarks" and served.meta.crop_margin > 1
    sample = load_faces(face_sets / "val").subjects()[0]
    from training.detect.data import read_rgb

    photo = read_rgb(sample.path)
    points = served.predict(photo, sample.box[None])
    assert points.shape == (1, 5, 2) and np.isfinite(points).all()
    # served: the crop and its mirror image, averaged (the model trained on mirrored faces)
    assert served.meta.flip_test
    crop, to_crop = crop_box(photo, sample.box, 64, served.meta.crop_margin)
    with torch.no_grad():
        pred = model(to_input(np.stack([crop, crop[:, ::-1]]))).numpy().reshape(2, 5, 2) * 64
    expected = transform_points(mirror_average(pred[0], pred[1], 64), invert_affine(to_crop))
    np.testing.assert_allclose(points[0], expected, atol=1e-2)


def test_embedder_export_parity_and_served(embedder_run, face_sets, tmp_path):
    out, model, got, session = _export_with_parity("embedder", embedder_run, load_embedder, tmp_path)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    served = FaceEmbedder.from_session(session, read_metadata(session), out)
    meta = served.meta
    assert meta.task == "face_embedding" and meta.embedding_dim == 128 and meta.distance == "squared_l2"
    assert meta.verification.target_far == 1e-3 and len(meta.verification_head.weights) == 128
    # trained with mirrored crops, so served with the flip test; a gallery never mixes the two readings
    assert meta.flip_test and served.fingerprint.endswith("+flip")
    assert len(served.fingerprint) == len("1.0.0+") + 12 + len("+flip")
    sample = load_faces(face_sets / "val").subjects()[0]
    from training.detect.data import read_rgb

    photo = read_rgb(sample.path)
    emb = served.embed(photo, sample.landmarks[None])
    assert emb.shape == (1, 128) and 0.0 <= served.probability(emb[0], -emb[0]) <= 1.0
    # served: the unit embeddings of the aligned crop and of its mirror image, summed, unit length again
    crop = align_face(photo, sample.landmarks, 64, np.asarray(meta.template))
    with torch.no_grad():
        pair = model(to_input(np.stack([crop, crop[:, ::-1]]))).numpy()
    expected = pair[0] + pair[1]
    np.testing.assert_allclose(emb[0], expected / np.linalg.norm(expected), atol=1e-4)
    assert float(emb[0] @ pair[0]) < 1 - 1e-6   # the mirror reading changed the embedding


def test_threshold_at_far_on_known_distances():
    genuine = np.array([0.1, 0.2, 0.3, 0.9])
    impostor = np.linspace(0.5, 2.0, 1000)          # 1000 impostor pairs: 1 may be accepted at FAR 1e-3
    out = threshold_at_far(genuine, impostor, 1e-3)
    assert impostor[0] < out["threshold"] < impostor[1] and out["far"] == 1e-3
    assert out["tar"] == 0.75                        # 0.9 is rejected
    assert threshold_at_far(genuine, impostor, 0.0)["far"] == 0.0


def test_pair_distances_split_genuine_and_impostor():
    emb = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    gen, imp = pair_distances(emb, np.array(["a", "a", "b"]))
    np.testing.assert_allclose(gen, [0.0])
    np.testing.assert_allclose(imp, [2.0, 2.0])


def test_nme_by_hand():
    truth = np.array([[[0, 0], [10, 0], [5, 5], [2, 8], [8, 8]]], np.float32)
    pred = truth + np.array([1.0, 0.0], np.float32)   # every point 1 px off, inter-ocular 10 px
    assert nme(pred, truth)[0] == pytest.approx(0.1)


def test_eigenfaces_baseline_runs_on_held_out_identities(face_sets):
    out = eigenfaces_baseline(load_faces(face_sets / "train").subjects(), load_faces(face_sets / "val").subjects(),
                              components=16)
    assert 0.0 <= out["tar_at_far"] <= 1.0 and out["genuine_pairs"] == 6 * 3
