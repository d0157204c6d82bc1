"""The abort-on-delete finalizer: set before the job is enqueued, never dropping another
controller's entry. Real API server, real Redis, the real operator."""

from __future__ import annotations

import pytest
from operator_harness import (
    GROUP,
    VERSION,
    Harness,
    eventually,
)

from podq.operator.kube import add_job_finalizer
from podq.operator.names import JOB_FINALIZER, job_key

OTHER = "other.example/keep"


async def finalizers(harness: Harness, name: str) -> list[str]:
    body = await harness.get_job(name)
    assert body is not None
    return list(body["metadata"].get("finalizers") or ())


async def test_adding_to_an_empty_list_never_replaces_another_controllers_entry(
    harness: Harness,
) -> None:
    await harness.create_job("shared", "noop")
    seen: list[str] = []  # what the operator saw: no finalizers yet
    # another controller adds its own meanwhile
    await harness.custom.patch_namespaced_custom_object(
        GROUP, VERSION, harness.namespace, "jobs", "shared",
        [{"op": "add", "path": "/metadata/finalizers", "value": [OTHER]}],
        _content_type="application/json-patch+json")
    assert not await add_job_finalizer(harness.custom, harness.namespace, "shared", seen,
                                       JOB_FINALIZER)
    assert await finalizers(harness, "shared") == [OTHER]
    # with the list it now sees, it appends
    assert await add_job_finalizer(harness.custom, harness.namespace, "shared", [OTHER],
                                   JOB_FINALIZER)
    assert await finalizers(harness, "shared") == [OTHER, JOB_FINALIZER]
    # an empty list seen right: set
    await harness.create_job("alone", "noop")
    assert await add_job_finalizer(harness.custom, harness.namespace, "alone", [],
                                   JOB_FINALIZER)
    assert await finalizers(harness, "alone") == [JOB_FINALIZER]
    for name in ("shared", "alone"):  # let the namespace go
        await harness.custom.patch_namespaced_custom_object(
            GROUP, VERSION, harness.namespace, "jobs", name,
            [{"op": "remove", "path": "/metadata/finalizers"}],
            _content_type="application/json-patch+json")


@pytest.mark.timeout(180)
async def test_jobs_deleted_the_moment_they_are_enqueued_never_run(harness: Harness) -> None:
    """The operator is SIGKILLed as soon as the first jobs reach Redis and every Job is
    deleted while it is down: each job in Redis must have been guarded by the finalizer,
    so the next operator aborts it; none stays runnable."""
    count = 40
    operator = harness.start_operator()
    uids = {}
    for index in range(count):
        made = await harness.create_job(f"gone-{index:02d}", "count_run")
        uids[made["metadata"]["name"]] = made["metadata"]["uid"]
    queue = harness.queue()
    keys = {name: job_key(harness.namespace, name, uid) for name, uid in uids.items()}

    async def some_enqueued() -> bool:
        jobs = await queue.jobs(list(keys.values()))
        return any(job is not None for job in jobs)
    await eventually(some_enqueued, within=60, what="the first jobs in Redis", interval=0.01)
    operator.kill()
    for name in keys:
        await harness.delete_job(name)
    harness.start_operator()

    async def all_gone() -> bool:
        return not await harness.list_jobs()
    await eventually(all_gone, within=60, what="every deleted Job to be released")
    jobs = await queue.jobs(list(keys.values()))
    runnable = [job.key for job in jobs
                if job is not None and job.status.value not in ("aborted", "aborting")]
    assert runnable == [], "deleted Jobs whose job can still run"
    assert sum(job is not None for job in jobs) >= 1

