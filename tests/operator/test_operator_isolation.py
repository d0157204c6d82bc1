"""What one bad resource can do to the operator's pure functions: nothing but its own
refusal, naming the field (the operator-side checks behind the CRD's bounds, for an
older CRD or a value the schema cannot express)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from podq import Queue
from podq.job import BRIEF_FIELDS, Status
from podq.operator import safejson
from podq.operator.isolation import CorruptRecord, read_jobs
from podq.operator.jobspec import InvalidJobSpec, engine_fields
from podq.operator.jobview import JobView, view_of
from podq.operator.status import job_status
from podq.operator.status_values import cap_result, rfc3339


def deep_text(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


@pytest.mark.parametrize(("spec", "reason", "field"), [
    ({"scheduled": "0000-01-01T00:00:00Z"}, "InvalidScheduled", "spec.scheduled"),
    ({"scheduled": "9999-12-31T23:59:59-23:59"}, "InvalidScheduled", "spec.scheduled"),
    ({"scheduled": "1969-12-31T23:59:59Z"}, "InvalidScheduled", "spec.scheduled"),
    ({"retryDelay": 1e12}, "InvalidSpec", "spec.retryDelay"),
    ({"retryDelay": math.nan}, "InvalidSpec", "spec.retryDelay"),
    ({"ttl": 10**16}, "InvalidSpec", "spec.ttl"),
    ({"ttlSecondsAfterFinished": 10**16}, "InvalidSpec", "spec.ttlSecondsAfterFinished"),
    ({"retryBackoff": 1e12}, "InvalidSpec", "spec.retryBackoff"),
    ({"retryBackoff": math.inf}, "InvalidSpec", "spec.retryBackoff"),
    ({"kwargs": json.loads(deep_text(40))}, "KwargsTooDeep", "spec.kwargs"),
    ({"meta": json.loads(deep_text(40))}, "MetaTooDeep", "spec.meta"),
    ({"meta": {"m": "x" * (1 << 20)}}, "MetaTooLarge", "spec.meta"),
])
def test_bad_values_are_refused_naming_the_field(spec: dict, reason: str, field: str) -> None:
    with pytest.raises(InvalidJobSpec) as refused:
        engine_fields({"function": "f", **spec}, "k")
    assert refused.value.reason == reason
    assert field in refused.value.message


def test_deep_json_decodes_cut_to_a_bounded_depth() -> None:
    text = '{"spec":{"kwargs":' + deep_text(10_000) + ',"s":"[[[{{{\\""}}'
    value = safejson.loads(text)
    assert safejson.depth(value, 1000) == safejson.MAX_DEPTH
    assert value["spec"]["s"] == '[[[{{{"'  # brackets inside strings are not nesting
    found = value
    while isinstance(found, dict):
        found = found.get("a", found.get("spec", found.get("kwargs")))
    assert found == safejson.TOO_DEEP
    shallow = json.dumps({"items": [{"a": [i, {"b": []}]} for i in range(500)]})
    assert safejson.loads(shallow) == json.loads(shallow)
    assert safejson.loads(shallow.encode()) == json.loads(shallow)


def test_status_values_are_valid_bounded_json() -> None:
    result, cut = cap_result({"nan": math.nan, "inf": -math.inf, "ok": 1.5})
    assert result == {"nan": "NaN", "inf": "-Infinity", "ok": 1.5} and not cut
    deep: list = []
    for _ in range(300):
        deep = [deep]
    shown, cut = cap_result(deep)
    assert cut and isinstance(shown, str) and "nested more than 32 levels" in shown
    assert rfc3339(1e12 + 1e9) == "9999-12-31T23:59:59Z"  # a retry 31,000 years away
    assert rfc3339(math.inf) == "9999-12-31T23:59:59Z"

    class Garbage:
        status = "queued"
        attempts = "many"
        progress = math.nan
        scheduled = 1e13
        worker_id = "w"
    status = job_status(view_of(Garbage()), key="k", queue="q", generation=1, previous=None,
                        now_s=0)
    json.dumps(status, allow_nan=False)  # the API server takes it
    assert status["attempts"] == 0 and status["progress"] == 0.0


def test_a_status_reads_only_brief_fields() -> None:
    """What a Job resource's status shows (JobView) is all read briefly (podq.job
    FieldUse.brief), so the operator's status reads need no job's kwargs or meta."""
    shown = {f.name.replace("worker", "worker_id") for f in dataclasses.fields(JobView)}
    assert shown <= {f.name for f in BRIEF_FIELDS}
    assert not {"kwargs", "meta", "depends_on"} & {f.name for f in BRIEF_FIELDS}


async def test_read_jobs_gives_statuses_without_arguments_and_marks_corrupt_records(
        redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="brief")
    big = {"v": [[i % 10] for i in range(10_000)]}
    try:
        for key in ("a", "b"):
            await queue.enqueue("f", key=key, kwargs=big, meta={"m": 1}, retries=3)
        await queue.redis.hset(queue.job_id("b"), "job", "[1, 2]")
        good, bad, gone = await read_jobs(queue, ["a", "b", "gone"])
        assert good.kwargs is None and good.meta == {}
        assert view_of(good) == view_of(await queue.job("a"))
        assert view_of(good).retries == 3 and view_of(good).status == Status.QUEUED
        assert isinstance(bad, CorruptRecord) and queue.job_id("b") in bad.message
        assert gone is None
    finally:
        await queue.disconnect()
