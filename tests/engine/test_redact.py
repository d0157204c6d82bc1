"""podq.redact: the one redaction of Redis passwords, in every URL form."""

from __future__ import annotations

import logging
import urllib.parse

import pytest

from podq.redact import RedactingFilter, redact, remember_url

PASSWORD = "pa/ss@wo%2Frd:x"
ENC = urllib.parse.quote(PASSWORD, safe="")


@pytest.mark.parametrize("text", [
    f"redis://:{ENC}@127.0.0.1:6379/0",
    f"redis://user:{ENC}@host/0",
    f"redis://user:{PASSWORD}@host/0",  # unencoded: '/', '@', ':' inside
    f"rediss://:{ENC}@host:6380/1",
    f"unix://:{ENC}@/var/run/redis.sock?db=0",
    f"unix:///var/run/redis.sock?db=0&password={ENC}",
    f"redis://host:6379/0?password={PASSWORD}",
    f"error connecting to REDIS://:{ENC}@h:1/0, giving up",
    f"'redis://:{ENC}@h:1/0'",
])
def test_no_form_of_a_redis_url_keeps_its_password(text: str) -> None:
    masked = redact(text)
    for secret in (PASSWORD, ENC, "pa/ss", "wo%2Frd"):
        assert secret not in masked, masked
    assert "***" in masked


def test_remembered_secrets_are_masked_anywhere_and_urls_without_one_are_kept() -> None:
    remember_url(f"redis://:{ENC}@h:1/0")
    assert redact(f"AUTH {PASSWORD} failed ({ENC})") == "AUTH *** failed (***)"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    assert redact("redis://user@h/0") == "redis://***@h/0"


def test_the_logging_filter_masks_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connect %s failed", (
        f"redis://:{ENC}@h/0",), None)
    try:
        raise RuntimeError(f"redis://u:{ENC}@h")
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert ENC not in text and "***" in text


def test_the_chart_password_from_its_secret_is_masked_in_every_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chart hands the Secret's password over as PODQ_REDIS_PASSWORD (and inserts
    it, unencoded, in PODQ_REDIS_URL); kopf posts Events through a handler of its own
    logger "kopf.objects": both are covered."""
    monkeypatch.setenv("PODQ_REDIS_PASSWORD", "from-the-Secret/@x")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))
    keep = Keep()
    poster = logging.getLogger("podq.test.poster")
    poster.addHandler(keep)
    poster.propagate = False
    try:
        from podq.redact import install_logging_filter
        install_logging_filter("podq.test.poster")
        poster.warning("handler failed: AUTH %s", "from-the-Secret/@x")
    finally:
        poster.removeHandler(keep)
    assert records == ["handler failed: AUTH ***"]
