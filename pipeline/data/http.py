"""HTTP(S) downloads: retries with exponential backoff, checked, bounded, written atomically.

- Only ``http`` and ``https`` URLs are fetched, and redirects may lead only to those.
- ``user:password@`` in a URL becomes an HTTP Basic ``Authorization`` header that is never
  forwarded on a redirect; the URL is redacted (``***@``) in every message.
- A body shorter than its ``Content-Length`` is a (retried) failure, never a file.
- ``allowed_hosts`` (when given) names the only hosts the URL and every redirect may reach:
  ``host`` means that host on its scheme's default port (80, 443), ``host:port`` that port
  only. So another port of an allowed host is another host; the refusal is never retried.
- ``timeout_s`` bounds each socket operation; ``deadline_s`` bounds the whole download,
  retries and waits included: when it passes, the open connection is shut down.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from pipeline.atomic import atomic_path
from pipeline.redact import redact, split_credentials

log = logging.getLogger(__name__)

# Codes worth another try: the server or a proxy is busy, not the URL wrong.
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
SCHEMES = ("http", "https")


class DownloadError(Exception):
    """A URL could not be fetched; ``transient`` is False for answers like 404.
    ``refused_host``: the host:port outside ``allowed_hosts`` that the URL or a redirect named."""

    def __init__(self, url: str, reason: str, transient: bool, refused_host: str = ""):
        self.url = redact(url)
        self.reason = redact(reason)
        super().__init__(f"{self.url}: {self.reason}")
        self.transient = transient
        self.refused_host = refused_host


DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """'host:port' of an http(s) URL, the port its scheme's default when none is given."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    host = (parts.hostname or "").lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_host(url: str, allowed_hosts: list[str] | None) -> None:
    """Refuse a URL whose host:port is not one of ``allowed_hosts`` (None: any host)."""
    if allowed_hosts is None:
        return
    key = host_key(url)
    scheme = urlsplit(url).scheme.lower()
    if key not in {host_key(f"{scheme}://{entry}") for entry in allowed_hosts}:
        reason = f"host {key} is not an allowed host ({', '.join(allowed_hosts)})"
        raise DownloadError(url, reason, False, refused_host=key)


def check_url(url: str) -> None:
    """Refuse anything but an absolute http(s) URL (urllib alone would read file:// too)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise DownloadError(url, f"not a valid URL ({exc})", False) from None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise DownloadError(url, f"{scheme}: only http:// and https:// URLs are fetched", False)


class _Deadline:
    """Shuts down every connection of one download when its overall deadline passes."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def _shut(self, connection) -> None:
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                self._shut(connection)

    def track(self, http_class):
        """A connection factory for urllib whose connections this deadline can shut."""

        def factory(host, **kw):
            connection = http_class(host, **kw)
            connect = connection.connect

            def tracked_connect():
                connect()
                with self._lock:
                    self._connections.append(connection)
                    if self.expired:
                        self._shut(connection)

            connection.connect = tracked_connect
            return connection

        return factory


class _DeadlineMixin:
    """Opens each connection of an urllib handler through its download's deadline."""

    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kw):
        return super().do_open(self.deadline.track(http_class), req, **kw)


class _HTTPHandler(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def __init__(self, allowed_hosts: list[str] | None = None):
        super().__init__()
        self.allowed_hosts = allowed_hosts

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urljoin(req.full_url, location)
            check_url(target)  # no redirect to file://, ftp:// ...
            try:
                check_host(target, self.allowed_hosts)  # nor to a host the user did not allow
            except DownloadError as exc:
                reason = f"redirect to {exc.url}: {exc.reason}"
                raise DownloadError(req.full_url, reason, False, exc.refused_host) from None
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _request(url: str) -> urllib.request.Request:
    plain, user, password = split_credentials(url)
    request = urllib.request.Request(plain, headers={"User-Agent": "t2i-cvae"})
    if user is not None:
        token = base64.b64encode(f"{unquote(user)}:{unquote(password or '')}".encode()).decode()
        # An unredirected header: no redirect (to this host or another) receives it.
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _expected_length(response, url: str) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise DownloadError(url, f"invalid Content-Length {value!r}", False)
    return int(value)


def _fetch_once(
    url: str, dest: Path, timeout_s: float, deadline: _Deadline, allowed_hosts: list[str] | None
) -> None:
    opener = urllib.request.build_opener(
        _HTTPHandler(deadline), _HTTPSHandler(deadline), _RedirectHandler(allowed_hosts)
    )
    timeout = max(min(timeout_s, deadline.remaining()), 0.001)
    received = 0
    try:
        with opener.open(_request(url), timeout=timeout) as response:
            expected = _expected_length(response, url)
            with atomic_path(dest) as tmp, tmp.open("wb") as out:
                while chunk := response.read1(1 << 20):  # returns as data arrives
                    out.write(chunk)
                    received += len(chunk)
                    if deadline.expired:
                        break
                if deadline.expired:
                    raise DownloadError(url, _deadline_reason(deadline, received), False)
                if expected is not None and received != expected:
                    reason = f"body of {received} bytes, Content-Length says {expected}"
                    raise DownloadError(url, reason, True)
    except urllib.error.HTTPError as exc:
        raise DownloadError(url, f"HTTP {exc.code}", exc.code in TRANSIENT_HTTP) from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        if deadline.expired:
            raise DownloadError(url, _deadline_reason(deadline, received), False) from None
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(url, f"network error: {reason}", True) from None


def _deadline_reason(deadline: _Deadline, received: int) -> str:
    return (
        f"overall deadline of {deadline.seconds:g} s passed ({received} bytes received); "
        "raise deadline_s in params.yaml for a slow link"
    )


def download(
    url: str,
    dest: Path,
    *,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    deadline_s: float = 3600.0,
    allowed_hosts: list[str] | None = None,
) -> None:
    """Fetch ``url`` to ``dest``; retry transient failures, waiting backoff_s * 2**attempt.

    ``dest`` appears only once the whole body has arrived.
    """
    check_url(url)
    check_host(url, allowed_hosts)
    with _Deadline(deadline_s) as deadline:
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, dest, timeout_s, deadline, allowed_hosts)
                return
            except DownloadError as exc:
                if not exc.transient or attempt == retries:
                    raise
                wait = backoff_s * 2**attempt
                if wait >= deadline.remaining():
                    reason = f"{exc.reason}; no time left to retry within {deadline_s:g} s"
                    raise DownloadError(url, reason, False) from None
                log.warning("%s; retry %d/%d in %.1fs", exc, attempt + 1, retries, wait)
                time.sleep(wait)
