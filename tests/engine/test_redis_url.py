"""Where commands take their Redis URL from, and the chart's raw password made safe."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from podq.redis_url import DEFAULT_REDIS_URL, encode_password, redis_url


def test_explicit_then_environment_then_default() -> None:
    env = {"PODQ_REDIS_URL": "redis://from-env:6379/1"}
    assert redis_url("redis://given:1/0", env) == "redis://given:1/0"
    assert redis_url(None, env) == "redis://from-env:6379/1"
    assert redis_url(None, {}) == DEFAULT_REDIS_URL


@pytest.mark.parametrize("user", ["", "podq-emails"])
@pytest.mark.parametrize("password", ["p/ss@w:rd", "a%2Fb?c#d&e=f", "plain"])
def test_a_raw_password_from_the_chart_is_percent_encoded(user: str, password: str) -> None:
    raw = f"rediss://{user}:{password}@redis.example:6380/2?ssl_cert_reqs=required"
    url = redis_url(None, {"PODQ_REDIS_URL": raw, "PODQ_REDIS_PASSWORD": password})
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("redis.example", 6380, "/2")
    assert parts.username == user or (not user and not parts.username)
    assert unquote(parts.password or "") == password
    assert parts.query == "ssl_cert_reqs=required"


def test_urls_without_the_raw_password_are_left_as_they_are() -> None:
    encoded = "redis://:p%2Fss@host:6379/0"
    assert encode_password(encoded, "p/ss") == encoded
    assert encode_password("redis://host:6379/0", "secret") == "redis://host:6379/0"
    assert encode_password("unix:///run/redis.sock", "secret") == "unix:///run/redis.sock"
    assert encode_password("redis://:x@host/0", None) == "redis://:x@host/0"
