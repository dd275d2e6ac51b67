"""COCO download and pack given hostile or broken input: annotations that name paths outside
the store, malformed entries, archives that lie, and signals in the middle of packing."""

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.data.coco import (
    fetch_images,
    image_records,
    local_images,
    read_captions,
    select_coco_subset,
)
from pipeline.data.coco_manifest import write_manifest
from pipeline.data.shards import read_samples, write_shards
from pipeline.errors import PipelineError
from stages.cli import app

from .coco_fixture import ZIP_PATH, loopback_download, make_coco_fixture, serve
from .conftest import REPO, dvc, one_error_line, run_env

HTTP = {"retries": 1, "backoff_s": 0.01, "timeout_s": 5, "deadline_s": 30}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def edit_annotations(root: Path, split: str, edit) -> Path:
    path = root / "annotations" / f"captions_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def rezip(root: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in ("train2014", "val2014"):
            name = f"annotations/captions_{split}.json"
            zf.write(root / name, name)
    return out.getvalue()


def hostile_file_names(outside: Path):
    def edit(data):
        images = data["images"]
        images[0]["file_name"] = "../../../../../OUTSIDE/pwned.jpg"
        images[1]["file_name"] = str(outside / "keep.txt")  # absolute, an existing file
        images[2]["file_name"] = "COCO_train2014_000000000099.jpg"  # another image's name
        del images[3]["file_name"]

    return edit


@pytest.fixture
def outside(tmp_path) -> Path:
    """A sentinel folder beside the repository that nothing may touch."""
    folder = tmp_path / "OUTSIDE"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    return folder


def test_hostile_file_names_are_rejected_and_nothing_outside_the_store_is_touched(
    tmp_path, http_server, outside
):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    serve(http_server, fixture)
    before = snapshot(outside)
    path = edit_annotations(fixture.root, "train2014", hostile_file_names(outside))
    coco = read_captions(path)
    store = tmp_path / "repo" / "data" / "coco" / "store" / "train2014"  # ../ x5 = tmp_path
    records = image_records(coco, select_coco_subset(coco, None, 0), "train2014")
    hosts = loopback_download(http_server.url)["image_hosts"]
    rows = fetch_images(records, "train2014", store, workers=2, image_hosts=hosts, **HTTP)

    assert snapshot(outside) == before and not (tmp_path / "OUTSIDE" / "pwned.jpg").exists()
    errors = {r["image_id"]: r["error"] for r in rows[:4]}
    assert "has '..' (path traversal); expected COCO_train2014_000000000001.jpg" in errors[1]
    assert "is an absolute path; expected COCO_train2014_000000000002.jpg" in errors[2]
    assert "is not the official COCO_<split>_<12-digit id>.jpg" in errors[3]
    assert errors[4] == "no file_name in the annotations (expected COCO_train2014_000000000004.jpg)"
    assert all(r["status"] == "failed" for r in rows[:4])
    assert all(not any(f"{i:012d}" in p for p in http_server.hits) for i in (1, 2, 3, 4))
    assert all(Path(r["path"]).parent == store for r in rows)  # every path: id + split
    assert {p.name for p in store.iterdir()} == {
        f"COCO_train2014_{i:012d}.jpg" for i in (8,)
    }  # the one valid image not rejected (5, 6, 7 are broken on purpose)


def test_local_mode_reads_only_inside_local_root(tmp_path, outside):
    fixture = make_coco_fixture(tmp_path / "coco")
    secret = fixture.files[f"/train2014/COCO_train2014_{1:012d}.jpg"]
    (outside / "secret.jpg").write_bytes(secret)  # decodes fine, were it ever read
    path = edit_annotations(
        fixture.root,
        "train2014",
        lambda d: d["images"][7].update(file_name=str(outside / "secret.jpg")),
    )
    edit_annotations(
        fixture.root,
        "train2014",
        lambda d: d["images"][0].update(file_name="../../OUTSIDE/secret.jpg"),
    )
    coco = read_captions(path)
    records = image_records(coco, select_coco_subset(coco, None, 0), "train2014")
    rows = local_images(records, "train2014", fixture.root)
    assert rows[0]["status"] == "failed" and "has '..'" in rows[0]["error"]
    assert rows[7]["status"] == "failed" and "absolute path" in rows[7]["error"]
    root = fixture.root.resolve()
    assert all(Path(r["path"]).resolve().is_relative_to(root) for r in rows)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (
            "annotations",
            "caption",
            None,
            r"annotations\[0\] \(id 100\): 'caption' should be a "
            r"string, got null",
        ),
        ("images", "id", "1", r"images\[0\]: 'id' should be an integer of 0..10\^12-1, got \"1\""),
        ("images", "id", True, r"images\[0\]: 'id' should be an integer .*, got true"),
        ("images", "file_name", 7, r"images\[0\] \(id 1\): 'file_name' should be a string, got 7"),
        ("annotations", "image_id", "1", r"annotations\[0\]: 'image_id' should be an integer"),
    ],
)
def test_malformed_entries_are_one_line_naming_the_file_and_entry(
    tmp_path, section, key, value, message
):
    fixture = make_coco_fixture(tmp_path / "coco")
    path = edit_annotations(fixture.root, "train2014", lambda d: d[section][0].update({key: value}))
    with pytest.raises(PipelineError, match=rf"captions_train2014.json: {message}") as info:
        read_captions(path)
    assert "\n" not in str(info.value)


def stage_params(workdir: Path, **coco) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["coco"].update(
        subsets={
            "train": {"split": "train2014", "num_images": None, "seed": 0},
            "val": {"split": "val2014", "num_images": 2, "seed": 1},
        },
        workers=2,
        max_failure_rate=0.9,
        **HTTP,
        **coco,
    )
    params["pack"]["coco"].update(image_size=32, shard_maxcount=3, workers=1)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def t2i(workdir: Path, monkeypatch, *args):
    monkeypatch.chdir(workdir)
    return CliRunner().invoke(app, [*args, "--params", str(workdir / "params.yaml")])


def test_a_null_caption_stops_the_stage_with_one_line(tmp_path, monkeypatch):
    fixture = make_coco_fixture(tmp_path / "coco")
    edit_annotations(fixture.root, "train2014", lambda d: d["annotations"][3].update(caption=None))
    stage_params(tmp_path, source="local", local_root=str(fixture.root))
    line = one_error_line(t2i(tmp_path, monkeypatch, "download", "coco"))
    assert line.endswith(
        "captions_train2014.json: annotations[3] (id 103): 'caption' should be a string, got null"
    )


def lying_zip(good: bytes) -> bytes:
    """The central directory says the first entry is 10 bytes long: it is not."""
    data = bytearray(good)
    entry = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, 10)
    return bytes(data)


@pytest.mark.parametrize("fault", ["lying_header", "truncated", "other_bytes"])
def test_a_bad_archive_is_one_line_and_removed_so_a_rerun_fetches_it_again(
    tmp_path, http_server, monkeypatch, fault
):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    serve(http_server, fixture)
    good = fixture.files[ZIP_PATH]
    bad = {
        "lying_header": lying_zip(good),
        "truncated": good[: len(good) // 2],
        "other_bytes": rezip(fixture.root) + b"\0",
    }[fault]
    http_server.routes[ZIP_PATH] = [(200, bad), (200, good)]
    checked = hashlib.sha256(good).hexdigest() if fault == "other_bytes" else None
    stage_params(tmp_path, **{**loopback_download(http_server.url), "annotations_sha256": checked})

    line = one_error_line(t2i(tmp_path, monkeypatch, "download", "coco"))
    expected = {
        "lying_header": "not a valid zip file (BadZipFile: Bad CRC-32",
        "truncated": "not a valid zip file (BadZipFile",
        "other_bytes": "(download.coco.annotations_sha256)",
    }[fault]
    assert "data/coco/store/annotations_trainval2014.zip: " in line and expected in line
    assert line.endswith("the archive was removed: a rerun fetches it again")
    assert not (tmp_path / "data/coco/store/annotations_trainval2014.zip").exists()

    result = t2i(tmp_path, monkeypatch, "download", "coco")
    assert result.exit_code == 0, result.output
    assert http_server.hits[ZIP_PATH] == 2
    assert (tmp_path / "data/coco/manifest/train.parquet").is_file()


def test_directory_entries_such_as_dot_slash_are_skipped(tmp_path):
    from pipeline.data.archive import extract_members

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("./", b"")
        zf.writestr("annotations/", b"")
        zf.writestr("annotations/captions_val2014.json", b"{}")
    out = extract_members(archive, ["captions_val2014.json"], tmp_path / "out", 100)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["captions_val2014.json"]
    assert out[0].read_bytes() == b"{}"


# ------------------------------------------------------------------------------ shards


def samples(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise PipelineError(f"image {i} changed since it was verified")
        yield {"__key__": f"{i:012d}", "jpg": bytes([i]) * 50, "json": {"image_id": i}}


def test_an_error_mid_shard_publishes_only_the_complete_shards(tmp_path):
    with pytest.raises(PipelineError, match="image 4 changed"):
        write_shards(samples(9, fail_at=4), tmp_path, "train", maxcount=3, maxsize=10**9)
    assert [p.name for p in tmp_path.iterdir()] == ["train-000000.tar"]  # no temp, no partial
    assert [s["__key__"] for s in read_samples([tmp_path / "train-000000.tar"])] == [
        f"{i:012d}" for i in range(3)
    ]


def test_no_samples_make_no_shard(tmp_path):
    assert write_shards(iter([]), tmp_path, "train", maxcount=3, maxsize=10**9) == []
    assert list(tmp_path.iterdir()) == []


def pack_workdir(tmp_path: Path, n: int, bad_sha_at: int | None = None) -> Path:
    """A folder with params.yaml and one manifest of ``n`` images (one 640x480 photo, n ids)."""
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(photo, quality=95)
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    rows = [
        {
            "image_id": i,
            "file_name": f"COCO_train2014_{i:012d}.jpg",
            "split": "train2014",
            "url": "",
            "path": str(photo),
            "status": "ok",
            "error": "",
            "sha256": "0" * 64 if i == bad_sha_at else sha,
            "bytes": 1,
            "width": 640,
            "height": 480,
            "caption_ids": [i],
            "captions": [f"photo {i}"],
        }
        for i in range(1, n + 1)
    ]
    workdir = tmp_path / "work"
    write_manifest(rows, workdir / "data/coco/manifest/train.parquet")
    stage_params(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["pack"]["coco"].update(image_size=224, shard_maxcount=1000, workers=2)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    shards = workdir / "data/shards/coco"
    shards.mkdir(parents=True)
    (shards / "index.json").write_text('{"subsets": {"train": {"shards": ["train-000009.tar"]}}}')
    (shards / "train-000009.tar").write_bytes(b"an earlier run's shard")
    return workdir


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_packing_leaves_no_published_partial_shard(tmp_path, signum):
    workdir = pack_workdir(tmp_path, 800)
    shards = workdir / "data/shards/coco"
    # A suite started in the background (`pytest &` in a script) inherits SIGINT ignored, and
    # Python keeps it ignored: the child gets the default action back, as in a terminal.
    proc = subprocess.Popen(
        ["t2i", "pack", "coco"],
        cwd=workdir,
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(shards.glob(".train-000000.tar.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # well into the shard
        assert proc.poll() is None, "packing ended before the signal"
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert list(shards.iterdir()) == []  # no partial shard, no temp, no stale index or shard

    result = subprocess.run(
        ["t2i", "pack", "coco"], cwd=workdir, env=run_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((shards / "index.json").read_text())
    assert sorted(p.name for p in shards.glob("*.tar")) == index["subsets"]["train"]["shards"]
    assert len(list(read_samples(sorted(shards.glob("*.tar"))))) == 800


def _sigterm_handler() -> str:
    return repr(signal.getsignal(signal.SIGTERM))


def test_forked_workers_of_a_stage_keep_the_default_sigterm():
    """Pool.terminate() (run whenever a pool closes) SIGTERMs its workers: they must die at
    once, not run the stage's unwinding handler (a worker waiting on a lock never would)."""
    import multiprocessing

    from stages import cli

    previous = signal.signal(signal.SIGTERM, cli._unwind_on_sigterm)  # as inside a stage
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply(_sigterm_handler) == repr(signal.SIG_DFL)
        assert signal.getsignal(signal.SIGTERM) is cli._unwind_on_sigterm
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_changed_image_stops_packing_with_no_shard_and_no_index(tmp_path, monkeypatch):
    workdir = pack_workdir(tmp_path, 6, bad_sha_at=5)
    line = one_error_line(t2i(workdir, monkeypatch, "pack", "coco"))
    assert "photo.jpg: changed since it was verified; rerun coco_download" in line
    assert list((workdir / "data/shards/coco").iterdir()) == []


@pytest.mark.e2e
def test_dvc_download_stage_with_hostile_annotations_and_credentials(
    repo_copy, tmp_path, http_server, outside
):
    """`dvc repro` of coco_download: annotations that name paths outside the repository and a
    file:// URL, behind URLs that carry credentials. Nothing outside the store is touched and
    the credentials reach the server but no message, manifest or metrics file."""
    import base64

    from pipeline.data.coco_manifest import read_manifest

    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    secret = "tester:TOKEN123"
    authed = http_server.url.replace("http://", f"http://{secret}@")

    def edit(data):
        hostile_file_names(outside)(data)
        data["images"][2].update(
            coco_url="file:///etc/hostname", file_name="COCO_train2014_000000000003.jpg"
        )
        for i in (3, 6):  # id 4 fetches fine, id 7 is a 404: both behind credentials
            data["images"][i]["coco_url"] = data["images"][i]["coco_url"].replace(
                http_server.url, authed
            )
        data["images"][3]["file_name"] = "COCO_train2014_000000000004.jpg"

    edit_annotations(fixture.root, "train2014", edit)
    fixture.files[ZIP_PATH] = rezip(fixture.root)
    serve(http_server, fixture)
    before = snapshot(outside)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["download"]["coco"].update(
        image_hosts=loopback_download(http_server.url)["image_hosts"],
        annotations_url=authed + ZIP_PATH,
        annotations_sha256=hashlib.sha256(fixture.files[ZIP_PATH]).hexdigest(),
        subsets={"train": {"split": "train2014", "num_images": None, "seed": 0}},
        workers=2,
        max_failure_rate=0.9,
        **HTTP,
    )
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = dvc(repo_copy, "repro", "coco/dvc.yaml:coco_download")

    assert snapshot(outside) == before and not (tmp_path / "OUTSIDE" / "pwned.jpg").exists()
    rows = read_manifest(repo_copy / "data/coco/manifest/train.parquet")
    by_id = {r["image_id"]: r for r in rows}
    assert "path traversal" in by_id[1]["error"] and "absolute path" in by_id[2]["error"]
    assert "file:///etc/hostname: scheme 'file': only http:// and https://" in by_id[3]["error"]
    assert by_id[4]["status"] == "ok" and by_id[4]["url"].startswith("http://***@127.0.0.1")
    basic = "Basic " + base64.b64encode(secret.encode()).decode()
    assert http_server.headers[ZIP_PATH]["Authorization"] == basic
    assert http_server.headers[f"/train2014/{by_id[4]['file_name']}"]["Authorization"] == basic
    store = repo_copy / "data/coco/store"
    assert {p.name for p in (store / "train2014").iterdir()} == {
        "COCO_train2014_000000000004.jpg",
        "COCO_train2014_000000000008.jpg",
    }

    assert "TOKEN123" not in json.dumps(rows) + out
    files = [p for p in repo_copy.rglob("*") if p.is_file() and ".git" not in p.parts]
    holders = {str(p.relative_to(repo_copy)) for p in files if b"TOKEN123" in p.read_bytes()}
    # Only the params the user wrote, DVC's record of them (its lock file and run cache), and
    # the annotations as the server sent them: no manifest, metrics file or log.
    assert {h for h in holders if not h.startswith((".dvc/cache/runs/", "tests/"))} == {
        "params.yaml",
        "coco/dvc.lock",
        "data/coco/store/annotations/captions_train2014.json",
    }
    download = (repo_copy / "metrics/coco/download.json").read_text()
    assert "http://***@127.0.0.1" in download and "file:///etc/hostname" in download
    assert "HTTP 404" in by_id[7]["error"] and "http://***@127.0.0.1" in by_id[7]["error"]
