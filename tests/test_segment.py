"""A tiny real U-Net trained through its CLI on synthetic scenes (loss falls, resume), exported with
its metadata (ONNX parity), then served: POST /segment in every format, its errors, and the dataset
loaders for real data (VOC-style palette PNGs, COCO polygons and RLE)."""

import base64
import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_api

from app.main import create_app
from app.settings import Settings
from app.vision.masks import IGNORE
from tests.conftest import BUNDLED_MODELS, SYNTHETIC, wait_ready
from tests.images import png_bytes
from training.segment.__main__ import main as segment_cli
from training.segment.input_size import OUTPUT_AXES
from training.input_size import with_input_size
from training.segment.data import load_segmentation, paint_coco, read_mask
from training.segment.model import UNet, UNetConfig
from training.segment.train import load_segmenter, predict_mask
from training.synth.scenes import SceneConfig, write_scenes

SMALL = SceneConfig(min_side=64, max_side=112, max_objects=4, min_object_size=12.0, max_distractors=2)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root / "train", 24, 1, SMALL, workers=1)
    write_scenes(root / "val", 4, 2, SMALL, workers=1)
    return root


@pytest.fixture(scope="module")
def run(scenes):
    out = scenes / "run"
    args = ["train", "--data", str(scenes / "train"), "--val", str(scenes / "val"), "--out", str(out),
            "--batch", "4", "--input-size", "64", "--width", "16", "--depth", "2", "--workers", "0", "--lr", "1e-2"]
    assert segment_cli([*args, "--epochs", "3"]) == 0
    assert segment_cli([*args, "--epochs", "4", "--resume"]) == 0     # one more epoch from last.pt
    return out


@pytest.fixture(scope="module")
def served(run, tmp_path_factory):
    models = tmp_path_factory.mktemp("seg-models")
    assert segment_cli(["export", "--checkpoint", str(run / "best.pt"), "--out", str(models / "segmenter.onnx")]) == 0
    with TestClient(create_app(Settings(models_dir=models, data_dir=models / "data"))) as client:
        wait_ready(client)
        yield client, models


def test_unet_shapes_and_skip_connections():
    model = UNet(UNetConfig(num_classes=5, input_size=64, width=16, depth=3))
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5, 64, 64)
    assert [m.stride for m in model.up] == [(2, 2)] * 3                      # stride-2 transpose convolutions
    assert [f[0].in_channels for f in model.fuse] == [128, 64, 32]          # up-sampled + skip, concatenated
    half = UNet(UNetConfig(num_classes=5, input_size=64, width=16, depth=3, output_stride=2))
    assert half(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 32, 32)
    with pytest.raises(ValueError, match="multiple of"):
        UNet(UNetConfig(num_classes=2, input_size=60, depth=3))


def test_mobilenetv2_contracting_path_shapes_and_skips():
    cfg = UNetConfig(num_classes=4, input_size=64, width=8, depth=5, encoder="mobilenetv2", repeats=0.67)
    model = UNet(cfg)
    assert cfg.channels() == [8, 8, 16, 16, 48, 160]                        # the detector's widths at 0.5
    skips = model.contract(torch.zeros(2, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in skips] == [(c, 64 >> i, 64 >> i) for i, c in enumerate(cfg.channels())]
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    assert [m.stride for m in model.up] == [(2, 2)] * 5
    assert [f[0].in_channels for f in model.fuse] == [96, 32, 32, 16, 16]   # up-sampled + skip, concatenated
    half = UNet(UNetConfig(**{**cfg.to_dict(), "output_stride": 2}))
    assert half(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 32, 32) and not hasattr(half, "stem")
    with pytest.raises(ValueError, match="depth 5"):
        UNetConfig(num_classes=2, encoder="mobilenetv2", depth=4)
    with pytest.raises(ValueError, match="encoder must be"):
        UNetConfig(num_classes=2, encoder="resnet")


def test_init_from_the_detector_copies_its_backbone(tmp_path):
    """The bundled detector's backbone (width 0.5, depth 0.67) becomes the contracting path: every
    convolution copied, so that it answers as the detector does; with the segmenter's own
    normalisation the first convolution is rewritten to match (away from the zero-padded border)."""
    from training.detect.model import NORM_MEAN as DET_MEAN, NORM_STD as DET_STD, Backbone
    from training.detect.onnx_weights import load_onnx_weights
    from training.segment.data import NORM_MEAN, NORM_STD

    detector, example, photo = SYNTHETIC / "detector.onnx", torch.zeros(1, 3, 64, 64), torch.rand(1, 3, 64, 64)

    def unet():
        return UNet(UNetConfig(num_classes=4, input_size=64, width=8, depth=5, encoder="mobilenetv2", repeats=0.67))

    def norm(mean, std):
        return (photo - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    backbone, same, renormed = Backbone(0.5, 0.67, 4), unet(), unet()
    assert load_onnx_weights(backbone, detector, example) == (48, 48)
    assert load_onnx_weights(same.encoder, detector, example) == (48, 48)
    assert load_onnx_weights(renormed.encoder, detector, example, input_norm=(NORM_MEAN, NORM_STD)) == (48, 48)
    with torch.no_grad():
        theirs = backbone.eval()(norm(DET_MEAN, DET_STD))                  # strides 8, 16, 32
        ours = same.encoder.eval()(norm(DET_MEAN, DET_STD))
        for a, b in zip(theirs, ours[2:]):
            torch.testing.assert_close(a, b)
        stem = backbone.stem(norm(DET_MEAN, DET_STD))
        renormed_stem = renormed.encoder.eval().stem(norm(NORM_MEAN, NORM_STD))
        torch.testing.assert_close(renormed_stem[..., 1:, 1:], stem[..., 1:, 1:], atol=1e-4, rtol=1e-4)
    from training.segment.train import SegmentTrainOptions, build_model

    opts = SegmentTrainOptions(data=tmp_path, val=tmp_path, out=tmp_path, input_size=64, init_from=detector)
    with pytest.raises(ValueError, match="needs the mobilenetv2 encoder"):
        build_model(opts, 4)
    with pytest.raises(ValueError, match="only 0 of the encoder's"):           # width 16: MobileNetV2 at 1.0, not 0.5
        build_model(SegmentTrainOptions(**{**vars(opts), "encoder": "mobilenetv2", "depth": 5}), 4)
    model, _ = build_model(SegmentTrainOptions(**{**vars(opts), "encoder": "mobilenetv2", "depth": 5, "width": 8,
                                                  "repeats": 0.67}), 4)
    torch.testing.assert_close(model.encoder.stem[0].weight, renormed.encoder.stem[0].weight)


def test_training_loss_falls_and_resumes(run):
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert 0.0 <= history[-1]["val_miou"] <= 1.0
    assert (run / "curves.png").stat().st_size > 0 and (run / "best.pt").exists()


def test_export_metadata(served):
    _, models = served
    from training.onnx_export import file_metadata

    meta = file_metadata(models / "segmenter.onnx")
    assert meta["task"] == "segmentation" and meta["class_names"] == ["background", "pedestrian", "car", "motorcycle"]
    assert len(meta["colors"]) == 4 and meta["colors"][0] == [0, 0, 0] and meta["input_size"] == 64
    assert meta["normalization"]["mean"] and meta["output_stride"] == 1
    assert meta["training"]["loss"] == "cross-entropy + Dice" and meta["architecture"]["encoder"] == "plain"
    assert 1 <= meta["training"]["best_epoch"] == meta["training"]["epochs"] <= 4    # best.pt: its epoch's history


def _post(client, data: bytes, **params):
    return client.post("/segment", files={"image": ("x.png", data, "image/png")}, params=params)


def test_segment_json_png_rle_and_overlay(served, scenes, run):
    client, _ = served
    path = sorted((scenes / "val" / "images").iterdir())[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    r = _post(client, path.read_bytes(), rle="true", overlay="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": w, "height": h} and body["model"]["name"] == "segmenter"
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]["data"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert body["mask"]["encoding"] == "png" and mask.shape == (h, w)       # the original resolution
    classes = body["classes"]
    assert sum(c["pixels"] for c in classes) == h * w and sum(c["fraction"] for c in classes) == pytest.approx(1, abs=1e-4)
    for c in classes:
        assert c["pixels"] == int((mask == c["class_id"]).sum()) > 0
        rle = {"size": c["rle"]["size"], "counts": c["rle"]["counts"].encode()}
        np.testing.assert_array_equal(mask_api.decode(rle), mask == c["class_id"])
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(body["overlay"]["data"]), np.uint8), cv2.IMREAD_COLOR)
    assert body["overlay"]["encoding"] == "jpeg" and shown.shape == (h, w, 3)
    # the same mask as the PyTorch model through the same post-processing
    expected = predict_mask(load_segmenter(run / "best.pt")[0], image)
    assert (expected == mask).mean() > 0.999
    # format=png: the mask itself
    r = _post(client, path.read_bytes(), format="png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED), mask)
    r = _post(client, path.read_bytes(), format="png", overlay="true")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert _post(client, path.read_bytes()).json()["classes"][0]["rle"] is None   # only with rle=true


def test_segment_keeps_odd_sizes_and_grey_images(served):
    client, _ = served
    for shape in [(1, 1, 3), (7, 300, 3), (301, 5, 3)]:
        r = _post(client, png_bytes(np.full(shape, 90, np.uint8)))
        assert r.status_code == 200, r.text
        assert r.json()["image"] == {"width": shape[1], "height": shape[0]}
        assert sum(c["pixels"] for c in r.json()["classes"]) == shape[0] * shape[1]


def test_segment_errors_in_the_one_shape(served):
    client, _ = served
    good = png_bytes(np.zeros((20, 20, 3), np.uint8))
    for r, status, code in [(_post(client, b"not an image"), 400, None),
                            (_post(client, good, format="gif"), 422, "invalid_request"),
                            (_post(client, good, format="png", rle="true"), 422, "invalid_request"),
                            (client.post("/segment"), 422, "invalid_request")]:
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and r.json()["error"]["message"]
        if code:
            assert r.json()["error"]["code"] == code


def test_models_lists_the_segmenter(served):
    client, _ = served
    models = client.get("/models").json()["models"]
    assert [m["task"] for m in models] == ["segmentation"] and models[0]["metadata"]["colors"]


def test_no_segmenter_installed_is_503(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(SYNTHETIC / "detector.onnx", tmp_path / "models")
    with TestClient(create_app(Settings(models_dir=tmp_path / "models", data_dir=tmp_path / "data"))) as client:
        wait_ready(client)
        r = _post(client, png_bytes(np.zeros((8, 8, 3), np.uint8)))
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_available"


def test_eval_through_the_api(served, scenes, tmp_path):
    _, models = served
    out = tmp_path / "metrics.json"
    assert segment_cli(["eval", "--data", str(scenes / "val"), "--model", str(models / "segmenter.onnx"),
                        "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 4 and 0.0 <= metrics["miou"] <= 1.0 and set(metrics["iou"]) >= {"background"}


def test_tune_size_writes_the_best_validation_size_and_serves_it(run, scenes, tmp_path):
    path = tmp_path / "segmenter.onnx"
    assert segment_cli(["export", "--checkpoint", str(run / "best.pt"), "--out", str(path)]) == 0
    sizes = [64, 96]    # the tiny model's stride is 4 (depth 2); it trained at 64
    assert segment_cli(["tune-size", "--model", str(path), "--val", str(scenes / "val"),
                        "--sizes", ",".join(map(str, sizes))]) == 0
    meta = {k: json.loads(v) for k, v in
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
            .custom_metadata_map.items()}
    search = meta["input_size_search"]
    assert sorted(map(int, search["scores"])) == sizes and meta["train_input_size"] == 64
    assert search["val_images"] == 4      # the default limit (100) is more than the set holds
    best = max(sizes, key=lambda s: (search["scores"][str(s)]["miou"], -s))
    assert meta["input_size"] == search["chosen"] == best
    for size in sizes:   # what was scored at each size is what the server answers with the file at that size
        one = tmp_path / str(size)
        with_input_size(path, one / "segmenter.onnx", size, output_axes=OUTPUT_AXES)
        assert segment_cli(["eval", "--data", str(scenes / "val"), "--model", str(one / "segmenter.onnx"),
                            "--out", str(one / "m.json")]) == 0
        assert json.loads((one / "m.json").read_text())["miou"] == pytest.approx(search["scores"][str(size)]["miou"],
                                                                                abs=1e-4)
    for bad in ("70", "64,x"):     # off the stride; not a number
        assert segment_cli(["tune-size", "--model", str(path), "--val", str(scenes / "val"), "--sizes", bad]) == 2


def test_voc_style_folder_with_palette_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9], mask[6:, :4], mask[0, 0] = 1, 2, IGNORE        # VOC marks borders with 255
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    img.save(tmp_path / "masks" / "a.png")
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((10, 12, 3), np.uint8))
    data = load_segmentation(tmp_path)
    assert data.class_names == ["background", "cat", "dog"]
    _, got = data.read(0)
    np.testing.assert_array_equal(got, mask)                        # palette indices, not colours
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="grey or palette"):
        read_mask(tmp_path / "rgb.png")


def test_coco_polygons_rle_and_crowd(tmp_path):
    h, w = 20, 30
    square = np.zeros((h, w), np.uint8)
    square[10:15, 20:25] = 1
    rle = mask_api.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode()
    anns = ({"segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]], "_class": 1},        # polygon: a rectangle
            {"segmentation": rle, "_class": 2},                               # compressed RLE
            {"segmentation": [[0, 16, 4, 16, 4, 20, 0, 20]], "_class": 1, "iscrowd": 1})
    mask = paint_coco(anns, h, w)
    assert mask[5, 5] == 1 and mask[12, 22] == 2 and mask[18, 2] == IGNORE and mask[0, 29] == 0
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
           "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((h, w, 3), np.uint8))
    data = load_segmentation(tmp_path / "ann.json")
    assert data.class_names == ["background", "dog", "cat"]         # categories ranked by id
    _, got = data.read(0)
    assert got[5, 5] == 2 and got[0, 0] == 0


def test_training_windows_cover_the_content_at_the_serving_scale(scenes):
    """--crop: windows of the letterboxed input, inside the image's content where it is large enough,
    covering all of it where it is not; the mask cut with the image."""
    from training.segment.data import SegmentationDataset

    data = load_segmentation(scenes / "train")
    whole = SegmentationDataset(data, 128, augment=False)
    cropped = SegmentationDataset(data, 128, augment=False, crop=64)
    for i in range(6):
        image, mask = cropped[i]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        full_image, full_mask = whole[i]
        # the window is somewhere in the full input: find it by its mask and pixels
        hits = [(y, x) for y in range(65) for x in range(65)
                if torch.equal(full_mask[y:y + 64, x:x + 64], mask) and torch.equal(full_image[:, y:y + 64, x:x + 64], image)]
        assert hits
        y, x = hits[0]
        content = (full_mask != IGNORE).nonzero()
        top, left = content.min(0).values.tolist()
        bottom, right = (content.max(0).values + 1).tolist()
        for lo, hi, start in ((top, bottom, y), (left, right, x)):
            if hi - lo >= 64:
                assert lo <= start and start + 64 <= hi          # inside the content
            else:
                assert start <= lo and hi <= start + 64          # covering all of it
    with pytest.raises(ValueError, match="larger than the input"):
        SegmentationDataset(data, 64, augment=False, crop=128)


def test_object_windows_draw_each_class_alike_and_hold_it():
    """--object-p: a window centred (give or take a quarter) on a pixel of a class drawn uniformly,
    so that a few-pixel pedestrian is picked as often as a large car; inside the input."""
    from training.segment.data import _object_window, object_pixels

    target = np.zeros((128, 128), np.uint8)
    target[:, :8] = IGNORE
    target[60:120, 20:100] = 3                       # a large 'motorcycle'
    target[5:8, 120:123] = 1                         # a 9-pixel 'pedestrian' in the corner
    rng = np.random.default_rng(0)
    held = {1: 0, 3: 0}
    for _ in range(400):
        sx, sy = _object_window(rng, object_pixels(target), 32, 128)
        assert 0 <= sx <= 96 and 0 <= sy <= 96
        window = target[sy:sy + 32, sx:sx + 32]
        for c in held:
            held[c] += bool((window == c).any())
    assert held[1] > 150                             # about half the draws, though it is 0.2% of the pixels
    assert held[3] > 200
    assert _object_window(rng, object_pixels(np.zeros((64, 64), np.uint8)), 32, 64) is None   # none: anywhere


def test_object_p_is_a_probability(scenes):
    from training.segment.data import SegmentationDataset

    with pytest.raises(ValueError, match="probability"):
        SegmentationDataset(load_segmentation(scenes / "train"), 64, augment=False, crop=32, object_p=1.5)


def test_boundary_band_and_weighted_cross_entropy():
    """The band is every pixel whose 5x5 square holds two classes (OpenCV's dilate != erode on the
    class ids, letterbox padding read as background); with ``boundary_weight`` the cross-entropy is
    the weighted mean that counts band pixels 1 + W times, and without it plain cross-entropy."""
    import torch.nn.functional as F

    from training.segment.loss import boundary_band, segmentation_loss

    rng = np.random.default_rng(0)
    target = np.zeros((2, 40, 48), np.int64)
    for b in range(2):
        for _ in range(4):
            y, x, h, w = rng.integers(0, 36), rng.integers(0, 44), rng.integers(1, 12), rng.integers(1, 12)
            target[b, y:y + h, x:x + w] = rng.integers(1, 4)
    target[1, :, 40:] = IGNORE
    ids = np.where(target == IGNORE, 0, target).astype(np.uint8)
    kernel = np.ones((5, 5), np.uint8)
    expected = np.stack([cv2.dilate(m, kernel, borderType=cv2.BORDER_REPLICATE)
                         != cv2.erode(m, kernel, borderType=cv2.BORDER_REPLICATE) for m in ids])
    band = boundary_band(torch.from_numpy(target))
    np.testing.assert_array_equal(band.numpy(), expected)
    assert 0 < expected.mean() < 0.5

    logits, t = torch.randn(2, 4, 40, 48), torch.from_numpy(target)
    plain, parts = segmentation_loss(logits, t, dice_weight=0.0)
    assert parts["ce"] == pytest.approx(float(F.cross_entropy(logits, t, ignore_index=IGNORE)), rel=1e-5)
    per_pixel = F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="none")
    weight = (1 + 4.0 * band.float()) * (t != IGNORE)
    _, weighted = segmentation_loss(logits, t, dice_weight=0.0, boundary_weight=4.0)
    assert weighted["ce"] == pytest.approx(float((per_pixel * weight).sum() / weight.sum()), rel=1e-5)
    assert weighted["ce"] != pytest.approx(parts["ce"], rel=1e-3)
