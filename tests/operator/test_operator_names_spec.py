"""Naming and spec translation of the operator (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from podq import Job
from podq.operator.jobspec import MAX_KWARGS_BYTES, InvalidJobSpec, engine_fields, kwargs_size
from podq.operator.names import cron_child_name, job_key


def test_job_key_is_deterministic_and_changes_with_uid() -> None:
    assert job_key("ns", "a", "u1") == job_key("ns", "a", "u1") == "ns/a/u1"
    assert job_key("ns", "a", "u2") != job_key("ns", "a", "u1")
    assert job_key("ns", "a", "u1", spec_key="mine") == "ns/mine"


def test_job_key_is_scoped_to_the_namespace() -> None:
    # the same spec.key in two namespaces is two jobs; a key naming another namespace
    # stays inside its own; no spec key can produce another namespace's derived key
    assert job_key("team-a", "x", "u1", "nightly") != job_key("team-b", "y", "u2", "nightly")
    assert job_key("team-b", "x", "u1", "team-a/nightly") == "team-b/team-a/nightly"
    assert job_key("team-b", "x", "u1", "a/u9").startswith("team-b/")
    assert job_key("team-a", "x", "u1", None) == "team-a/x/u1"


def test_job_key_keeps_the_old_form_for_a_job_enqueued_before_the_upgrade() -> None:
    # status.jobKey == spec.key: enqueued by an operator that used spec.key as it was
    assert job_key("ns", "a", "u1", "mine", status_key="mine") == "mine"
    # a status key of another form is not taken: only the legacy form of its own spec.key
    assert job_key("ns", "a", "u1", "mine", status_key="other/mine") == "ns/mine"
    assert job_key("ns", "a", "u1", None, status_key="victim") == "ns/a/u1"
    # a bare key with a '/' is another namespace's job key: never followed, even when
    # the status (written by a tenant with jobs/status rights) claims it
    assert job_key("ns", "a", "u1", "victim/nightly", status_key="victim/nightly") == \
        "ns/victim/nightly"


def test_cron_child_name_is_one_per_slot() -> None:
    slot = datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC)
    assert cron_child_name("nightly", slot) == f"nightly-{int(slot.timestamp())}"
    assert cron_child_name("nightly", slot.replace(second=6)) != cron_child_name("nightly", slot)
    assert len(cron_child_name("x" * 52, slot)) <= 63


def test_engine_fields_maps_camel_case_and_time() -> None:
    spec = {
        "function": "add",
        "kwargs": {"a": 1},
        "queue": "q",
        "timeout": 5,
        "retries": 3,
        "retryDelay": 0.5,
        "retryBackoff": 4,
        "scheduled": "2030-01-01T00:00:00Z",
        "meta": {"team": "x"},
        "priority": 2,
        "ttl": 0,
        "heartbeat": 1,
    }
    fields = engine_fields(spec, "ns/n/u")
    assert fields == {
        "key": "ns/n/u",
        "function": "add",
        "kwargs": {"a": 1},
        "timeout": 5,
        "heartbeat": 1,
        "retries": 3,
        "ttl": 0,
        "retry_delay": 0.5,
        "retry_backoff": 4.0,
        "meta": {"team": "x"},
        "priority": 2,
        "scheduled": int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()),
    }
    assert engine_fields({"function": "f", "retryBackoff": True}, "k")["retry_backoff"] is True


def test_a_resource_without_timeout_leaves_the_choice_to_the_worker() -> None:
    unset = Job(**engine_fields({"function": "f"}, "k"))
    chosen = Job(**engine_fields({"function": "f", "timeout": 10}, "k"))
    assert not unset.chose("timeout")
    assert chosen.chose("timeout") and chosen.timeout == 10


def test_oversized_kwargs_are_refused_with_the_field_named() -> None:
    spec = {"function": "f", "kwargs": {"blob": "x" * MAX_KWARGS_BYTES}}
    assert kwargs_size(spec) > MAX_KWARGS_BYTES
    with pytest.raises(InvalidJobSpec) as refused:
        engine_fields(spec, "k")
    assert refused.value.reason == "KwargsTooLarge"
    assert "spec.kwargs" in refused.value.message


@pytest.mark.parametrize("backoff", ["fast", -1, [1], {"a": 1}])
def test_bad_retry_backoff_is_refused(backoff: object) -> None:
    with pytest.raises(InvalidJobSpec) as refused:
        engine_fields({"function": "f", "retryBackoff": backoff}, "k")
    assert "spec.retryBackoff" in refused.value.message


def test_short_ttl_is_raised_so_the_outcome_stays_readable() -> None:
    assert engine_fields({"function": "f", "ttl": 5}, "k")["ttl"] == 60
    assert engine_fields({"function": "f", "ttl": 0}, "k")["ttl"] == 0
    assert engine_fields({"function": "f", "ttl": 600}, "k")["ttl"] == 600


def test_registry_compacts_finished_resources_and_ignores_stale_events() -> None:
    from podq.operator.registry import JobRegistry

    body = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "generation": 1},
            "spec": {"function": "f", "kwargs": {"big": "x" * 1000}, "queue": "q"},
            "status": {"status": "active", "attempts": 1}}
    registry = JobRegistry()
    resource, new = registry.observe(body)
    assert new and resource.spec["kwargs"] and registry.for_key("q", "ns/j/u") == [resource]
    finished = {**body, "status": {"status": "complete", "attempts": 1, "result": [1] * 100,
                                   "completedTime": "2030-01-01T00:00:00Z"}}
    registry.observe(finished)
    assert resource.spec == {"queue": "q"}
    assert resource.status == {"status": "complete", "attempts": 1,
                               "completedTime": "2030-01-01T00:00:00Z"}
    registry.observe(body)  # a stale event from before the finish
    assert resource.status["status"] == "complete"
    assert registry.forget("u") is resource and registry.for_key("q", "ns/j/u") == []


def test_registry_uses_a_queue_while_a_resource_of_it_is_known() -> None:
    """What the operator's queue pool asks before it releases a queue."""
    from podq.operator.registry import JobRegistry

    def body(name: str, queue: str, key: str | None = None) -> dict:
        spec = {"function": "f", "queue": queue, **({"key": key} if key else {})}
        return {"metadata": {"namespace": "ns", "name": name, "uid": name}, "spec": spec}

    registry = JobRegistry()
    for name, queue in (("a", "q1"), ("b", "q1"), ("c", "q2")):
        registry.observe(body(name, queue, key="same"))
    registry.observe(body("a", "q1", key="same"))  # seen again: counted once
    assert registry.uses("q1") and registry.uses("q2") and not registry.uses("q3")
    registry.forget("a")
    assert registry.uses("q1")  # b is left
    registry.forget("b")
    registry.forget("b")  # forgotten twice: nothing more to count
    assert not registry.uses("q1") and registry.uses("q2")
    registry.forget("c")
    assert registry.per_queue == {}


def test_registry_keeps_no_arguments_of_an_enqueued_resource() -> None:
    """Once its job is in Redis (status.jobKey) a resource's kwargs and meta are left out:
    parsed, 64 KiB of small values take ~800 KiB, and a tenant may keep hundreds of such
    Jobs queued. Its other fields stay (spec.after, timeout, key: still read)."""
    from podq.operator.registry import JobRegistry

    spec = {"function": "f", "kwargs": {f"k{i}": [i] for i in range(4000)},
            "meta": {"m": 1}, "queue": "q", "timeout": 30, "after": ["a"]}
    body = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "generation": 1,
                         "resourceVersion": "1"}, "spec": spec, "status": {}}
    registry = JobRegistry()
    resource, _ = registry.observe(body)
    assert resource.spec == spec and not resource.arguments_dropped  # not enqueued yet
    queued = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"},
              "status": {"status": "queued", "jobKey": "ns/j/u"}}
    registry.observe(queued)
    assert resource.spec == {"function": "f", "queue": "q", "timeout": 30, "after": ["a"]}
    assert resource.arguments_dropped
    restarted, _ = JobRegistry().observe(queued)  # an operator starting finds it enqueued
    assert "kwargs" not in restarted.spec and restarted.arguments_dropped


def test_registry_orders_statuses_by_resource_version() -> None:
    """With two operators, a status patch computed from an older read of Redis can land
    after the final one: the registry must show it, or no one writes the final again."""
    from podq.operator.registry import JobRegistry

    def body(rv: str, status: dict) -> dict:
        return {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "generation": 1,
                             "resourceVersion": rv},
                "spec": {"function": "f", "queue": "q"}, "status": status}

    registry = JobRegistry()
    resource, _ = registry.observe(body("10", {"status": "queued"}))
    assert resource.record({"status": "complete", "attempts": 1}, "12")  # our patch
    registry.observe(body("11", {"status": "active"}))  # an event trailing our patch
    assert resource.status["status"] == "complete"
    registry.observe(body("13", {"status": "queued"}))  # the other operator's late patch
    assert resource.status["status"] == "queued" and resource.resource_version == "13"
    assert not resource.record({"status": "complete"}, "12")  # older than what we hold
