"""A tiny COCO 2014 captions dataset in the official layout, built by the tests (written by
pipeline/testing/coco.py, the one writer of a fake COCO root).

    <root>/annotations/captions_train2014.json, captions_val2014.json   (official schema)
    <root>/train2014/COCO_train2014_000000000001.jpg ...
    <root>/val2014/...

train2014 holds the awkward cases: a grayscale and a CMYK JPEG, a truncated JPEG, a file
that is not an image, one image that the server answers 503 once and one it answers 404.
``serve`` puts it all on a loopback server, with the annotations zip of the official release.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.http import host_key
from pipeline.testing.coco import FakeImage, write_coco_root

TRAIN_CASES = ["rgb", "rgb_503", "gray", "cmyk", "truncated", "not_image", "missing_404", "rgb"]
VAL_CASES = ["rgb", "rgb", "gray"]
BAD_TRAIN_IDS = {5, 6, 7}  # truncated, not an image, 404
ZIP_PATH = "/annotations/annotations_trainval2014.zip"


def _jpeg(case: str, seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if case == "gray":
        image = image.convert("L")
    elif case == "cmyk":
        image = image.convert("CMYK")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    data = out.getvalue()
    if case == "truncated":
        return data[: len(data) // 2]
    if case == "not_image":
        return b"<html>this is not a JPEG</html>"
    return data


@dataclass
class CocoFixture:
    root: Path
    files: dict[str, bytes]  # URL path -> body, e.g. "/train2014/COCO_train2014_...jpg"

    def caption_json(self, split: str) -> dict:
        return json.loads((self.root / "annotations" / f"captions_{split}.json").read_text())


def make_coco_fixture(root: Path, base_url: str = "http://127.0.0.1:9") -> CocoFixture:
    splits = {
        split: [
            FakeImage(
                image_id=first_id + offset,
                jpeg=None if case == "missing_404" else _jpeg(case, first_id + offset),
                width=64,
                height=48,
                captions=[  # ~five captions each, as in COCO
                    f" A {case} photo number {first_id + offset}, take {k}. "
                    for k in range(5 if case != "gray" else 6)
                ],
            )
            for offset, case in enumerate(cases)
        ]
        for split, cases, first_id in (("train2014", TRAIN_CASES, 1), ("val2014", VAL_CASES, 101))
    }
    files = write_coco_root(root, splits, base_url, "t2i-cvae test fixture", first_caption_id=100)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train2014", "val2014"):
            name = f"annotations/captions_{split}.json"
            zf.write(root / name, name)
    files[ZIP_PATH] = archive.getvalue()
    return CocoFixture(root=root, files=files)


def loopback_download(url: str) -> dict:
    """download.coco params that fetch the fixture from the loopback server at ``url``: its
    annotations zip (not the official one, so no sha256 pin) and images from that host:port."""
    return {
        "annotations_url": url + ZIP_PATH,
        "annotations_sha256": None,
        "image_hosts": [host_key(url)],
    }


def serve(server, fixture: CocoFixture) -> None:
    """Route the fixture's files on a tests.conftest.LoopbackServer."""
    for path, body in fixture.files.items():
        server.routes[path] = [(200, body)]
    rgb_503 = f"/train2014/COCO_train2014_{2:012d}.jpg"
    server.routes[rgb_503] = [(503, b"busy"), (200, fixture.files[rgb_503])]
