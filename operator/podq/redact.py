"""The one redaction of secrets, for every log line, Event, status and metric label.

`redact(text)` hides the password of every Redis URL in text, whatever its form:
`redis://:pw@host`, `redis://user:pw@host`, `rediss://...`, `unix://:pw@/path`,
`?password=pw` (and `&password=`), passwords holding '/', '@', ':' or percent escapes
such as `%2F`; and every secret registered with `remember` (a password given apart from
the URL, a Secret's contents), raw or percent-encoded, wherever it appears.

`RedactingFilter` applies it to every record of a logging handler: the operator and the
worker install it on their handlers at start (`install_logging_filter`).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse

MASK = "***"
# A secret shorter than this is not searched for on its own (it would mask ordinary
# words); inside a URL it is masked whatever its length.
MIN_SECRET_LEN = 4

# any scheme: a Redis URL mistyped as http:// still carries the password
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*"
# scheme://<userinfo up to the last '@' before whitespace or a quote>@: greedy, so a
# password holding '@', '/', '?' or '#' is masked whole (more, at worst: never less)
_USERINFO = re.compile(rf"(?i)(\b{_SCHEME}://)([^\s'\"<>]*)@")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|auth)=)[^&#\s'\"<>]*")
_secrets: set[str] = set()


def remember(secret: str | None) -> None:
    """Mask this secret (and its percent-encoded forms) wherever it appears from now on."""
    if not secret or len(secret) < MIN_SECRET_LEN:
        return
    _secrets.update({secret, urllib.parse.quote(secret, safe=""),
                     urllib.parse.quote_plus(secret, safe="")})


def remember_url(url: str | None) -> None:
    """Remember the password of a Redis URL (in its userinfo or ?password=)."""
    if not url:
        return
    for match in _USERINFO.finditer(url):
        user, sep, password = match.group(2).partition(":")
        secret = password if sep else user
        remember(secret)
        remember(urllib.parse.unquote(secret))
    for match in _QUERY_SECRET.finditer(url):
        value = url[match.end(1):match.end()]
        remember(value)
        remember(urllib.parse.unquote_plus(value))


def remember_environment() -> None:
    """Remember the Redis password the chart hands over from its Secret
    (PODQ_REDIS_PASSWORD) and the one in PODQ_REDIS_URL."""
    remember(os.environ.get("PODQ_REDIS_PASSWORD"))
    remember_url(os.environ.get("PODQ_REDIS_URL"))


def _mask_userinfo(match: re.Match[str]) -> str:
    # user:password keeps the user; a lone part (redis://secret@host) may be the password
    user, sep, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user + sep if sep else ''}{MASK}@"


def redact(text: str) -> str:
    """text with every Redis URL password and every remembered secret masked."""
    if not text:
        return text
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)  # first: may hold '@'
    text = _USERINFO.sub(_mask_userinfo, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Formats each record's message once and stores it redacted (args cleared)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave the record to logging's own report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_logging_filter(*names: str) -> None:
    """Put a RedactingFilter on every handler of the root logger and of the loggers
    named (kopf posts Events from the records of "kopf.objects" through its own
    handler there), and remember the passwords of the environment."""
    remember_environment()
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in names)):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
