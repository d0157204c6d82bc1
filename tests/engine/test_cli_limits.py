"""`podq worker --limit NAME=SPEC` (docs/limits.md): limits set from the command line, as
the chart's `workers.limits` sets them, on the real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess

import pytest
from engine_helpers import HERE, PODQ, output, start_worker_process, wait_for

from podq import Queue, Status
from podq.limit_specs import InvalidLimitSpec, format_limit, parse_limit, parse_limits
from podq.queue import QUEUE_LIMIT, Limit

SETTINGS = "podq_test_settings.settings"  # add and slow; concurrency 2


def test_specs_read_as_limits() -> None:
    assert parse_limits(["charge_card=concurrency:3", "send_email=rate:100/60",
                         "*=concurrency:50", "api=concurrency:5, rate:10/1m,burst:3",
                         "tick=rate:2/0.5"]) == {
        "charge_card": Limit(concurrency=3), "send_email": Limit(rate=100, per=60),
        QUEUE_LIMIT: Limit(concurrency=50), "api": Limit(concurrency=5, rate=10, per=60, burst=3),
        "tick": Limit(rate=2, per=0.5)}
    assert parse_limit("hourly=rate:7/2h") == ("hourly", Limit(rate=7, per=7200))
    for name, limit in [("a", Limit(concurrency=3)), ("b", Limit(rate=5, per=0.25, burst=2)),
                        (QUEUE_LIMIT, Limit(concurrency=1, rate=9, per=90))]:
        assert parse_limit(format_limit(name, limit)) == (name, limit)


@pytest.mark.parametrize(("text", "says"), [
    ("charge_card", "expected NAME=SPEC"),
    ("=concurrency:3", "expected NAME=SPEC"),
    ("a=concurrency:0", "concurrency: expected a whole number of 1 or more, got '0'"),
    ("a=concurrency:1.5", "got '1.5'"),
    ("a=concurrency", "unknown part 'concurrency'"),
    ("a=parallel:3", "unknown part 'parallel:3'"),
    ("a=rate:100", "rate: expected N/SECONDS"),
    ("a=rate:100/0", "the period after '/' must be a positive number"),
    ("a=rate:100/1d", "got '1d'"),
    ("a=rate:-1/60", "rate: expected a whole number"),
    ("a=burst:3", "burst needs a rate"),
    ("a=concurrency:1,concurrency:2", "concurrency given twice"),
    ("a,b=concurrency:1", "has a comma"),
    ("a=", "unknown part ''"),
])
def test_bad_specs_say_why(text: str, says: str) -> None:
    with pytest.raises(InvalidLimitSpec) as bad:
        parse_limits([text])
    assert str(bad.value).startswith(f"--limit {text!r}: ") and says in str(bad.value)


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(InvalidLimitSpec, match="a second limit for 'a'"):
        parse_limits(["a=concurrency:1", "a=rate:1/1"])


def podq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODQ, *args], cwd=HERE, capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PODQ_REDIS_URL": ""})


async def test_a_bad_flag_stops_the_worker_before_it_touches_redis(
    queue: Queue, redis_url: str
) -> None:
    await queue.set_limits({"add": Limit(concurrency=7)})
    r = podq("worker", SETTINGS, "--redis-url", redis_url, "--queue", queue.name,
             "--limit", "slow=concurrency:2", "--limit", "add=rate:5")
    assert r.returncode == 2
    assert "--limit 'add=rate:5': rate: expected N/SECONDS such as rate:100/60" in r.stderr
    r = podq("worker", SETTINGS, "--redis-url", redis_url, "--limit", "a=concurrency:1",
             "--no-limits")
    assert r.returncode == 2 and "--no-limits and --limit exclude each other" in r.stderr
    assert await queue.limits() == {"add": Limit(concurrency=7)}  # left as it was


async def test_flags_set_the_queues_limits_and_they_bind(
    queue: Queue, redis_url: str, spawn: list
) -> None:
    await queue.set_limits({"add": Limit(concurrency=7)})  # replaced: the flags say all
    worker = start_worker_process(
        spawn, redis_url, "--queue", queue.name, "--concurrency", "4",
        "--limit", "slow=concurrency:1", "--limit", "*=rate:1000/1s,burst:10",
        "--limit", "slwo=concurrency:2", settings=SETTINGS)

    async def set_by_the_worker() -> bool:
        return await queue.limits() == {"slow": Limit(concurrency=1), "slwo": Limit(
            concurrency=2), QUEUE_LIMIT: Limit(rate=1000, per=1, burst=10)}
    await wait_for(set_by_the_worker, 30)
    jobs = [await queue.enqueue("slow", seconds=0.4) for _ in range(3)]

    async def all_done() -> bool:
        for job in jobs:
            await job.refresh()
        return all(job.status is Status.COMPLETE for job in jobs)
    try:
        await wait_for(all_done, 30)
    except AssertionError:
        raise AssertionError(output(worker)) from None
    runs = sorted((job.started, job.completed) for job in jobs)
    # one at a time though the worker runs 4 at once: each starts after the one before ended
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(runs))
    assert "limit 'slwo': this worker registers no function 'slwo' (a typo?)" in output(worker)
    assert "limit 'slow'" not in output(worker) and "limit '*'" not in output(worker)
    worker.terminate()
    await asyncio.to_thread(worker.wait, 30)
    cleared = start_worker_process(spawn, redis_url, "--queue", queue.name, "--no-limits",
                                   settings=SETTINGS)

    async def no_limits() -> bool:
        return await queue.limits() == {}
    try:
        await wait_for(no_limits, 30)
    except AssertionError:
        raise AssertionError(output(cleared)) from None
