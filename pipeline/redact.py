"""Credentials never leave the process: ``user:TOKEN@`` in any URL is shown as ``***@``.

Used on every URL that is logged, raised or stored (manifest, metrics), on params
validation messages, and as a logging filter and on the one-line errors of the CLI.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# scheme://userinfo@ ; userinfo has no '/', '@' or whitespace (RFC 3986 §3.2.1)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without userinfo, user, password) of ``url``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc)), parts.username, parts.password


class RedactingFilter(logging.Filter):
    """Rewrites every log record's message with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
