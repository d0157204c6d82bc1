"""The cases of the bad-input catalogue (test_bad_inputs.py), registered in CASES:
manifests, Python API calls, CLI arguments and corrupted or foreign data under a queue's
Redis keys. Each asserts a clear error naming the thing."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from bad_input_stage import ENCODED, IDLE_QUEUE, PASSWORD, SECRET_FORMS, Ctx, fetch
from operator_harness import (
    GROUP,
    KUBE_TESTS,
    PODQ,
    REPO,
    VERSION,
    eventually,
)

from podq import Queue
from podq.errors import InvalidUrlError

Case = Callable[[Ctx], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        assert name not in CASES
        CASES[name] = fn
        return fn
    return register


# -- 1. manifests the API server refuses, naming the field -----------------------------


def _refused(name: str, spec: dict[str, Any], naming: str) -> None:
    async def run(ctx: Ctx) -> None:
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job",
                    "metadata": {"name": ctx.name}, "spec": spec}
        applied = ctx.stage.plane.kubectl("apply", "-n", ctx.stage.poison, "-f", "-",
                                          input=yaml.safe_dump(manifest), check=False)
        assert applied.returncode != 0, f"accepted: {applied.stdout}"
        assert naming in applied.stderr, applied.stderr
    case(f"apply refuses {name}")(run)


_refused("scheduled in year 0", {"function": "noop", "scheduled": "0000-01-01T00:00:00Z"},
         "spec.scheduled")
_refused("scheduled past 9999 in UTC", {"function": "noop",
                                        "scheduled": "9999-12-31T23:59:59-23:59"},
         "spec.scheduled")
_refused("retryDelay 1e12", {"function": "noop", "retryDelay": 1e12}, "spec.retryDelay")
_refused("ttl 1e16", {"function": "noop", "ttl": 10**16}, "spec.ttl")
_refused("ttlSecondsAfterFinished 1e16", {"function": "noop",
                                          "ttlSecondsAfterFinished": 10**16},
         "spec.ttlSecondsAfterFinished")
_refused("timeout of 100 days", {"function": "noop", "timeout": 8640000}, "spec.timeout")
_refused("heartbeat negative", {"function": "noop", "heartbeat": -1}, "spec.heartbeat")
_refused("retries 10^6", {"function": "noop", "retries": 10**6}, "spec.retries")
_refused("priority below -8000", {"function": "noop", "priority": -8001}, "spec.priority")
_refused("function with a newline", {"function": "noop\nrm"}, "spec.function")
_refused("key with a hash tag", {"function": "noop", "key": "a{b}"}, "spec.key")
_refused("key of 600 characters", {"function": "noop", "key": "k" * 600}, "spec.key")
_refused("queue of 64 characters", {"function": "noop", "queue": "q" * 64}, "spec.queue")
_refused("kwargs a string", {"function": "noop", "kwargs": "a=1"}, "spec.kwargs")
_refused("meta a list", {"function": "noop", "meta": [1]}, "spec.meta")


# -- 2. accepted by the API server, marked by the operator ---------------------------
# (the session's API server has no webhook: this is the operator's line of defence, the
# one left when the webhook is down or off; with the chart's webhook, apply refuses the
# spec cases already: tests/kube/test_webhook.py)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _deep_text(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def _marked(name: str, spec: dict[str, Any] | str, reason: str, naming: str) -> None:
    async def run(ctx: Ctx) -> None:
        await (ctx.create_raw(spec) if isinstance(spec, str) else ctx.create(spec))
        body = await ctx.marked("Failed", reason, naming)
        assert body["status"]["status"] == "failed"
    case(f"operator marks {name}")(run)


_marked("kwargs nested 2,000 deep", f'{{"function":"noop","kwargs":{_deep_text(2000)}}}',
        "KwargsTooDeep", "spec.kwargs")
_marked("kwargs nested 9,000 deep", f'{{"function":"noop","kwargs":{_deep_text(9000)}}}',
        "KwargsTooDeep", "spec.kwargs")
_marked("kwargs nested 40 deep", {"function": "echo", "kwargs": {"x": _deep(40)}},
        "KwargsTooDeep", "spec.kwargs")
_marked("meta nested 2,000 deep", f'{{"function":"noop","meta":{_deep_text(2000)}}}',
        "MetaTooDeep", "spec.meta")
_marked("meta of 1 MiB", {"function": "noop", "meta": {"blob": "m" * (1 << 20)}},
        "MetaTooLarge", "spec.meta")
_marked("kwargs of 100 KiB", {"function": "echo", "kwargs": {"blob": "k" * 100_000}},
        "KwargsTooLarge", "spec.kwargs")
_marked("retryBackoff a string", {"function": "noop", "retryBackoff": "fast"},
        "InvalidSpec", "spec.retryBackoff")
_marked("retryBackoff 1e12", {"function": "noop", "retryBackoff": 1e12},
        "InvalidSpec", "spec.retryBackoff")
_marked("retryBackoff an object", {"function": "noop", "retryBackoff": {"a": 1}},
        "InvalidSpec", "spec.retryBackoff")
_marked("function no worker has", {"function": "not_registered_anywhere"},
        "FunctionNotRegistered", "not_registered_anywhere")


@case("functions no worker has, a made-up name each")
async def _made_up_functions(ctx: Ctx) -> None:
    """Each name is the tenant's choice: none becomes a label of the worker's metrics
    (series that would stay for good), all count under one."""
    names = [f"made_up_{ctx.name[-8:]}_{n}" for n in range(3)]
    for n, function in enumerate(names):
        await ctx.create({"function": function}, name=f"{ctx.name}-{n}")
    for n in range(3):
        async def failed(name: str = f"{ctx.name}-{n}") -> bool:
            return ((await ctx.get(name)).get("status") or {}).get("status") == "failed"
        await eventually(failed, within=60, what=f"{ctx.name}-{n} failed")
    text = await asyncio.to_thread(
        fetch, f"http://127.0.0.1:{ctx.stage.worker_metrics_port}/metrics")
    assert 'function="(unregistered)",outcome="failed"' in text
    for function in names:
        assert function not in text, f"{function} is a label of the worker's metrics"


# -- 3. functions whose outcome is not JSON-friendly -----------------------------------


@case("function returning NaN and Infinity")
async def _nan(ctx: Ctx) -> None:
    await ctx.create({"function": "nan_result"})
    body = await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "complete",
                          "complete")
    assert body["status"]["result"] == {"nan": "NaN", "inf": "Infinity"}


@case("result nested 5,000 deep")
async def _deep_result(ctx: Ctx) -> None:
    await ctx.create({"function": "deep_result", "kwargs": {"depth": 5000}})
    body = await ctx.marked("Failed", "JobFailed", "result")
    assert "nested too deeply" in body["status"]["error"], body["status"]["error"]


@case("result nested 300 deep")
async def _deepish_result(ctx: Ctx) -> None:
    await ctx.create({"function": "deep_result", "kwargs": {"depth": 300}})
    body = await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "complete",
                          "complete")
    assert body["status"]["resultTruncated"] is True
    assert "nested more than 32 levels" in body["status"]["result"]


@case("error holding the Redis password in every URL form")
async def _leak(ctx: Ctx) -> None:
    port = ctx.stage.url.rsplit(":", 1)[1]
    text = " ".join([
        ctx.stage.url, f"redis://default:{PASSWORD}@h:{port}", f"rediss://:{ENCODED}@h/1",
        f"redis://h/0?password={ENCODED}&db=0", f"unix://:{ENCODED}@/run/redis.sock",
        f"unix:///run/redis.sock?db=0&password={PASSWORD}", f"auth failed for {PASSWORD}"])
    await ctx.create({"function": "leak", "kwargs": {"text": text}})
    body = await ctx.marked("Failed", "JobFailed", "***")
    assert "***" in body["status"]["error"]


# -- 4. Python API calls -------------------------------------------------------------


def _api(name: str, call: Callable[[Queue], Awaitable[Any]], error: type[Exception],
         naming: str) -> None:
    async def run(ctx: Ctx) -> None:
        queue = Queue.from_url(ctx.stage.url, name="api-cases")
        try:
            with pytest.raises(error) as raised:
                await call(queue)
            assert naming in str(raised.value), raised.value
            for secret in SECRET_FORMS:
                assert secret not in str(raised.value)
        finally:
            await queue.disconnect()
    case(f"python {name}")(run)


_api("enqueue ttl=1e16", lambda q: q.enqueue("noop", ttl=10**16), ValueError, "ttl")
_api("enqueue retry_delay=nan", lambda q: q.enqueue("noop", retry_delay=math.nan),
     ValueError, "retry_delay")
_api("enqueue scheduled=inf", lambda q: q.enqueue("noop", scheduled=math.inf),
     ValueError, "scheduled")
_api("enqueue timeout=-1", lambda q: q.enqueue("noop", timeout=-1), ValueError, "timeout")
_api("enqueue priority=10**9", lambda q: q.enqueue("noop", priority=10**9), ValueError,
     "priority")
_api("enqueue retry_backoff='x'", lambda q: q.enqueue("noop", retry_backoff="x"),
     ValueError, "retry_backoff")
_api("enqueue kwargs holding a set", lambda q: q.enqueue("noop", kwargs={"s": {1}}),
     TypeError, "kwargs['s']")
_api("enqueue kwargs nested 5,000 deep", lambda q: q.enqueue("noop", kwargs=_deep(5000)),
     TypeError, "nested too deeply")
_api("enqueue_many with a ttl of 1e16", lambda q: q.enqueue_many(
    [{"function": "noop"}, {"function": "noop", "ttl": 10**16}]), ValueError, "ttl")


@case("python Queue.from_url with an http URL holding the password")
async def _from_url(ctx: Ctx) -> None:
    with pytest.raises(InvalidUrlError) as raised:
        Queue.from_url(f"http://:{ENCODED}@127.0.0.1/0")
    assert "Invalid url" in str(raised.value) and ENCODED not in str(raised.value)


# -- 5. command line -------------------------------------------------------------------


def _cli(name: str, args: list[str], naming: str) -> None:
    async def run(ctx: Ctx) -> None:
        wrong = ctx.stage.url.replace(ENCODED, "wrong%2Fpass%40")
        argv = [{"URL": ctx.stage.url, "WRONG": wrong}.get(a, a) for a in args]
        done = await asyncio.to_thread(
            subprocess.run, [PODQ, *argv], capture_output=True, text=True, timeout=60,
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(KUBE_TESTS)))
        assert done.returncode != 0, done.stdout
        assert naming in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        for secret in SECRET_FORMS:
            assert secret not in done.stderr + done.stdout
    case(f"cli {name}")(run)


_cli("enqueue --ttl 1e16", ["enqueue", "noop", "--redis-url", "URL", "--ttl", "1e16"],
     "--ttl")
_cli("enqueue --retry-delay nan", ["enqueue", "noop", "--redis-url", "URL", "--no-check",
                                   "--retry-delay", "nan"], "retry_delay")
_cli("enqueue --kwargs nested 5,000 deep", ["enqueue", "noop", "--redis-url", "URL",
                                            "--kwargs", "[" * 5000 + "]" * 5000], "--kwargs")
_cli("enqueue --scheduled tomorrow", ["enqueue", "noop", "--redis-url", "URL",
                                      "--scheduled", "tomorrow"], "--scheduled")
_cli("worker --concurrency abc", ["worker", "operator_worker_settings.settings",
                                  "--concurrency", "abc"], "--concurrency")
_cli("worker --max-disruptions 0", ["worker", "operator_worker_settings.settings",
                                    "--max-disruptions", "0"], "--max-disruptions")
_cli("enqueue with a wrong password", ["enqueue", "noop", "--redis-url", "WRONG"],
     "cannot reach")
_cli("operator --reconcile-interval x", ["operator", "--reconcile-interval", "x"],
     "--reconcile-interval")


# -- 6. corrupted or foreign data under a queue's Redis keys --------------------------


async def _queued_job(ctx: Ctx) -> tuple[aioredis.Redis, str]:
    """A Job on the idle queue, queued in Redis; returns a client and its job hash key."""
    await ctx.create({"function": "noop", "queue": IDLE_QUEUE})
    body = await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "queued",
                          "queued")
    queue = Queue.from_url(ctx.stage.url, name=IDLE_QUEUE)
    key = queue.job_id(body["status"]["jobKey"])
    await queue.disconnect()
    return await ctx.redis(), key


def _corrupt(name: str, damage: Callable[[aioredis.Redis, str], Awaitable[Any]]) -> None:
    async def run(ctx: Ctx) -> None:
        redis, key = await _queued_job(ctx)
        try:
            await damage(redis, key)
            await ctx.marked("Stalled", "CorruptJobRecord", key)
            await ctx.delete_and_wait()  # its finalizer does not hold it forever
        finally:
            await redis.aclose()
    case(f"redis {name}")(run)


_corrupt("job JSON that does not parse", lambda r, k: r.hset(k, "job", "{not json"))
_corrupt("job hash replaced by a string", lambda r, k: _replace_with_string(r, k))
_corrupt("job JSON a list", lambda r, k: r.hset(k, "job", "[1, 2]"))
_corrupt("job JSON with a foreign field", lambda r, k: _foreign_field(r, k))
_corrupt("attempts not a number", lambda r, k: r.hset(k, "attempts", "many"))
_corrupt("status not a status", lambda r, k: r.hset(k, "status", "sideways"))


async def _replace_with_string(redis: aioredis.Redis, key: str) -> None:
    await redis.delete(key)
    await redis.set(key, "not a hash")


async def _foreign_field(redis: aioredis.Redis, key: str) -> None:
    job = json.loads(await redis.hget(key, "job"))
    job["rogue"] = True
    await redis.hset(key, "job", json.dumps(job))


@case("redis a string planted under a new Job's job key before it is applied")
async def _planted_string(ctx: Ctx) -> None:
    """That Job alone is marked, naming the key (it read as the record of a finished
    job under its spec.key, and a ValueError of the status check made it a SyncFailed
    naming nothing); the rest of the pass (the canary) goes on."""
    redis = await ctx.redis()
    queue = Queue.from_url(ctx.stage.url, name=IDLE_QUEUE)
    try:
        key = queue.job_id(f"{ctx.stage.poison}/planted-{ctx.name}")
        await redis.set(key, "not a hash")
        await ctx.create({"function": "noop", "queue": IDLE_QUEUE,
                          "key": f"planted-{ctx.name}"})
        await ctx.marked("Stalled", "CorruptJobRecord", key)
        await ctx.delete_and_wait()
    finally:
        await queue.disconnect()
        await redis.aclose()


@case("redis a job record corrupted before the worker takes it")
async def _corrupt_taken(ctx: Ctx) -> None:
    """The worker fails that job (its record rewritten readable, saying why) and goes on;
    test_bad_input checks that it is still running."""
    queue = Queue.from_url(ctx.stage.url, name="default")
    key = f"python-{ctx.name}"
    try:
        # due in 5 s: the corruption lands before any take (1 s was a window a loaded
        # machine could outlast: the job ran, and its record was corrupted afterwards)
        await queue.enqueue("noop", key=key, scheduled=time.time() + 5.0)
        await queue.redis.hset(queue.job_id(key), "job", "{not json")

        async def failed() -> Any:
            try:
                job = await queue.job(key)
            except ValueError:  # still the corrupt record
                return None
            return job if job is not None and str(job.status) == "failed" else None
        job = await eventually(failed, what=f"{key} failed by the worker")
        assert queue.job_id(key) in job.error and "cannot be read" in job.error
    finally:
        await queue.disconnect()


@case("redis a foreign claim under a new Job's claim key")
async def _foreign_claim(ctx: Ctx) -> None:
    queue = Queue.from_url(ctx.stage.url, name="default")
    try:
        uid_free_key = f"foreign-{ctx.name}"
        await queue.redis.set(queue.keys.operator_claim(uid_free_key), "garbage without-stamp")
        await ctx.create({"function": "noop", "key": uid_free_key})
        await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "complete",
                       "complete despite the foreign claim")
    finally:
        await queue.disconnect()


@case("redis a worker record that is not JSON")
async def _foreign_worker(ctx: Ctx) -> None:
    queue = Queue.from_url(ctx.stage.url, name="default")
    try:
        seconds, _ = await queue.redis.time()
        await queue.redis.zadd(queue.keys.workers, {"rogue": (seconds + 600) * 1000})
        await queue.redis.set(queue.keys.worker("rogue"), "{not json", ex=600)
        workers = await queue.workers()
        assert workers and all(isinstance(w, dict) for w in workers)
    finally:
        await queue.redis.zrem(queue.keys.workers, "rogue")
        await queue.disconnect()


@case("redis garbage on the queue's change channel")
async def _garbage_changes(ctx: Ctx) -> None:
    queue = Queue.from_url(ctx.stage.url, name="default")
    try:
        for garbage in ("", ":", "nocolon", "\xff\xfe", "queued:" + "k" * 10_000):
            await queue.redis.spublish(queue.keys.changes, garbage)
    finally:
        await queue.disconnect()
    await ctx.create({"function": "noop"})
    await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "complete", "complete")




# -- 7. a tenant writing the operator's bookkeeping on its own resources ---------------


def _deep_list_text(levels: int) -> str:
    return "[" * levels + "]" * levels


def _annotated(name: str, annotations: dict[str, str]) -> None:
    """kopf keeps its state in annotations under the podq.dev/ prefix, which anyone who
    may patch the Job can rewrite: garbage there stays that Job's problem."""
    async def run(ctx: Ctx) -> None:
        await ctx.create({"function": "noop", "queue": IDLE_QUEUE})
        await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "queued", "queued")
        await ctx.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ctx.stage.poison, "jobs", ctx.name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json")
        await ctx.delete_and_wait()
    case(f"tenant writes {name}")(run)


_annotated("kopf's last-handled annotation as text that is not JSON",
           {f"{GROUP}/last-handled-configuration": "{not json"})
_annotated("kopf's last-handled annotation nested 20,000 deep",
           {f"{GROUP}/last-handled-configuration": _deep_list_text(20_000)})
_annotated("a kopf progress annotation that is not JSON",
           {f"{GROUP}/job_resumed": "{not json", f"{GROUP}/job_created": "[" * 20_000})


@case("tenant strips the abort finalizer off a running Job, then deletes it")
async def _finalizer_stripped(ctx: Ctx) -> None:
    """The operator aborts the job from the deletion it watched, finalizer or not."""
    await ctx.create({"function": "nap", "kwargs": {"seconds": 120}, "timeout": 300})
    body = await ctx.wait(lambda b: (b.get("status") or {}).get("status") == "active",
                          "active")
    job_key = body["status"]["jobKey"]
    await ctx.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ctx.stage.poison, "jobs", ctx.name,
        [{"op": "remove", "path": "/metadata/finalizers"}])
    await ctx.delete_and_wait()
    queue = Queue.from_url(ctx.stage.url, name="default")
    try:
        async def aborted() -> Any:
            job = await queue.job(job_key)
            return job if job is not None and str(job.status) in ("aborting", "aborted") \
                else None
        await eventually(aborted, within=30, what=f"{job_key} aborted")
    finally:
        await queue.disconnect()


def _cron_annotated(name: str, annotations: dict[str, str]) -> None:
    """The same on a CronJob, which kopf serves with a daemon (its state in annotations):
    the CronJob still fires."""
    async def run(ctx: Ctx) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CronJob",
                "metadata": {"name": ctx.name, "annotations": annotations},
                "spec": {"schedule": "* * * * * */2",
                         "jobTemplate": {"spec": {"function": "noop"}}}}
        await ctx.custom.create_namespaced_custom_object(
            GROUP, VERSION, ctx.stage.poison, "cronjobs", body)
        try:
            async def fired() -> bool:
                cron = await ctx.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ctx.stage.poison, "cronjobs", ctx.name)
                return bool((cron.get("status") or {}).get("lastSuccessfulTime"))
            await eventually(fired, within=30, what=f"{ctx.name} to run a Job")
        finally:
            await ctx.custom.delete_namespaced_custom_object(
                GROUP, VERSION, ctx.stage.poison, "cronjobs", ctx.name)
    case(f"tenant writes {name} on a CronJob")(run)


_cron_annotated("kopf's annotations as text that is not JSON",
                {f"{GROUP}/last-handled-configuration": "{not json",
                 f"{GROUP}/cronjob_daemon": "{not json"})
_cron_annotated("kopf's annotations nested 20,000 deep",
                {f"{GROUP}/last-handled-configuration": _deep_list_text(20_000),
                 f"{GROUP}/cronjob_daemon": _deep_list_text(20_000)})
