"""pipeline/data/http.py against loopback servers that misbehave: wrong schemes, credentials,
bodies cut short, trickles, redirects, and kills in the middle of a download."""

import base64
import gzip
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.data.fmnist_download import FMNIST_IDX_SHA256, HttpLimits, fetch_fmnist
from pipeline.data.http import DownloadError, download

from .conftest import REPO, run_env

NAMES = list(FMNIST_IDX_SHA256)
BODY = bytes(range(256)) * 40  # 10 kB


def cut_short(body: bytes, keep: int):
    """An answer that promises len(body) bytes and sends ``keep`` of them."""

    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:keep])
        handler.close_connection = True

    return answer


def trickle(body: bytes, every_s: float = 0.2, headers_too: bool = False):
    """An answer that sends one byte (or, with headers_too, one header line) per ``every_s``."""

    def answer(handler):
        try:
            if headers_too:
                handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
                for i in range(10_000):
                    handler.wfile.write(f"X-Slow-{i}: 1\r\n".encode())
                    handler.wfile.flush()
                    time.sleep(every_s)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for i in range(len(body)):
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
                time.sleep(every_s)
        except OSError:  # the client gave up
            pass

    return answer


def redirect(location: str):
    def answer(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def get(url, dest, **kw):
    download(url, dest, **{"retries": 2, "backoff_s": 0.01, "timeout_s": 5, **kw})


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/hostname",
        "ftp://127.0.0.1/x",
        "127.0.0.1/x",
        "http:///no-host",
        "http://127.0.0.1:99999/x",
    ],
)
def test_only_http_and_https_urls_are_fetched(tmp_path, url):
    with pytest.raises(DownloadError) as info:
        get(url, tmp_path / "out")
    assert not info.value.transient
    assert "only http:// and https://" in str(info.value) or "not a valid URL" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scheme", ["file", "ftp"])
def test_a_redirect_may_lead_only_to_http(tmp_path, http_server, scheme):
    http_server.routes["/elsewhere"] = [redirect(f"{scheme}://127.0.0.1/etc/hostname")]
    http_server.routes["/to-body"] = [redirect(f"{http_server.url}/body")]
    http_server.routes["/body"] = [(200, BODY)]
    with pytest.raises(DownloadError, match=f"scheme '{scheme}': only http:// and https://"):
        get(f"{http_server.url}/elsewhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    get(f"{http_server.url}/to-body", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == BODY


def test_credentials_become_basic_auth_and_never_appear_in_messages_or_logs(
    tmp_path, http_server, caplog
):
    http_server.routes["/private"] = [(200, BODY)]
    http_server.routes["/moved"] = [redirect(f"{http_server.url}/private")]
    http_server.routes["/busy"] = [(503, b"busy")]
    base = http_server.url.replace("http://", "http://alice:s3cretTOKEN@")
    get(f"{base}/private", tmp_path / "a")
    expected = "Basic " + base64.b64encode(b"alice:s3cretTOKEN").decode()
    assert http_server.headers["/private"]["Authorization"] == expected
    get(f"{base}/moved", tmp_path / "b")  # a redirect never carries the credentials on
    assert "Authorization" not in http_server.headers["/private"]
    assert (tmp_path / "b").read_bytes() == BODY

    caplog.set_level(logging.WARNING)
    with pytest.raises(DownloadError) as info:
        get(f"{base}/busy", tmp_path / "c")
    assert http_server.hits["/busy"] == 3  # retried, and logged each time
    assert "s3cretTOKEN" not in str(info.value) and "s3cretTOKEN" not in caplog.text
    assert "http://***@127.0.0.1" in str(info.value) and "***@" in caplog.text


def test_a_short_body_is_retried_then_counted_as_a_failure(tmp_path, http_server):
    http_server.routes["/flaky"] = [cut_short(BODY, 1000), (200, BODY)]
    get(f"{http_server.url}/flaky", tmp_path / "ok")
    assert http_server.hits["/flaky"] == 2 and (tmp_path / "ok").read_bytes() == BODY

    http_server.routes["/short"] = [cut_short(BODY, 1000)]
    with pytest.raises(DownloadError, match="body of 1000 bytes, Content-Length says 10240"):
        get(f"{http_server.url}/short", tmp_path / "short", retries=2)
    assert http_server.hits["/short"] == 3
    assert list(tmp_path.iterdir()) == [tmp_path / "ok"]  # nothing of the short body kept


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_server_hits_the_overall_deadline(tmp_path, http_server, headers_too):
    http_server.routes["/slow"] = [trickle(BODY, 0.1, headers_too)]
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"overall deadline of 1.5 s passed") as info:
        get(f"{http_server.url}/slow", tmp_path / "out", timeout_s=2, deadline_s=1.5)
    took = time.monotonic() - start
    assert 1.4 < took < 6.0  # each read returned within timeout_s; the deadline stopped it
    assert not info.value.transient and http_server.hits["/slow"] == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_retries_stop_when_the_deadline_leaves_no_time_to_wait(tmp_path, http_server):
    http_server.routes["/busy"] = [(503, b"busy")]
    with pytest.raises(DownloadError, match="no time left to retry within 1 s"):
        get(f"{http_server.url}/busy", tmp_path / "out", retries=10, backoff_s=0.4, deadline_s=1)
    assert http_server.hits["/busy"] == 2  # waits 0.4 s, then 0.8 s would pass the deadline


@pytest.fixture
def mirrors(http_server, fmnist_gz_dir):
    """/good/ serves the four genuine files; /short/ cuts each short; /wrong/ serves other
    bytes of the right length."""
    for name in NAMES:
        body = (fmnist_gz_dir / f"{name}.gz").read_bytes()
        http_server.routes[f"/good/{name}.gz"] = [(200, body)]
        http_server.routes[f"/short/{name}.gz"] = [cut_short(body, len(body) // 3)]
        http_server.routes[f"/wrong/{name}.gz"] = [(200, gzip.compress(b"\0\0\x08\x01" + b"x"))]
    return http_server


@pytest.mark.parametrize("first", ["short", "wrong"])
def test_mirrors_fall_back_in_order_on_any_failure(tmp_path, mirrors, first):
    urls = [f"{mirrors.url}/{first}/", f"{mirrors.url}/good/"]
    http = HttpLimits(retries=1, backoff_s=0.01, timeout_s=5)
    origins = fetch_fmnist(tmp_path, source="mirror", mirrors=urls, http=http)
    assert all(origin.startswith(f"{mirrors.url}/good/") for origin in origins.values())
    tries = 2 if first == "short" else 1  # a short body is retried once; a wrong file is not
    assert all(mirrors.hits[f"/{first}/{name}.gz"] == tries for name in NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)  # no temp files


def test_a_killed_mirror_fetch_leaves_nothing_in_tmp_and_a_rerun_cleans_up(tmp_path, mirrors):
    name = NAMES[0]
    mirrors.routes[f"/slow/{name}.gz"] = [trickle(BODY * 100, 0.05)]
    out, tmpdir = tmp_path / "raw", tmp_path / "TMPDIR"
    tmpdir.mkdir()
    code = (
        "import sys; from pathlib import Path; "
        "from pipeline.data.fmnist_download import HttpLimits, fetch_fmnist; "
        "fetch_fmnist(Path(sys.argv[1]), source='mirror', mirrors=[sys.argv[2]], "
        "http=HttpLimits(retries=0))"
    )
    env = {**run_env(), "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out), f"{mirrors.url}/slow/"], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # some bytes in
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(out.glob(".*.tmp")), "the download never started"
    assert list(tmpdir.iterdir()) == []  # nothing in the system temp folder

    fetch_fmnist(out, source="mirror", mirrors=[f"{mirrors.url}/good/"], http=HttpLimits(retries=0))
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)  # leftovers removed
