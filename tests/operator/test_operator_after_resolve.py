"""spec.after resolved against the resources the operator sees (podq.operator.after)."""

from __future__ import annotations

from typing import Any

from podq.operator.after import (
    left_dependencies_behind,
    resolve,
    resolve_lost,
    waiting_status,
)
from podq.operator.registry import JobRegistry


def observe(registry: JobRegistry, name: str, spec: dict[str, Any] | None = None,
            status: dict[str, Any] | None = None, namespace: str = "ns") -> Any:
    body = {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}"},
            "spec": {"function": "noop", **(spec or {})}, "status": status or {}}
    return registry.observe(body)[0]


def test_names_become_the_job_keys_of_enqueued_resources() -> None:
    registry = JobRegistry()
    a = observe(registry, "a", status={"status": "queued", "jobKey": "ns/a/uid-ns-a"})
    c = observe(registry, "c", {"after": ["a", "b"]})
    found = resolve(c, registry)
    assert found.waiting == ["Job b does not exist"] and found.refusal is None
    b = observe(registry, "b")  # exists, not enqueued yet
    assert resolve(c, registry).waiting == ["Job b is not enqueued yet"]
    b.status = {"status": "queued", "jobKey": b.key}
    assert resolve(c, registry).keys == [a.key, b.key]
    a.status = {"status": "complete", "jobKey": a.key}  # done: nothing left to wait for
    assert resolve(c, registry).keys == [b.key]
    b.status = {"status": "aborted", "jobKey": b.key}
    assert resolve(c, registry).refusal[0] == "DependencyFailed"
    registry.forget(b.uid)
    assert resolve(c, registry).waiting == ["Job b does not exist"]


def test_other_namespace_and_other_queue() -> None:
    registry = JobRegistry()
    observe(registry, "a", status={"status": "queued", "jobKey": "x"}, namespace="other")
    c = observe(registry, "c", {"after": ["a"]})
    assert resolve(c, registry).waiting == ["Job a does not exist"]
    observe(registry, "a", {"queue": "q2"}, {"status": "queued", "jobKey": "y"})
    assert resolve(c, registry).refusal[0] == "DependencyInOtherQueue"


def test_waiting_status_has_no_job_key() -> None:
    status = waiting_status(["Job b does not exist"], generation=1, previous={}, now_s=0.0)
    assert "jobKey" not in status and "status" not in status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WaitingForDependencies"
    assert "Job b does not exist" in ready["message"]


def test_a_lost_job_waits_again_only_if_it_was_waiting() -> None:
    registry = JobRegistry()
    observe(registry, "a", status={"status": "queued", "jobKey": "ns/a/uid-ns-a"})
    waiting = waiting_status(["x"], generation=1, previous={}, now_s=0.0)
    c = observe(registry, "c", {"after": ["a"]},
                {**waiting, "status": "queued", "jobKey": "ns/c/uid-ns-c"})
    assert not left_dependencies_behind(c.status)
    assert resolve_lost(c, registry).keys == ["ns/a/uid-ns-a"]
    for past in ({"status": "active"}, {"attempts": 1}, {"startedTime": "2026-01-01T00:00:00Z"},
                 {"conditions": [{"type": "Ready", "reason": "ConcurrencyLimited"}]}):
        c.status = {**waiting, "status": "queued", "jobKey": c.key, **past}
        assert left_dependencies_behind(c.status)
        assert resolve_lost(c, registry).keys == []


def test_a_cycle_through_waiting_jobs_is_refused_naming_it() -> None:
    registry = JobRegistry()
    a = observe(registry, "a", {"after": ["x", "b"]})
    observe(registry, "b", {"after": ["c"]})
    c = observe(registry, "c", {"after": ["d"]})
    assert resolve(a, registry).refusal is None  # d does not exist: a chain, waiting
    d = observe(registry, "d", {"after": ["a"]})
    refusal = resolve(a, registry).refusal
    assert refusal[0] == "DependencyCycle" and refusal[1].endswith("a -> b -> c -> d -> a")
    assert resolve(c, registry).refusal[1].endswith("c -> d -> a -> b -> c")
    d.status = {"status": "queued", "jobKey": d.key}  # enqueued: it waits for no one now
    assert resolve(a, registry).refusal is None
