"""The download stage against a loopback HTTP server serving the real Fashion-MNIST files."""

import gzip
import hashlib

import pytest

from pipeline.data.fmnist_download import FMNIST_IDX_SHA256, HttpLimits, fetch_fmnist
from pipeline.errors import PipelineError

NAMES = list(FMNIST_IDX_SHA256)


@pytest.fixture
def mirror(http_server, fmnist_gz_dir):
    """A mirror at /fm/ that serves the four genuine .gz files."""
    for name in NAMES:
        http_server.routes[f"/fm/{name}.gz"] = [(200, (fmnist_gz_dir / f"{name}.gz").read_bytes())]
    return http_server


def fetch(out, mirrors, retries=2):
    http = HttpLimits(retries=retries, backoff_s=0.01, timeout_s=10)
    return fetch_fmnist(out, source="mirror", mirrors=mirrors, http=http)


def test_mirror_download_writes_verified_decompressed_files(tmp_path, mirror):
    origins = fetch(tmp_path, [f"{mirror.url}/fm/"])
    for name in NAMES:
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == FMNIST_IDX_SHA256[name]
        assert origins[name] == f"{mirror.url}/fm/{name}.gz"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_local_copy_gives_byte_identical_output(tmp_path, mirror, fmnist_gz_dir):
    fetch(tmp_path / "net", [f"{mirror.url}/fm/"])
    origins = fetch_fmnist(tmp_path / "local", source="local", local_dir=str(fmnist_gz_dir))
    assert all(path.startswith(str(fmnist_gz_dir)) for path in origins.values())
    for name in NAMES:
        assert (tmp_path / "net" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_checksum_mismatch_is_an_error_and_nothing_is_written(tmp_path, mirror):
    mirror.routes["/fm/train-images-idx3-ubyte.gz"] = [
        (200, gzip.compress(b"\0\0\x08\x01" + b"x" * 9))
    ]
    with pytest.raises(PipelineError, match=r"sha256 .* expected c59f468a"):
        fetch(tmp_path, [f"{mirror.url}/fm/"])
    assert not (tmp_path / "train-images-idx3-ubyte").exists()


def test_transient_503_is_retried_then_succeeds(tmp_path, mirror):
    path = "/fm/train-labels-idx1-ubyte.gz"
    mirror.routes[path] = [(503, b"busy"), *mirror.routes[path]]
    fetch(tmp_path, [f"{mirror.url}/fm/"])
    assert mirror.hits[path] == 2
    assert (tmp_path / "train-labels-idx1-ubyte").is_file()


def test_404_is_not_retried_and_the_next_mirror_is_used(tmp_path, mirror):
    fetch(tmp_path, [f"{mirror.url}/gone/", f"{mirror.url}/fm/"])
    assert mirror.hits["/gone/train-images-idx3-ubyte.gz"] == 1
    assert (tmp_path / "t10k-labels-idx1-ubyte").is_file()


def test_no_source_gives_one_message_saying_how_to_supply_files(tmp_path, http_server):
    with pytest.raises(PipelineError) as info:
        fetch(tmp_path, [f"{http_server.url}/missing/"])
    message = str(info.value)
    assert "HTTP 404" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download.fmnist.local_dir" in message


def test_unreachable_mirror_is_retried_then_reported(tmp_path, http_server):
    port = http_server.httpd.server_address[1]
    http_server.close()  # nothing listens there any more: connection refused
    with pytest.raises(PipelineError, match="network error"):
        fetch(tmp_path, [f"http://127.0.0.1:{port}/"], retries=1)


def test_missing_local_dir_is_named(tmp_path):
    with pytest.raises(
        PipelineError, match=r"download\.fmnist\.local_dir: .*/nope is not a directory"
    ):
        fetch_fmnist(tmp_path, source="local", local_dir=str(tmp_path / "nope"))


def test_corrupt_local_copy_is_never_used(tmp_path, fmnist_gz_dir):
    local = tmp_path / "copy"
    local.mkdir()
    for name in NAMES:
        (local / f"{name}.gz").write_bytes((fmnist_gz_dir / f"{name}.gz").read_bytes())
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(PipelineError, match=r"copy/t10k-labels-idx1-ubyte.gz: not a valid gzip"):
        fetch_fmnist(tmp_path / "out", source="local", local_dir=str(local))
