"""Caption tables to embed: (image_id, caption_id, caption) rows of a dataset.

fmnist: the versioned phrasings in captions/fmnist.json; image_id is the class label.
coco:   every caption of every image the coco_download manifests mark ok.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.caption_text import clean_caption
from pipeline.data.coco_manifest import read_manifest
from pipeline.errors import PipelineError
from pipeline.jsonfile import read_json

CLASSES = 10  # Fashion-MNIST's labels 0-9

FMNIST_CAPTIONS = Path("captions/fmnist.json")


def fmnist_caption_set(path: Path = FMNIST_CAPTIONS) -> dict[str, list[dict]]:
    """{"train", "val", "heldout"} -> rows of {image_id (label), caption_id, caption}.

    Only ``train`` phrasings are trained on; ``val`` ones choose between settings; ``heldout``
    ones are never used to choose anything, only reported. Caption ids are unique across the
    three (embeddings are looked up by caption id alone: a held-out phrasing reusing a training
    id would leak into training), labels across the classes; each caption is one line of text
    (pipeline/caption_text.py). A duplicate is an error naming both places."""
    data = read_json(path, "caption set JSON")
    try:
        out = {"train": [], "val": [], "heldout": []}
        where_id: dict[int, str] = {}
        where_label: dict[int, str] = {}
        for c, entry in enumerate(data["classes"]):
            label = entry["label"]
            if type(label) is not int or not 0 <= label < CLASSES:
                raise PipelineError(
                    f"{path}: classes[{c}].label is {json.dumps(label)}; "
                    f"expected a class index, an integer 0-{CLASSES - 1}"
                )
            _unique(path, "label", label, f"classes[{c}]", where_label)
            for split in out:
                for k, item in enumerate(entry[split]):
                    where = f"classes[{c}].{split}[{k}]"
                    caption_id = int(item["caption_id"])
                    _unique(path, "caption_id", caption_id, where, where_id)
                    caption = clean_caption(str(item["caption"]), f"{path}: {where}")
                    row = {"image_id": label, "caption_id": caption_id, "caption": caption}
                    out[split].append(row)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PipelineError(
            f"{path}: expected classes[].train/val/heldout[].caption ({exc})"
        ) from None
    return out


def _unique(path: Path, key: str, value: int, where: str, seen: dict[int, str]) -> None:
    if value in seen:
        raise PipelineError(
            f"{path}: {key} {value} is used twice, at {seen[value]} and at {where}; "
            f"each needs its own {key}"
        )
    seen[value] = where


def caption_rows(dataset: str, manifest_dir: Path) -> list[dict]:
    if dataset == "fmnist":
        caption_set = fmnist_caption_set()
        return caption_set["train"] + caption_set["val"] + caption_set["heldout"]
    if dataset == "coco":
        rows, where = [], {}
        for manifest in sorted(manifest_dir.glob("*.parquet")):
            for image in read_manifest(manifest):
                if image["status"] != "ok":
                    continue
                for caption_id, caption in zip(
                    image["caption_ids"], image["captions"], strict=True
                ):
                    row = {"image_id": image["image_id"], "caption_id": caption_id}
                    row["caption"] = caption
                    if caption_id in where:  # two subsets of one split may share images
                        _same_caption(
                            rows[where[caption_id][1]], row, where[caption_id][0], manifest
                        )
                        continue
                    where[caption_id] = (manifest, len(rows))
                    rows.append(row)
        if not rows:
            raise PipelineError(f"{manifest_dir}: no captions; run coco_download first")
        return rows
    raise PipelineError(f"unknown caption dataset {dataset!r}; expected fmnist or coco")


def _same_caption(first: dict, again: dict, first_file: Path, again_file: Path) -> None:
    """A caption id met twice is the same image's same caption, or an error naming both."""
    if first != again:
        raise PipelineError(
            f"caption id {again['caption_id']} is image {first['image_id']}'s "
            f"{ascii(first['caption'][:60])} in {first_file} but image {again['image_id']}'s "
            f"{ascii(again['caption'][:60])} in {again_file}: caption ids must be unique; "
            "rerun coco_download"
        )
