"""Captions are text on one line and their ids are unique, wherever captions enter: params.yaml,
captions/fmnist.json, COCO annotations; figures draw any caption."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import load_params
from pipeline.data.captions import FMNIST_CAPTIONS, caption_rows, fmnist_caption_set
from pipeline.data.coco_manifest import read_manifest, write_manifest
from pipeline.data.embeddings import caption_lookup, write_embedding_shard
from pipeline.errors import PipelineError
from pipeline.figures import image_grid

from .coco_fixture import make_coco_fixture
from .conftest import REPO
from .test_coco_hostile import edit_annotations, one_error_line, stage_params, t2i

# ------------------------------------------------------------------------- captions/fmnist.json


def fmnist_json(tmp_path: Path, edit) -> Path:
    data = json.loads((REPO / FMNIST_CAPTIONS).read_text())
    edit(data["classes"])
    path = tmp_path / "fmnist.json"
    path.write_text(json.dumps(data))
    return path


def test_a_heldout_phrasing_reusing_a_training_id_names_both_places(tmp_path):
    path = fmnist_json(tmp_path, lambda c: c[3]["heldout"][1].update(caption_id=2))
    with pytest.raises(PipelineError) as info:
        fmnist_caption_set(path)
    assert str(info.value) == (
        f"{path}: caption_id 2 is used twice, at classes[0].train[2] and at "
        "classes[3].heldout[1]; each needs its own caption_id"
    )


def test_a_class_label_given_twice_names_both_places(tmp_path):
    path = fmnist_json(tmp_path, lambda c: c[7].update(label=2))
    with pytest.raises(PipelineError, match=r"label 2 is used twice, at classes\[2\] and at "):
        fmnist_caption_set(path)


def test_fmnist_captions_are_put_on_one_line_and_a_surrogate_is_refused(tmp_path):
    def edit(classes):
        classes[0]["train"][0]["caption"] = "a black tee\n"
        classes[0]["val"][0]["caption"] = "a\r\n  folded\tcaption\x00 "

    rows = fmnist_caption_set(fmnist_json(tmp_path, edit))
    assert rows["train"][0]["caption"] == "a black tee"
    assert rows["val"][0]["caption"] == "a folded caption"
    path = fmnist_json(tmp_path, lambda c: c[1]["train"][0].update(caption="a \ud800 coat"))
    with pytest.raises(PipelineError) as info:
        fmnist_caption_set(path)
    assert str(info.value) == (
        f"{path}: classes[1].train[0]: caption 'a \\ud800 coat' holds a lone surrogate "
        "(U+D800), not valid Unicode text"
    )


def test_the_repository_phrasings_pass_unchanged():
    raw = json.loads((REPO / FMNIST_CAPTIONS).read_text())
    rows = fmnist_caption_set(REPO / FMNIST_CAPTIONS)
    given = [i["caption"] for c in raw["classes"] for s in ("train",) for i in c[s]]
    assert [r["caption"] for r in rows["train"]] == given


# ------------------------------------------------------------------------------ params.yaml


def test_a_folded_params_caption_is_one_line_and_a_surrogate_is_one_error(tmp_path):
    text = (REPO / "params.yaml").read_text()
    folded = text.replace(
        "        - an orange\n", "        - >\n          an orange\n          on a table\n"
    )
    assert folded.count("- >\n") == 2  # in both COCO entries
    (tmp_path / "params.yaml").write_text(folded)
    params = load_params(tmp_path / "params.yaml")
    for model in ("coco_clip", "coco_t5"):
        captions = params.model(model).evaluate.unseen_captions
        assert captions[0] == "an orange on a table"  # YAML gave "an orange on a table\n"
    (tmp_path / "params.yaml").write_text(text.replace("- an orange\n", '- "an \\ud800"\n'))
    with pytest.raises(PipelineError) as info:
        load_params(tmp_path / "params.yaml")
    first, *more = str(info.value).splitlines()  # one line per key: each entry has its own
    assert first == f"{tmp_path / 'params.yaml'}: invalid params: "
    for model, line in zip(["coco_clip", "coco_t5"], more, strict=True):
        assert line.startswith(
            f"  models.{model}.evaluate.unseen_captions: Value error, item 0: caption "
            "'an \\ud800' holds a lone surrogate (U+D800), not valid Unicode text"
        )


# ------------------------------------------------------------------------------ figures


def test_figures_draw_captions_with_line_breaks_controls_and_surrogates():
    labels = ["a black tee\n", "a\r\nb", "x\x85y", "\ud800 sur", "nul\x00"]
    rows = [np.full((2, 8, 8), 0.5) for _ in labels]
    image = np.asarray(image_grid(rows, labels, scale=2, label_width=90))
    for r in range(len(labels)):  # each row's label column holds dark text pixels
        band = image[2 + r * 18 : 2 + r * 18 + 16, :90]
        assert (band.min(axis=2) < 100).any(), labels[r]


# ------------------------------------------------------------------------------ COCO


def coco_stage(tmp_path, monkeypatch, split, edit):
    fixture = make_coco_fixture(tmp_path / "coco")
    edit_annotations(fixture.root, split, edit)
    stage_params(tmp_path, source="local", local_root=str(fixture.root))
    return fixture, t2i(tmp_path, monkeypatch, "download", "coco")


def test_coco_duplicate_image_and_caption_ids_name_both_entries(tmp_path, monkeypatch):
    fixture, result = coco_stage(
        tmp_path, monkeypatch, "train2014", lambda d: d["images"][5].update(id=2)
    )
    path = fixture.root / "annotations" / "captions_train2014.json"
    assert one_error_line(result) == (
        f"error: {path}: images[1] and images[5] have the same id 2: image ids must be "
        "unique within a split"
    )
    fixture, result = coco_stage(
        tmp_path / "b", monkeypatch, "train2014", lambda d: d["annotations"][7].update(id=101)
    )
    path = fixture.root / "annotations" / "captions_train2014.json"
    assert one_error_line(result) == (
        f"error: {path}: annotations[1] and annotations[7] have the same caption id 101: "
        "caption ids must be unique (embeddings are looked up by them)"
    )


def test_a_val_caption_reusing_a_train_caption_id_names_both_files(tmp_path, monkeypatch):
    fixture, result = coco_stage(
        tmp_path, monkeypatch, "val2014", lambda d: d["annotations"][2].update(id=104)
    )
    ann = fixture.root / "annotations"
    assert one_error_line(result) == (
        f"error: caption id 104 is in both {ann / 'captions_train2014.json'} and "
        f"{ann / 'captions_val2014.json'} (annotations[2] there; 1 shared ids): caption ids "
        "must be unique across the splits"
    )
    assert not (tmp_path / "data/coco/manifest").exists()


def test_coco_captions_are_put_on_one_line_and_a_surrogate_is_one_error(tmp_path, monkeypatch):
    def newline(data):
        data["annotations"][0]["caption"] = "A black\ncar\n parked. \n"

    _, result = coco_stage(tmp_path, monkeypatch, "train2014", newline)
    assert result.exit_code == 0, result.output
    rows = read_manifest(tmp_path / "data/coco/manifest/train.parquet")
    assert rows[0]["captions"][0] == "A black car parked."

    def surrogate(data):
        data["annotations"][3]["caption"] = "a \ud800 cat"

    fixture, result = coco_stage(tmp_path / "b", monkeypatch, "train2014", surrogate)
    path = fixture.root / "annotations" / "captions_train2014.json"
    assert one_error_line(result) == (
        f"error: {path}: annotations[3] (id 103): 'a \\ud800 cat' holds a lone surrogate "
        "(U+D800), not valid Unicode text"
    )


def manifest_row(image_id: int, caption_ids: list[int], captions: list[str]) -> dict:
    return {
        **{"image_id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg"},
        **{"split": "train2014", "url": "", "path": "", "status": "ok", "error": ""},
        **{"sha256": "0" * 64, "bytes": 1, "width": 1, "height": 1},
        **{"caption_ids": caption_ids, "captions": captions},
    }


def test_caption_rows_keep_a_shared_caption_once_and_refuse_a_conflicting_id(tmp_path):
    write_manifest([manifest_row(1, [10, 11], ["a", "b"])], tmp_path / "train.parquet")
    write_manifest([manifest_row(1, [10, 11], ["a", "b"])], tmp_path / "val.parquet")
    assert [r["caption_id"] for r in caption_rows("coco", tmp_path)] == [10, 11]
    write_manifest([manifest_row(2, [11], ["c"])], tmp_path / "val.parquet")
    with pytest.raises(PipelineError) as info:
        caption_rows("coco", tmp_path)
    assert str(info.value) == (
        f"caption id 11 is image 1's 'b' in {tmp_path / 'train.parquet'} but image 2's 'c' "
        f"in {tmp_path / 'val.parquet'}: caption ids must be unique; rerun coco_download"
    )


def test_an_embedding_lookup_refuses_a_caption_id_on_two_rows(tmp_path):
    vectors = np.eye(2, 4, dtype=np.float32)
    write_embedding_shard(
        tmp_path / "part-00000.parquet", [0, 3], [5, 5], ["tee", "bag"], vectors, "float32", {}
    )
    with pytest.raises(PipelineError) as info:
        caption_lookup(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: caption id 5 is on row 0 (image 0, 'tee') and row 1 (image 3, 'bag'); "
        "caption ids must be unique: rerun the embed stage"
    )
    write_embedding_shard(
        tmp_path / "part-00000.parquet", [0, 3], [5, 6], ["tee", "bag"], vectors, "float32", {}
    )
    row_of, found = caption_lookup(tmp_path)
    assert row_of == {5: 0, 6: 1} and found.tolist() == vectors.tolist()


def test_params_yaml_is_loaded_from_the_repository_unchanged():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml")
    for model in ("coco_clip", "coco_t5"):
        loaded = params.model(model).evaluate
        assert loaded.captions == raw["models"][model]["evaluate"]["captions"]
        assert loaded.unseen_captions == raw["models"][model]["evaluate"]["unseen_captions"]
        assert loaded.epoch_captions == raw["models"][model]["evaluate"]["epoch_captions"]
