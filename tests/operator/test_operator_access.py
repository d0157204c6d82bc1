"""Queue grants (podq.operator.access): pure, no servers."""

from __future__ import annotations

import pytest

from podq.operator.access import QueueAccess


def test_explicit_grants_allow_only_the_granted_namespaces() -> None:
    access = QueueAccess.parse(["emails=team-a,team-b", "default=podq-system", "shared=*"])
    assert not access.open
    assert access.allows("team-a", "emails") and access.allows("team-b", "emails")
    assert not access.allows("team-c", "emails")
    assert not access.allows("team-a", "default")
    assert not access.allows("team-a", "unheard-of")
    assert access.allows("anyone", "shared")
    reason, message = access.refusal("team-c", "emails")
    assert reason == "QueueNotAllowed"
    assert "spec.queue" in message and "team-c" in message and "'emails'" in message
    assert "shared" in message  # the queues it may use
    assert access.refusal("team-a", "emails") is None


def test_grants_of_one_queue_add_up() -> None:
    access = QueueAccess.parse(["q=a", "q=b"])
    assert access.allows("a", "q") and access.allows("b", "q")


def test_without_grants_access_is_open_unless_explicit() -> None:
    assert QueueAccess.parse([]).open
    assert QueueAccess.parse([]).allows("x", "y")
    closed = QueueAccess.parse([], "explicit")
    assert not closed.open and not closed.allows("x", "default")
    assert QueueAccess.parse(["q=a"], "open").allows("b", "other")


@pytest.mark.parametrize("spec", ["q", "q=", "=a", "q{x}=a", "q= , ", "q\n=a"])
def test_malformed_grants_are_refused_with_the_flag_named(spec: str) -> None:
    with pytest.raises(ValueError, match="--allow-queue"):
        QueueAccess.parse([spec])


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="--queue-access"):
        QueueAccess.parse([], "closed")
