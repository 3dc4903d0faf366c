"""``python -m app.models import``: a copy written with complete metadata that the server loads, or a
refusal in one line with exit status 2 (missing file, bytes that are not ONNX, outputs of another
family, values missing, the onnx package missing); the source never changes.

ArcFace: no real ArcFace weights are available here, so a tiny network of ArcFace's layout (3 x 112
x 112 in, 512 out) is exported, imported with the family's defaults and served through ``/verify``
behind the real SCRFD detector (InsightFace's weights, from the package cache): the aligned crop
fed to it must be InsightFace's ``norm_crop`` of the landmarks (a similarity to ``arcface_dst`` by
``cv2.estimateAffinePartial2D``, then ``cv2.warpAffine``, in OpenCV's pixel indices)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.models import load_model
from app.models.__main__ import main
from app.models.embedder import FaceEmbedder
from app.models.scrfd import ScrfdDetector
from app.runtime import read_metadata
from app.settings import Settings
from tests.conftest import MODELS, wait_ready
from training.pretrained.packages import SCRFD, fetch
from training.pretrained.realphotos import real_photos

ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], np.float32)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(capsys, argv: list[str], *words: str) -> str:
    """Run the command; it must exit 2 with one line on stderr holding ``words``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refused: ") and "\n" not in err, err
    for word in words:
        assert word in err, err
    return err


def served(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return load_model(session, read_metadata(session), path)


@pytest.fixture(scope="module")
def scrfd_source() -> Path:
    return fetch(SCRFD) / "scrfd-0.3.0" / "models" / "scrfd.onnx"


# ---- refusals ----

def test_a_missing_file_is_refused(tmp_path, capsys):
    refused(capsys, ["import", "--family", "scrfd", str(tmp_path / "nope.onnx"), str(tmp_path / "out.onnx")],
            "no such file")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a model\n", bytes(range(256)) * 8],
                         ids=["empty", "text", "bytes"])
def test_bytes_that_are_not_onnx_are_refused(tmp_path, capsys, content):
    (tmp_path / "bad.onnx").write_bytes(content)
    refused(capsys, ["import", "--family", "arcface", str(tmp_path / "bad.onnx"), str(tmp_path / "out.onnx")],
            "bad.onnx", "not an ONNX model")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("family, source, words", [
    ("scrfd", "face_detector.onnx", ("not an SCRFD graph", "1 output")),
    ("scrfd", "face_embedder.onnx", ("not an SCRFD graph",)),
    ("arcface", "face_detector.onnx", ("(batch, D)",)),
    ("ssd-boxes", "face_embedder.onnx", ("missing",)),
])
def test_outputs_of_another_family_are_refused(tmp_path, capsys, family, source, words):
    path = MODELS / source
    before = digest(path)
    refused(capsys, ["import", "--family", family, str(path), str(tmp_path / "out.onnx")], *words)
    assert digest(path) == before and not (tmp_path / "out.onnx").exists()


def test_the_real_scrfd_refused_as_an_embedder_and_its_fixed_input_kept(tmp_path, capsys, scrfd_source):
    refused(capsys, ["import", "--family", "arcface", str(scrfd_source), str(tmp_path / "a.onnx")], "(batch, D)")
    refused(capsys, ["import", "--family", "scrfd", str(scrfd_source), str(tmp_path / "s.onnx"), "--input-size", "320"],
            "input_size is 640 in the graph")


def test_a_graph_whose_output_is_not_what_the_values_given_imply_is_refused(tmp_path, capsys):
    """dlib's embedder given as a 68-point landmark model: complete metadata, but its output
    (1, 128) is not the (1, 136) of 68 points: refused when the copy is loaded as served."""
    source = stripped(MODELS / "face_embedder.onnx", tmp_path / "raw.onnx")
    refused(capsys, ["import", "--family", "crop-landmarks", str(source), str(tmp_path / "lm.onnx"),
                     "--set", "crop_margin=1.0", "--set", "points=68", "--set", f"point_groups={GROUPS}",
                     "--set", 'normalization={"mean": [0, 0, 0], "std": [1, 1, 1]}'],
            "output shape (1, 128) != (1, 136)")
    assert not (tmp_path / "lm.onnx").exists() and not list(tmp_path.glob(".*importing"))


GROUPS = json.dumps([[36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47], [30], [48], [54]])


def stripped(path: Path, to: Path) -> Path:
    """A copy of ``path`` with no metadata: a file as someone else's tool wrote it."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(to))
    return to


def test_missing_values_are_named_then_given_on_the_command_line(tmp_path, capsys):
    source = stripped(MODELS / "face_landmarks.onnx", tmp_path / "landmarks68.onnx")
    before = digest(source)
    err = refused(capsys, ["import", "--family", "crop-landmarks", str(source), str(tmp_path / "lm.onnx")],
                  "crop_margin is missing", "normalization is missing", "--set")
    assert "points" not in err
    values = ["--set", "crop_margin=1.0", "--set", 'normalization={"mean": [0.4815, 0.4588, 0.409], "std": [1, 1, 1]}']
    # without its 68 points and their groups, it would be a 5-point model: its output says otherwise
    refused(capsys, ["import", "--family", "crop-landmarks", str(source), str(tmp_path / "lm.onnx"), *values],
            "output shape (1, 136) != (1, 10)")
    ok = ["import", "--family", "crop-landmarks", str(source), str(tmp_path / "lm.onnx"), *values,
          "--set", "points=68", "--set", f"point_groups={GROUPS}",
          "--name", "face_landmarks", "--version", "1.7.15", "--license", "MIT"]
    assert main(ok) == 0
    model = served(tmp_path / "lm.onnx")
    assert model.meta.family == "crop-landmarks" and model.meta.points == 68 and model.meta.license == "MIT"
    assert model.meta.input_size == 112 and model.meta.fixed_size            # read from the graph
    assert model.meta.weights_sha256 == before and digest(source) == before
    refused(capsys, ok, "exists", "--force")                                # never replaced unasked
    assert main([*ok, "--force"]) == 0


def test_a_file_carrying_its_metadata_needs_no_values(tmp_path):
    assert main(["import", "--family", "ssd-boxes", str(MODELS / "face_detector.onnx"), str(tmp_path / "d.onnx")]) == 0
    assert served(tmp_path / "d.onnx").meta.min_face == served(MODELS / "face_detector.onnx").meta.min_face


def test_the_source_is_never_the_target(tmp_path, capsys, scrfd_source):
    copy = tmp_path / "scrfd.onnx"
    copy.write_bytes(scrfd_source.read_bytes())
    before = digest(copy)
    refused(capsys, ["import", "--family", "scrfd", str(copy), str(copy), "--force"], "never changes its source")
    assert digest(copy) == before


def test_without_the_onnx_package_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch, scrfd_source):
    monkeypatch.setitem(sys.modules, "onnx", None)           # import onnx raises ImportError
    refused(capsys, ["import", "--family", "scrfd", str(scrfd_source), str(tmp_path / "out.onnx")],
            "pip install onnx")


def test_a_bad_setting_is_a_usage_error(tmp_path, capsys, scrfd_source):
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--family", "scrfd", str(scrfd_source), str(tmp_path / "o.onnx"), "--set", "novalue"])
    assert exit_.value.code == 2


# ---- SCRFD: the copy is rewritten and served ----

def test_scrfd_is_written_as_a_served_copy(tmp_path, capsys, scrfd_source):
    before = digest(scrfd_source)
    target = tmp_path / "faces" / "det.onnx"
    assert main(["import", "--family", "scrfd", str(scrfd_source), str(target), "--min-face", "12",
                 "--threshold", "0.6", "--source", "pypi:scrfd==0.3.0 models/scrfd.onnx"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert digest(scrfd_source) == before
    model = served(target)
    assert isinstance(model, ScrfdDetector)
    meta = model.meta
    assert (meta.task, meta.boxes, meta.input_size, meta.fixed_size) == ("face_detection", 16800, 640, True)
    assert (meta.min_face, meta.score_threshold, meta.landmarks, meta.pad) == (12.0, 0.6, True, "bottom_right")
    assert meta.source.startswith("pypi:scrfd==0.3.0") and "graph rewritten" in meta.source
    assert "non-commercial" in meta.license and meta.weights_sha256 == before
    np.testing.assert_allclose(meta.normalization.std, [128 / 255] * 3)
    [output] = model.session.get_outputs()
    assert output.shape == [1, 16800, 15]
    # stamped anew (another min_face): the graph is not rewritten twice
    assert main(["import", "--family", "scrfd", str(target), str(tmp_path / "again.onnx"), "--min-face", "20"]) == 0
    again = served(tmp_path / "again.onnx")
    assert again.meta.min_face == 20 and again.meta.source.count("graph rewritten") == 1
    assert again.meta.weights_sha256 == before


# ---- ArcFace: a tiny network of its layout, imported with the family's defaults ----

class TinyArcFace(torch.nn.Module):
    """ArcFace's layout: (B, 3, 112, 112) → (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.PReLU(8),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.PReLU(16),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.AvgPool2d(7), torch.nn.Flatten())
        self.embedding = torch.nn.Linear(32 * 4, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(x))


class RawPixels(torch.nn.Module):
    """An MXNet-style graph that normalises its own input: fed 0-255 pixels."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 127.5) * 0.0078125)


def export_arcface(path: Path, raw_pixels: bool = False) -> Path:
    net = RawPixels(TinyArcFace()) if raw_pixels else TinyArcFace()
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 112, 112),), buf, input_names=["input.1"],
                      output_names=["fc1"], dynamic_axes={"input.1": {0: "None"}, "fc1": {0: "None"}},
                      opset_version=13, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    if raw_pixels:                                  # MXNet's node names, which InsightFace's rule reads
        for node in proto.graph.node:
            node.name = {"Sub": "_minus0", "Mul": "_mul0"}.get(node.op_type, node.name)
    onnx.save(proto, str(path))
    return path


def test_arcface_defaults_and_insightfaces_normalisation_rule(tmp_path):
    plain = export_arcface(tmp_path / "w600k_tiny.onnx")
    assert main(["import", "--family", "arcface", str(plain), str(tmp_path / "emb.onnx")]) == 0
    model = served(tmp_path / "emb.onnx")
    assert isinstance(model, FaceEmbedder)
    meta = model.meta
    assert (meta.input_size, meta.fixed_size, meta.embedding_dim) == (112, True, 512)
    assert meta.normalization.color == "RGB"
    np.testing.assert_allclose(meta.normalization.mean, [0.5] * 3)        # (x - 127.5) / 127.5
    np.testing.assert_allclose(meta.normalization.std, [0.5] * 3)
    np.testing.assert_allclose(np.asarray(meta.template) * 112, ARCFACE_DST + 0.5, atol=1e-4)
    assert "placeholder" in meta.verification.method and meta.verification.threshold > 0
    assert "non-commercial" in meta.license
    raw = export_arcface(tmp_path / "mxnet_tiny.onnx", raw_pixels=True)
    assert main(["import", "--family", "arcface", str(raw), str(tmp_path / "emb2.onnx"), "--threshold", "1.1",
                 "--license", "MIT"]) == 0
    meta = served(tmp_path / "emb2.onnx").meta
    np.testing.assert_allclose(meta.normalization.mean, [0.0] * 3)         # the raw 0-255 pixels
    np.testing.assert_allclose(meta.normalization.std, [1 / 255] * 3)
    assert meta.verification.threshold == 1.1 and "--threshold" in meta.verification.method
    assert meta.license == "MIT"


def norm_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """InsightFace's ``norm_crop`` of landmarks given in OpenCV pixel indices."""
    matrix, _ = cv2.estimateAffinePartial2D(landmarks, ARCFACE_DST, method=cv2.RANSAC, ransacReprojThreshold=1e4)
    return cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0)


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def test_arcface_served_through_verify_gets_insightfaces_aligned_crop(tmp_path, scrfd_source):
    """Photos at half size (the face spans less than twice the crop, so Sightline's warp does not
    pre-shrink and the crops compare pixel for pixel)."""
    folder = tmp_path / "models"
    assert main(["import", "--family", "scrfd", str(scrfd_source), str(folder / "face_detector.onnx")]) == 0
    assert main(["import", "--family", "arcface", str(export_arcface(tmp_path / "tiny.onnx")),
                 str(folder / "face_embedder.onnx")]) == 0
    portraits = real_photos().portraits
    images = {}
    for name in ("obama", "obama2"):
        full = np.asarray(Image.open(portraits[name]).convert("RGB"))
        images[name] = cv2.resize(full, (full.shape[1] // 2, full.shape[0] // 2), interpolation=cv2.INTER_AREA)
    with TestClient(create_app(Settings(models_dir=folder, data_dir=tmp_path / "data"))) as client:
        wait_ready(client)
        embedder = client.app.state.registry.embedder
        assert embedder.meta.family == "arcface" and client.app.state.registry.landmarks is None
        fed: list[np.ndarray] = []
        run = embedder.runner.run
        embedder.runner.run = lambda batch: (fed.append(batch.copy()), run(batch))[1]
        r = client.post("/verify", files={"image1": ("a.png", png(images["obama"])),
                                          "image2": ("b.png", png(images["obama2"]))})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert 0 <= answer["distance"] <= 4 and "verified" in answer
    crops = np.concatenate(fed)
    assert len(crops) == 2 and crops.shape[1:] == (3, 112, 112)
    pixels = np.clip(np.rint((crops * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for name, face in zip(("obama", "obama2"), answer["faces"]):
        want = norm_crop(images[name], np.asarray(face["landmarks"], np.float32) - 0.5)   # to OpenCV's indices
        diff = np.abs(pixels.astype(int)[:, None] - want.astype(int)[None]).reshape(2, -1)
        best = diff.mean(axis=1).argmin()
        assert diff[best].mean() < 0.5 and np.percentile(diff[best], 99) <= 2, (name, diff[best].mean())
