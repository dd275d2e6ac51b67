"""Caption tables to embed: (image_id, caption_id, caption) rows of a dataset.

fmnist: the versioned phrasings in captions/fmnist.json; image_id is the class label.
coco:   every caption of every image the coco_download manifests mark ok.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.coco_manifest import read_manifest
from pipeline.errors import PipelineError
from pipeline.jsonfile import read_json

CLASSES = 10  # Fashion-MNIST's labels 0-9

FMNIST_CAPTIONS = Path("captions/fmnist.json")


def fmnist_caption_set(path: Path = FMNIST_CAPTIONS) -> dict[str, list[dict]]:
    """{"train", "val", "heldout"} -> rows of {image_id (label), caption_id, caption}.

    Only ``train`` phrasings are trained on; ``val`` ones choose between settings; ``heldout``
    ones are never used to choose anything, only reported."""
    data = read_json(path, "caption set JSON")
    try:
        out = {"train": [], "val": [], "heldout": []}
        for i, entry in enumerate(data["classes"]):
            label = entry["label"]
            if type(label) is not int or not 0 <= label < CLASSES:
                raise PipelineError(
                    f"{path}: classes[{i}].label is {json.dumps(label)}; "
                    f"expected a class index, an integer 0-{CLASSES - 1}"
                )
            for split in out:
                for item in entry[split]:
                    out[split].append(
                        {
                            "image_id": label,
                            "caption_id": int(item["caption_id"]),
                            "caption": str(item["caption"]),
                        }
                    )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{path}: expected classes[].train/val/heldout[].caption ({exc})"
        ) from None
    return out


def caption_rows(dataset: str, manifest_dir: Path) -> list[dict]:
    if dataset == "fmnist":
        caption_set = fmnist_caption_set()
        return caption_set["train"] + caption_set["val"] + caption_set["heldout"]
    if dataset == "coco":
        rows = []
        for manifest in sorted(manifest_dir.glob("*.parquet")):
            for image in read_manifest(manifest):
                if image["status"] != "ok":
                    continue
                for caption_id, caption in zip(
                    image["caption_ids"], image["captions"], strict=True
                ):
                    rows.append(
                        {
                            "image_id": image["image_id"],
                            "caption_id": caption_id,
                            "caption": caption,
                        }
                    )
        if not rows:
            raise PipelineError(f"{manifest_dir}: no captions; run coco_download first")
        return rows
    raise PipelineError(f"unknown caption dataset {dataset!r}; expected fmnist or coco")
