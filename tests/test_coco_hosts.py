"""COCO downloads go where the user said, and a local root is read only inside itself: image
hosts come from download.coco.image_hosts (redirects too), symlinks that leave local_root and
oversized annotations are refused with one line."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.data.coco import read_captions
from pipeline.data.http import DownloadError, download
from pipeline.errors import PipelineError
from stages.cli import app

from .coco_fixture import ZIP_PATH, loopback_download, make_coco_fixture, serve
from .conftest import LoopbackServer
from .test_coco_hostile import edit_annotations, one_error_line, rezip, stage_params
from .test_http import redirect

FIRST = f"/train2014/COCO_train2014_{1:012d}.jpg"


@pytest.fixture
def other_server():
    server = LoopbackServer()  # the same 127.0.0.1, another port: another host
    yield server
    server.close()


def t2i_download(workdir: Path, monkeypatch):
    monkeypatch.chdir(workdir)
    return CliRunner().invoke(app, ["download", "coco", "--params", str(workdir / "params.yaml")])


def served(tmp_path, http_server, edit=None):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    if edit:
        edit_annotations(fixture.root, "train2014", edit)
        fixture.files[ZIP_PATH] = rezip(fixture.root)
    serve(http_server, fixture)
    stage_params(tmp_path, **loopback_download(http_server.url))
    return fixture


def test_the_fixture_downloads_with_its_own_host_allowed(tmp_path, http_server, monkeypatch):
    served(tmp_path, http_server)
    result = t2i_download(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert http_server.hits[FIRST] == 1


@pytest.mark.parametrize("where", ["other_port", "metadata", "localhost"])
def test_a_coco_url_on_another_host_stops_the_stage_before_any_request(
    tmp_path, http_server, other_server, monkeypatch, where
):
    port = other_server.url.rsplit(":", 1)[1]
    url, host = {
        "other_port": (other_server.url + FIRST, f"127.0.0.1:{port}"),
        "metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
        "localhost": (f"http://localhost:{port}/admin", f"localhost:{port}"),
    }[where]
    served(tmp_path, http_server, lambda d: d["images"][4].update(coco_url=url))
    line = one_error_line(t2i_download(tmp_path, monkeypatch))
    allowed = loopback_download(http_server.url)["image_hosts"][0]
    assert line == (
        f"error: image 5: coco_url {url} names host {host}, which is not in "
        f"download.coco.image_hosts ({allowed}); add it there only if you trust it"
    )
    assert other_server.hits == {} and FIRST not in http_server.hits  # nothing fetched
    assert not (tmp_path / "data/coco/manifest").exists()


def test_a_redirect_to_another_host_stops_the_stage(
    tmp_path, http_server, other_server, monkeypatch
):
    served(tmp_path, http_server)
    http_server.routes[FIRST] = [redirect(other_server.url + "/internal")]
    line = one_error_line(t2i_download(tmp_path, monkeypatch))
    port = other_server.url.rsplit(":", 1)[1]
    assert line.startswith(f"error: image 1: coco_url {http_server.url}{FIRST} redirected to ")
    assert f"host 127.0.0.1:{port}, which is not in download.coco.image_hosts" in line
    assert other_server.hits == {} and not (tmp_path / "data/coco/manifest").exists()


def test_download_keys_allowed_hosts_on_host_and_port(tmp_path, http_server, other_server):
    http_server.routes["/a"] = [(200, b"body")]
    http_server.routes["/hop"] = [redirect("/a")]  # the same host:port: followed
    http_server.routes["/away"] = [redirect(other_server.url + "/a")]
    here = loopback_download(http_server.url)["image_hosts"]
    download(http_server.url + "/hop", tmp_path / "a", allowed_hosts=here, retries=0)
    assert (tmp_path / "a").read_bytes() == b"body"
    with pytest.raises(DownloadError, match=r"redirect to .*: host 127.0.0.1:\d+ is not an"):
        download(http_server.url + "/away", tmp_path / "b", allowed_hosts=here, retries=0)
    with pytest.raises(DownloadError) as info:  # a bare host means its scheme's default port
        download(http_server.url + "/a", tmp_path / "c", allowed_hosts=["127.0.0.1"], retries=0)
    assert info.value.refused_host == http_server.url.removeprefix("http://")
    assert other_server.hits == {} and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------ local root


def local_run(tmp_path, monkeypatch, fixture, **params):
    stage_params(tmp_path, source="local", local_root=str(fixture.root), **params)
    return t2i_download(tmp_path, monkeypatch)


@pytest.fixture
def outside_image(tmp_path) -> Path:
    fixture = make_coco_fixture(tmp_path / "elsewhere")
    return fixture.root / "train2014" / f"COCO_train2014_{1:012d}.jpg"


def test_an_image_symlink_leaving_the_root_is_refused(tmp_path, monkeypatch, outside_image):
    fixture = make_coco_fixture(tmp_path / "coco")
    image = fixture.root / "train2014" / f"COCO_train2014_{8:012d}.jpg"
    image.unlink()
    image.symlink_to(outside_image)
    line = one_error_line(local_run(tmp_path, monkeypatch, fixture))
    assert line == (
        f"error: {image}: a symlink to {outside_image.resolve()}, outside "
        f"download.coco.local_root {fixture.root}; copy the file into the root (symlinks "
        "that leave it are not followed)"
    )
    assert not (tmp_path / "data/coco/manifest").exists()
    inside = fixture.root / "train2014" / f"COCO_train2014_{1:012d}.jpg"
    image.unlink()
    image.symlink_to(inside)  # a symlink that stays inside the root is fine
    result = local_run(tmp_path, monkeypatch, fixture)
    assert result.exit_code == 0, result.output


def test_a_split_folder_symlink_leaving_the_root_is_refused(tmp_path, monkeypatch):
    fixture = make_coco_fixture(tmp_path / "coco")
    elsewhere = make_coco_fixture(tmp_path / "elsewhere").root / "val2014"
    for image in (fixture.root / "val2014").iterdir():
        image.unlink()
    (fixture.root / "val2014").rmdir()
    (fixture.root / "val2014").symlink_to(elsewhere, target_is_directory=True)
    line = one_error_line(local_run(tmp_path, monkeypatch, fixture))
    assert line.startswith(f"error: {fixture.root / 'val2014'}: a symlink to {elsewhere}")


def test_annotations_linked_to_dev_zero_or_too_large_are_refused(tmp_path, monkeypatch):
    fixture = make_coco_fixture(tmp_path / "coco")
    path = fixture.root / "annotations" / "captions_train2014.json"  # read first
    size = path.stat().st_size
    line = one_error_line(local_run(tmp_path, monkeypatch, fixture, max_annotations_bytes=size - 1))
    assert line == (
        f"error: {path}: larger than download.coco.max_annotations_bytes ({size - 1} bytes)"
    )
    path.unlink()
    path.symlink_to("/dev/zero")
    line = one_error_line(local_run(tmp_path, monkeypatch, fixture))
    assert line.startswith(f"error: {path}: a symlink to /dev/zero, outside")
    with pytest.raises(PipelineError, match="/dev/zero: not a regular file"):  # no root: bounded
        read_captions(Path("/dev/zero"), max_bytes=10**6)


def test_annotations_nested_too_deeply_are_one_line(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PipelineError, match=r"not a readable COCO captions JSON \(nested too"):
        read_captions(path)


def test_json_fixture_is_unchanged_by_the_checks(tmp_path):
    fixture = make_coco_fixture(tmp_path / "coco")
    coco = read_captions(fixture.root / "annotations" / "captions_train2014.json")
    assert sorted(coco.imgs) == list(range(1, 9))
    assert json.loads(json.dumps(coco.dataset)) == fixture.caption_json("train2014")
