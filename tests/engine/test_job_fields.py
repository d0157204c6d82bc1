"""Job fields are declared once (podq.job.JOB_FIELDS) and whether the caller chose a
field is data: an explicit timeout of 10 is not mistaken for "no choice"."""

from __future__ import annotations

import asyncio
import dataclasses

from engine_helpers import Workers

from podq import CronJob, Job, Queue, Status
from podq.cli import build_parser
from podq.cli_enqueue import ENQUEUE_OPTIONS
from podq.job import CRON_FIELDS, JOB_FIELDS, STORED_FIELDS
from podq.queue.store import job_hash


async def naps(ctx: dict, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"


def test_choices_are_recorded_whatever_the_value() -> None:
    assert Job("f", timeout=10).chose("timeout")
    assert Job("f", None, None, "k", 10).chose("timeout")  # positionally too
    assert not Job("f").chose("timeout")
    assert not Job("f", timeout=20).chose("heartbeat")
    later = Job("f")
    later.timeout = 30  # set after construction: a value other than the default is a choice
    assert later.chose("timeout")
    copy = Job("g")
    copy.replace(Job("f", timeout=10))
    assert copy.chose("timeout")


async def test_an_explicit_timeout_of_10_beats_the_worker_default(
    queue: Queue, workers: Workers
) -> None:
    """The worker's default (1 s) applies only where no timeout was chosen: each way of
    choosing 10 keeps 10 and lets a 1.5 s job complete."""
    await workers.start(queue, [naps], timeout=1)
    nap = {"seconds": 1.5}
    chosen = [
        await queue.enqueue(Job("naps", kwargs=nap, timeout=10)),
        await queue.enqueue("naps", timeout=10, **nap),
        *await queue.enqueue_many([Job("naps", kwargs=nap, key="many", timeout=10)]),
    ]
    unchosen = await queue.enqueue(Job("naps", kwargs=nap))
    assert None not in chosen and unchosen is not None
    for job in (*chosen, unchosen):
        await job.refresh(until_complete=15)
    assert [(j.status, j.timeout) for j in chosen] == [(Status.COMPLETE, 10)] * 3
    assert (unchosen.status, unchosen.timeout) == (Status.FAILED, 1)
    assert "exceeded its timeout of 1s" in (unchosen.error or "")


async def test_the_choice_survives_the_round_trip_through_redis(queue: Queue) -> None:
    for job, chosen in ((Job("f", key="a", timeout=10), True), (Job("f", key="b"), False)):
        await queue.enqueue(job)
        stored = await queue.job(job.key)
        assert stored is not None and stored.chose("timeout") is chosen
        assert queue.copy(stored).chose("timeout") is chosen
    raw = await queue.redis.hgetall(queue.job_id("a"))
    # a new hash holds every field the caller can set; the framework's own fields
    # (attempts, started, error...) only once they leave their empty default
    caller = {f.name for f in STORED_FIELDS if f.use.caller}
    framework = {f.name for f in STORED_FIELDS if not f.use.caller}
    assert caller and framework
    held = {k.decode() for k in raw} - {"job", "tdef", "jlen", "enqueue_id"}
    # status queued, when it was enqueued, and when it became ready (enqueue.lua stamps
    # it): the ones set so far
    assert caller <= held and held - caller == {"status", "queued", "ready_since"}


def test_the_hash_encoding_covers_every_stored_field_once() -> None:
    pairs = job_hash(Job("f", timeout=10, heartbeat=3, priority=-2), "{}")
    names = pairs[::2]
    assert len(names) == len(set(names))
    values = dict(zip(names, pairs[1::2], strict=True))
    assert (values["timeout"], values["heartbeat"], values["priority"]) == (10, 3, -2)
    assert values["tdef"] == "0" and values["status"] == "new"


def test_the_cli_takes_every_field_declared_for_it() -> None:
    sample = {int: "7", float: "0.5", str: "x"}
    argv = ["enqueue", "f"]
    for field in ENQUEUE_OPTIONS:
        argv += ["--" + field.name.replace("_", "-"),
                 "+5" if field.name == "scheduled" else sample[field.type]]
    args = build_parser().parse_args(argv)
    assert {f.name for f in ENQUEUE_OPTIONS} == {"key", "timeout", "heartbeat", "retries",
                                                 "ttl", "retry_delay", "scheduled", "priority"}
    assert all(getattr(args, f.name) is not None for f in ENQUEUE_OPTIONS)


def test_cron_jobs_set_exactly_the_fields_declared_for_them() -> None:
    own = {"function", "cron", "unique"}
    assert {f.name for f in dataclasses.fields(CronJob)} - own == set(CRON_FIELDS)
    assert all(JOB_FIELDS[name].use.caller for name in CRON_FIELDS)
