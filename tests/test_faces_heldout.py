"""The held-out scoring's bookkeeping: which photos verification pairs come from, and genuine pairs
where /verify compared somebody else's face are counted apart."""

from training.faces.heldout import CLEARLY_LARGEST, _photos_by_identity, _verification


def _doc(faces_per_image):
    """``faces_per_image``: per photo of person "a", a list of (area, identity) faces."""
    images, anns = [], []
    for i, faces in enumerate(faces_per_image, start=1):
        images.append({"id": i, "file_name": f"a/{i}.png", "identity": "a"})
        for area, who in faces:
            anns.append({"image_id": i, "bbox": [0, 0, area, 1], "identity": who})
    return {"images": images, "annotations": anns}


def test_pairs_come_from_photos_where_the_person_is_clearly_the_largest_face():
    photos = _photos_by_identity(_doc([
        [(100, "a")],                                  # alone
        [(100, "a"), (100 / CLEARLY_LARGEST, None)],   # just clearly larger than a stranger
        [(100, "a"), (90, "b")],                       # a near tie with somebody else
        [(50, "a"), (100, None)],                      # a stranger in front
        [(100, None)],                                 # the person's face not annotated
    ]))["a"]
    assert [p["largest"] for p in photos] == [True, True, False, False, False]
    assert [p["faces"] for p in photos] == [1, 2, 2, 2, 1]


class _FakeClient:
    """/verify answering "verified", with the face box ``found[file name]`` for each photo."""

    def __init__(self, found):
        self.found = found

    def post(self, path, files, params):
        faces = [{"box": dict(zip(("x1", "y1", "x2", "y2"), self.found[files[k][0]]))} for k in ("image1", "image2")]

        class Answer:
            status_code = 200

            @staticmethod
            def json():
                return {"verified": True, "threshold": 0.4, "faces": faces}
        return Answer()


def test_genuine_pairs_compared_on_somebody_elses_face_are_counted(tmp_path):
    for name in ("1.png", "2.png"):
        (tmp_path / name).write_bytes(b"x")
    photos = {n: [{"id": i, "file_name": f"{i}.png", "largest": True} for i in (1, 2)] for n in ("a", "b")}
    boxes = {1: [0, 0, 10, 10], 2: [50, 50, 10, 10]}     # the person's face in each photo (xywh)
    right = _verification(_FakeClient({"1.png": (0, 0, 10, 10), "2.png": (50, 50, 60, 60)}), tmp_path, photos,
                          boxes, 4, 0)
    assert right["tar"] == 1.0 and right["genuine_pairs_wrong_face"] == 0
    wrong = _verification(_FakeClient({"1.png": (0, 0, 10, 10), "2.png": (0, 0, 10, 10)}), tmp_path, photos,
                          boxes, 4, 0)
    assert wrong["genuine_pairs_wrong_face"] == 4 and wrong["genuine_pairs"] == 4
