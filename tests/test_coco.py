"""COCO annotations, subset selection, image fetching, safe zips, image prep and shards."""

import io
import itertools
import json
import multiprocessing
import signal
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.data.archive import extract_members
from pipeline.data.coco import (
    CocoImage,
    failure_summary,
    fetch_images,
    image_records,
    local_images,
    read_captions,
    select_coco_subset,
)
from pipeline.data.images import prepare_image, prepare_jpegs
from pipeline.data.shards import read_samples, write_shards
from pipeline.errors import PipelineError
from pipeline.testing.photos import make_photo_coco, photo_variants

from .coco_fixture import BAD_TRAIN_IDS, loopback_download, make_coco_fixture, serve


@pytest.fixture
def served_coco(tmp_path, http_server):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    serve(http_server, fixture)
    return fixture, http_server


def train_records(fixture):
    coco = read_captions(fixture.root / "annotations" / "captions_train2014.json")
    return image_records(coco, select_coco_subset(coco, None, 0), "train2014")


def test_captions_are_read_with_every_caption_of_each_image(tmp_path):
    fixture = make_coco_fixture(tmp_path)
    records = train_records(fixture)
    assert [r.image_id for r in records] == list(range(1, 9))
    assert len(records[0].captions) == 5 and len(records[2].captions) == 6
    assert records[0].captions[0] == "A rgb photo number 1, take 0."  # stripped
    assert records[0].caption_ids == sorted(records[0].caption_ids)


def test_malformed_annotations_name_the_file(tmp_path):
    bad = tmp_path / "captions_train2014.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(PipelineError, match=r"captions_train2014.json: .*'annotations' list"):
        read_captions(bad)


def test_subset_selection_is_deterministic_and_seeded(tmp_path):
    coco = read_captions(make_coco_fixture(tmp_path).root / "annotations/captions_train2014.json")
    a, b = select_coco_subset(coco, 5, 0), select_coco_subset(coco, 5, 0)
    assert a == b and len(set(a)) == 5
    assert any(select_coco_subset(coco, 5, seed) != a for seed in (1, 2, 3))
    assert select_coco_subset(coco, None, 0) == list(range(1, 9))
    with pytest.raises(PipelineError, match="num_images 9 exceeds the 8 images"):
        select_coco_subset(coco, 9, 0)


def test_fetch_records_every_image_and_resumes(tmp_path, served_coco):
    fixture, server = served_coco
    store = tmp_path / "store"
    hosts = loopback_download(server.url)["image_hosts"]
    kw = {"workers": 4, "retries": 2, "backoff_s": 0.01, "timeout_s": 5, "image_hosts": hosts}
    rows = fetch_images(train_records(fixture), "train2014", store, **kw)
    by_id = {r["image_id"]: r for r in rows}
    assert [r["image_id"] for r in rows] == list(range(1, 9))  # subset order kept
    assert {i for i, r in by_id.items() if r["status"] == "failed"} == BAD_TRAIN_IDS
    assert "does not decode" in by_id[5]["error"] and "does not decode" in by_id[6]["error"]
    assert "HTTP 404" in by_id[7]["error"]
    assert server.hits[f"/train2014/COCO_train2014_{2:012d}.jpg"] == 2  # 503, then 200
    assert by_id[3]["width"] == 64 and len(by_id[3]["sha256"]) == 64
    assert not (store / by_id[5]["file_name"]).exists()  # bad files are not kept
    summary = failure_summary(rows)
    assert summary["failed"] == 3 and summary["first_failures"][0]["image_id"] == 5

    hits = dict(server.hits)
    again = fetch_images(train_records(fixture), "train2014", store, **kw)
    assert again == rows
    ok_paths = [p for p in hits if p.endswith(("01.jpg", "02.jpg", "03.jpg", "04.jpg", "08.jpg"))]
    assert all(server.hits[p] == hits[p] for p in ok_paths)  # present and valid: not refetched


def test_ctrl_c_during_fetch_stops_at_the_downloads_in_flight(tmp_path, http_server):
    """KeyboardInterrupt in the main thread (what Ctrl-C raises) cancels the queued downloads.

    A real signal to the main thread interrupts its wait at once, as Ctrl-C does (SIGUSR1:
    a suite run in the background ignores SIGINT)."""
    n, workers, started = 40, 2, threading.Event()
    out = io.BytesIO()
    photo_variants(1)[0][0].save(out, format="JPEG")
    body = out.getvalue()

    def slow(handler):
        started.set()
        time.sleep(0.2)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    records = []
    for i in range(1, n + 1):
        name = f"COCO_train2014_{i:012d}.jpg"
        http_server.routes[f"/{name}"] = [slow]
        records.append(CocoImage(i, name, f"{http_server.url}/{name}"))
    hosts = loopback_download(http_server.url)["image_hosts"]
    started_hits = {}

    def interrupt():
        started.wait(30)
        started_hits["n"] = sum(http_server.hits.values())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, ctrl_c)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            store = tmp_path / "store"
            fetch_images(records, "train2014", store, workers=workers, image_hosts=hosts)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # only the downloads already in flight (one per thread) finish; the rest never start
    assert 1 <= sum(http_server.hits.values()) <= started_hits["n"] + workers < n


def test_local_root_is_read_in_place(tmp_path):
    fixture = make_coco_fixture(tmp_path)
    rows = local_images(train_records(fixture), "train2014", fixture.root)
    assert rows[0]["path"] == str(fixture.root / "train2014" / rows[0]["file_name"])
    assert {r["image_id"] for r in rows if r["status"] == "failed"} == BAD_TRAIN_IDS
    assert "missing" in rows[6]["error"]


def make_zip(entries: dict[str, bytes]):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("evil", ["../../evil.json", "/etc/evil.json", "a/../../evil.json"])
def test_zip_with_path_traversal_entry_is_refused(tmp_path, evil):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"annotations/captions_train2014.json": b"{}", evil: b"x"}))
    with pytest.raises(PipelineError, match="unsafe entry"):
        extract_members(archive, ["captions_train2014.json"], tmp_path / "out", 10_000)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.json").exists()


def test_zip_extraction_is_bounded(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"annotations/captions_val2014.json": b"0" * 5000}))
    with pytest.raises(PipelineError, match="over the bound"):
        extract_members(archive, ["captions_val2014.json"], tmp_path / "out", 4000)
    out = extract_members(archive, ["captions_val2014.json"], tmp_path / "out", 5000)
    assert out[0].read_bytes() == b"0" * 5000


def test_not_a_zip_is_named(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>")
    with pytest.raises(PipelineError, match="a.zip: not a valid zip"):
        extract_members(archive, ["x"], tmp_path, 10)


@pytest.mark.parametrize("case", ["rgb", "gray", "cmyk"])
@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_prepared_images_are_rgb_squares(tmp_path, case, mode):
    fixture = make_coco_fixture(tmp_path)
    name = {"rgb": 1, "gray": 3, "cmyk": 4}[case]
    data = (fixture.root / "train2014" / f"COCO_train2014_{name:012d}.jpg").read_bytes()
    image = prepare_image(data, 32, mode)
    assert image.mode == "RGB" and image.size == (32, 32)


def test_draft_decoding_matches_a_full_decode_closely():
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    smooth = Image.fromarray(pixels).resize((80, 60)).resize((640, 480), Image.BICUBIC)
    out = io.BytesIO()
    smooth.save(out, format="JPEG", quality=95)
    fast = np.asarray(prepare_image(out.getvalue(), 224, "resize", draft=True), dtype=float)
    plain = np.asarray(prepare_image(out.getvalue(), 224, "resize", draft=False), dtype=float)
    assert np.abs(fast - plain).mean() < 4.0  # out of 255


def test_prepare_jpegs_keeps_order_across_processes_and_checks_sha(tmp_path):
    fixture = make_coco_fixture(tmp_path)
    paths = [str(fixture.root / "val2014" / f"COCO_val2014_{i:012d}.jpg") for i in (101, 102, 103)]
    files = [(paths[i % 3], "") for i in range(70)]  # five chunks of up to 16, in flight at once
    serial = list(prepare_jpegs(files, 16, "resize", 90, workers=1))
    parallel = list(prepare_jpegs(files, 16, "resize", 90, workers=2))
    assert parallel == serial and len(serial) == 70 and serial[0] != serial[1]
    for workers in (1, 2):
        with pytest.raises(PipelineError, match="changed since it was verified"):
            list(prepare_jpegs([*files[:40], (paths[0], "0" * 64)], 16, "resize", 90, workers))
    assert multiprocessing.active_children() == []


def test_closing_prepare_jpegs_early_stops_every_worker(tmp_path):
    fixture = make_coco_fixture(tmp_path)
    path = str(fixture.root / "val2014" / f"COCO_val2014_{101:012d}.jpg")
    jpegs = prepare_jpegs(((path, "") for _ in range(10_000)), 64, "resize", 90, workers=2)
    assert len(list(itertools.islice(jpegs, 20))) == 20
    assert len(multiprocessing.active_children()) == 2
    jpegs.close()  # what contextlib.closing does on Ctrl-C in the stage
    assert multiprocessing.active_children() == []


def test_shards_are_deterministic_split_by_count_and_readable(tmp_path):
    samples = [
        {
            "__key__": f"{i:012d}",
            "jpg": bytes([i]) * 100,
            "json": {"image_id": i, "captions": ["é"]},
        }
        for i in range(7)
    ]
    a = write_shards(iter(samples), tmp_path / "a", "train", maxcount=3, maxsize=10**9)
    b = write_shards(iter(samples), tmp_path / "b", "train", maxcount=3, maxsize=10**9)
    assert [p.name for p in a] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert not list((tmp_path / "a").glob("*.tmp"))
    back = list(read_samples(a))
    assert [s["__key__"] for s in back] == [s["__key__"] for s in samples]
    assert (
        back[3]["json"] == {"image_id": 3, "captions": ["é"]} and back[3]["jpg"] == bytes([3]) * 100
    )


def test_the_photograph_root_is_an_official_layout_the_reader_accepts(tmp_path):
    # pipeline/testing/coco.py writes every fake root (this one, the fixture's, the scale
    # rehearsal's): files named by id, five captions each, ids in order across the splits.
    root = make_photo_coco(tmp_path / "coco", train=3, val=2)
    train = read_captions(root / "annotations/captions_train2014.json")
    val = read_captions(root / "annotations/captions_val2014.json")
    records = image_records(train, select_coco_subset(train, None, 0), "train2014")
    assert [r.image_id for r in records] == [1, 2, 3]
    assert sorted(val.imgs) == [100_001, 100_002]
    assert [r.caption_ids for r in records] == [
        [1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10],
        [11, 12, 13, 14, 15],
    ]
    assert sorted(val.anns) == list(range(16, 26))
    assert records[0].captions[0] == "a photo of an astronaut in a white suit in front of a flag"
    for split, coco in (("train2014", train), ("val2014", val)):
        for image in coco.imgs.values():
            path = root / split / f"COCO_{split}_{image['id']:012d}.jpg"
            assert image["file_name"] == path.name
            with Image.open(path) as jpeg:
                assert jpeg.format == "JPEG" and jpeg.size == (image["width"], image["height"])
