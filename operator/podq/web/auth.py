"""Who may act: the write token, the session cookie it buys, and the CSRF checks.

Without a write token the dashboard is read-only: no action is offered or accepted.
With one (`PODQ_WEB_TOKEN`, or a file such as a mounted Secret named by
`PODQ_WEB_TOKEN_FILE` or `--token-file`), a user who types it on the login page gets a
signed session cookie (HttpOnly, SameSite=Strict). Every action is a POST that must
carry the session's CSRF token in its form and come from the same origin (the Origin
header, or the Referer when a browser sends no Origin).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

SESSION_COOKIE = "podq_session"
SESSION_S = 12 * 3600
TOKEN_ENV = "PODQ_WEB_TOKEN"
TOKEN_FILE_ENV = "PODQ_WEB_TOKEN_FILE"


def load_token(token_file: str | None = None) -> str | None:
    """The write token: the file given, else $PODQ_WEB_TOKEN_FILE's, else
    $PODQ_WEB_TOKEN; None (read-only) when none is set or it is empty."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        value = Path(path).read_text().strip()
    else:
        value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None


class Guard:
    """Sessions and CSRF tokens, both derived from the write token (stateless, so
    several replicas of the dashboard accept each other's sessions)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._key = hashlib.sha256(b"podq-web:" + token.encode()).digest() if token else b""

    @property
    def writable(self) -> bool:
        return self.token is not None

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def check_token(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            offered.strip().encode(), self.token.encode()
        )

    def new_session(self, now: float | None = None) -> str:
        """A cookie value: `<nonce>.<expiry>.<signature>`."""
        expiry = int((now or time.time()) + SESSION_S)
        body = f"{secrets.token_hex(16)}.{expiry}"
        return f"{body}.{self._sign('session:' + body)}"

    def session(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce when the cookie is valid and unexpired, else None."""
        if not self.writable or not cookie or cookie.count(".") != 2:
            return None
        nonce, expiry, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"session:{nonce}.{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return None
        return nonce

    def csrf(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    def check_csrf(self, nonce: str | None, offered: str) -> bool:
        return nonce is not None and hmac.compare_digest(self.csrf(nonce), offered or "")


def same_origin(origin: str | None, referer: str | None, host: str) -> bool:
    """Whether a POST comes from a page of this server: its Origin (or, without one,
    its Referer) names the host the request was sent to (the scheme is left out: TLS
    may end at a proxy in front). A request with neither is refused."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc == host
