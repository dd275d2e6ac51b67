"""HTTP downloads with retries and exponential backoff, written atomically."""

from __future__ import annotations

import logging
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

# Codes worth another try: the server or a proxy is busy, not the URL wrong.
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(Exception):
    """A URL could not be fetched; ``transient`` is False for answers like 404."""

    def __init__(self, url: str, reason: str, transient: bool):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.transient = transient


def _fetch_once(url: str, dest: Path, timeout_s: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "t2i-cvae"})
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout_s) as response,
            atomic_path(dest) as tmp,
            tmp.open("wb") as out,
        ):
            shutil.copyfileobj(response, out, length=1 << 20)
    except urllib.error.HTTPError as exc:
        raise DownloadError(url, f"HTTP {exc.code}", exc.code in TRANSIENT_HTTP) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(url, f"network error: {reason}", True) from None


def download(
    url: str, dest: Path, *, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0
) -> None:
    """Fetch ``url`` to ``dest``; retry transient failures, waiting backoff_s * 2**attempt."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, dest, timeout_s)
            return
        except DownloadError as exc:
            if not exc.transient or attempt == retries:
                raise
            wait = backoff_s * 2**attempt
            log.warning("%s; retry %d/%d in %.1fs", exc, attempt + 1, retries, wait)
            time.sleep(wait)
