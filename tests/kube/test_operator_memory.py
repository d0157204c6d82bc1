"""The operator keeps no kwargs or meta of a Job whose job is in Redis (registry.py,
ARGUMENTS), and its status reads read no job's kwargs or meta (brief reads): a tenant
may keep hundreds of Jobs queued, each with the largest kwargs the operator takes,
without its memory growing with them. When Redis loses such a job, the operator reads
them back from the API server and enqueues the job again as it was."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from operator_harness import Harness, eventually, status
from test_metrics_and_status import scrape

from podq.testing import free_port

KWARGS = {f"k{i:04}": [i] for i in range(2000)}
META = {"team": "a", "tags": ["x", "y"]}
# the largest kwargs taken (64 KiB as compact JSON), of small values: ~1.4 MiB parsed
BIG = {"v": [[i % 10] for i in range(16_000)]}
QUEUED_JOBS = 80
PASSES = 3
# measured on 2 cores (docs/security.md): read whole, the passes over 80 such jobs held
# the operator's RSS 170 MiB over idle (+15 MiB more during the passes); read briefly,
# 75 MiB (what creating and enqueueing them left), +0 MiB during the passes
GROWTH_LIMIT_MIB = 1.5 * QUEUED_JOBS
PASS_GROWTH_LIMIT_MIB = 10


async def test_a_lost_job_is_enqueued_again_with_kwargs_and_meta_read_back(
        harness: Harness) -> None:
    harness.start_operator()
    await harness.create_job("big", "echo", kwargs=KWARGS, meta=META)
    body = await harness.wait_status("big", "queued", within=60)
    key = status(body)["jobKey"]
    queue = harness.queue()
    assert (await queue.job(key)).kwargs == KWARGS
    await queue.redis.flushall()  # the operator runs on; its registry has no kwargs

    async def back() -> object:
        return await queue.job(key)
    job = await eventually(back, within=30, what="the job enqueued again")
    assert job.kwargs == KWARGS and job.meta == META
    harness.start_worker()
    await harness.wait_status("big", "complete", within=60)
    assert (await queue.job(key)).result == KWARGS


def memory_mib(pid: int, field: str) -> float:
    """VmRSS or VmHWM (the peak since the last reset) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    """VmHWM of the process counts from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def test_reconcile_passes_do_not_grow_with_the_queued_jobs_kwargs(
        harness: Harness) -> None:
    """Every reconcile pass reads each unfinished Job's job from Redis: only the fields
    its status shows. With QUEUED_JOBS Jobs queued, each with 64 KiB of kwargs, the
    operator's peak RSS over PASSES passes stays within GROWTH_LIMIT_MIB of its RSS
    before the Jobs, and within PASS_GROWTH_LIMIT_MIB of its RSS before the passes."""
    assert len(json.dumps(BIG, separators=(",", ":"))) <= 64 * 1024
    port = free_port()
    operator = harness.start_operator("--metrics-port", str(port), "--metrics-host",
                                      "127.0.0.1")
    pid = operator.popen.pid
    idle = memory_mib(pid, "VmRSS")
    for index in range(QUEUED_JOBS):  # no worker: they stay queued
        await harness.create_job(f"big-{index}", "echo", kwargs=BIG)

    async def all_queued() -> bool:
        items = await harness.list_jobs()
        return len(items) == QUEUED_JOBS and all(
            status(item).get("status") == "queued" for item in items)
    await eventually(all_queued, within=180, what=f"{QUEUED_JOBS} Jobs queued")

    def unchanged() -> float:
        return scrape(port).get(("podq_operator_status_syncs_total",
                                 frozenset({("outcome", "unchanged")})), 0.0)

    async def passes(count: int) -> None:
        """Wait for `count` more reconcile passes over the queued Jobs (each finds every
        one unchanged)."""
        target = await asyncio.to_thread(unchanged) + count * QUEUED_JOBS

        async def done() -> bool:
            return await asyncio.to_thread(unchanged) >= target
        await eventually(done, within=30 + 10 * count, what=f"{count} reconcile passes")
    await passes(1)  # the enqueue and its watch events are over
    reset_peak(pid)
    before = memory_mib(pid, "VmRSS")
    await passes(PASSES)
    peak = memory_mib(pid, "VmHWM")
    print(f"operator RSS {idle:.1f} MiB idle, {before:.1f} MiB with {QUEUED_JOBS} queued Jobs"
          f" of 64 KiB kwargs, peak {peak:.1f} MiB over {PASSES} reconcile passes:"
          f" +{peak - idle:.1f} MiB")
    assert operator.alive
    assert peak - idle < GROWTH_LIMIT_MIB
    assert peak - before < PASS_GROWTH_LIMIT_MIB
