"""The one writer of a fake COCO 2014 root, in the official layout and schema.

    <root>/annotations/captions_<split>.json    (info, licenses, images, annotations)
    <root>/<split>/COCO_<split>_<12-digit id>.jpg

Its callers choose only what goes in: the tests' awkward cases (tests/coco_fixture.py),
scikit-image's photographs (pipeline/testing/photos.py) and the scale rehearsal's N images
(benchmarks/scale_rehearsal.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATE_CAPTURED = "2013-11-14 16:28:13"


@dataclass(frozen=True)
class FakeImage:
    image_id: int
    jpeg: bytes | None  # None: listed in the annotations, but no file (a 404 on a server)
    width: int
    height: int
    captions: list[str]


def image_name(split: str, image_id: int) -> str:
    # Written out here, not taken from pipeline.data.coco: the fake root checks the reader.
    return f"COCO_{split}_{image_id:012d}.jpg"


def write_coco_root(
    root: Path,
    splits: dict[str, Iterable[FakeImage]],
    base_url: str = "",
    description: str = "t2i-cvae test data",
    first_caption_id: int = 1,
) -> dict[str, bytes]:
    """Write each split's images and captions file under ``root``; caption ids run on from
    ``first_caption_id`` across the splits, in order. Each image's ``coco_url`` is
    ``base_url/<split>/<file>`` (empty without a base_url). Returns the URL path of every image
    file written (``/train2014/COCO_train2014_...jpg``) -> its bytes, for a server to serve."""
    files: dict[str, bytes] = {}
    caption_id = first_caption_id
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for item in items:
            name = image_name(split, item.image_id)
            images.append(
                {
                    "license": 1,
                    "file_name": name,
                    "coco_url": f"{base_url}/{split}/{name}" if base_url else "",
                    "height": item.height,
                    "width": item.width,
                    "date_captured": DATE_CAPTURED,
                    "flickr_url": "",
                    "id": item.image_id,
                }
            )
            for caption in item.captions:
                annotations.append(
                    {"image_id": item.image_id, "id": caption_id, "caption": caption}
                )
                caption_id += 1
            if item.jpeg is not None:
                (root / split / name).write_bytes(item.jpeg)
                files[f"/{split}/{name}"] = item.jpeg
        payload = {
            "info": {"description": description, "year": 2014, "version": "1.0"},
            "licenses": [{"id": 1, "name": "test", "url": ""}],
            "images": images,
            "annotations": annotations,
        }
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(payload))
    return files
