"""`podq info`, `podq drain` and `podq resume`: the queues, their counts and workers,
and pausing a queue until none of its jobs runs."""

from __future__ import annotations

import argparse
import json
import sys
import typing as t

from redis import asyncio as aioredis

from podq import drain as draining
from podq.cli_common import (
    EXIT_UNAVAILABLE,
    add_redis,
    check_redis,
    open_queue,
    queue_name,
    queue_on,
    redis_url,
)
from podq.jobstate import iso_utc
from podq.queue import list_queues
from podq.queue.pool import waiting_pool


def add_info_parser(sub: t.Any) -> None:
    """Add `info` to the `podq` subcommands."""
    i = sub.add_parser("info", help="queues, counts and live workers")
    add_redis(i, queue=False)
    i.add_argument("--queue", type=queue_name, action="append",
                   help="only these queues (repeatable)")
    i.add_argument("--json", action="store_true", help="print the queues as JSON")


def add_drain_parsers(sub: t.Any) -> None:
    """Add `drain` and `resume` to the `podq` subcommands."""
    d = sub.add_parser("drain", help="pause a queue and wait until no job of it runs")
    d.add_argument("queue_name", type=queue_name, metavar="queue", help="name of the queue")
    add_redis(d, queue=False)
    d.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    d.add_argument("--resume", action="store_true", help="lift the pause instead")

    r = sub.add_parser("resume", help="lift a queue's pause and wake its workers")
    r.add_argument("queue_name", type=queue_name, metavar="queue", help="name of the queue")
    add_redis(r, queue=False)


def _waiting(q: dict[str, t.Any]) -> str:
    """Of a queue's queued jobs, those that wait on a limit or on dependencies, if any:
    ` (ready 2, limited 5: charge_card 3 by concurrency, * 2 by rate; waiting for
    dependencies 3)`."""
    parts = []
    if q["limited"]:
        total = sum(v["jobs"] for v in q["limited"].values())
        each = ", ".join(f"{name} {v['jobs']} by {v['why'] or 'limit'}"
                         for name, v in sorted(q["limited"].items()))
        parts.append(f"limited {total}: {each}")
    if q["waiting"]:
        parts.append(f"waiting for dependencies {q['waiting']}")
    return f" (ready {q['ready']}, {'; '.join(parts)})" if parts else ""


async def cmd_info(args: argparse.Namespace) -> int:
    url = redis_url(args)
    # a waiting pool: the queues below use this client as it is (podq.queue.pool)
    client = aioredis.Redis.from_pool(waiting_pool(url))
    try:
        await check_redis(client, url)
        names = args.queue or await list_queues(client)
        out = []
        for name in names:
            queue = queue_on(client, url, name)
            counts = await queue.counts()
            limited = await queue.limited(counts)
            out.append(
                {
                    "name": name,
                    "queued": counts.queued,
                    # of the queued: ready to start now, waiting on a limit, on dependencies
                    "ready": counts.ready + counts.due - counts.rate_held,
                    "limited": {n: {"jobs": jobs, "why": why}
                                for n, (jobs, why) in limited.items()},
                    "waiting": counts.blocked,
                    "scheduled": counts.later,
                    "active": counts.active,
                    "depth": counts.depth,
                    "paused": await draining.is_paused(queue),
                    # each worker's last report (ts) in the CLI's one time format
                    "workers": [{**w, "ts": iso_utc(w["ts"])} if w.get("ts") else w
                                for w in await queue.workers()],
                }
            )
            if queue.redis is not client:
                await queue.disconnect()
    finally:
        await client.aclose()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print("no queues")
    for q in out:
        print(
            f"queue {q['name']}: queued {q['queued']}{_waiting(q)}, scheduled "
            f"{q['scheduled']}, active {q['active']}, workers {len(q['workers'])}"
            + (" (paused)" if q["paused"] else "")
        )
        for w in q["workers"]:
            print(
                f"  worker {w['id']} host {w['hostname']} pid {w['pid']} "
                f"concurrency {w['concurrency']} active {len(w['active'])} "
                f"functions {','.join(w['functions'])}"
            )
    return 0


# -- drain / resume -----------------------------------------------------------------------


async def cmd_resume(args: argparse.Namespace) -> int:
    queue = await open_queue(args, args.queue_name)
    try:
        was = await draining.resume(queue)
    finally:
        await queue.disconnect()
    print(f"queue {queue.name} resumed" if was else f"queue {queue.name} was not paused")
    return 0


async def cmd_drain(args: argparse.Namespace) -> int:
    if args.resume:
        return await cmd_resume(args)

    def progress(active: int, elapsed: float) -> None:
        print(f"queue {args.queue_name}: {active} active job(s) after {elapsed:.0f}s",
              flush=True)

    queue = await open_queue(args, args.queue_name)
    try:
        drained = await draining.drain(queue, timeout_s=args.timeout, progress=progress)
    finally:
        await queue.disconnect()
    if not drained:
        print(f"podq: queue {args.queue_name} not drained after {args.timeout}s; it stays "
              f"paused (podq resume {args.queue_name} lifts it)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"queue {args.queue_name} drained and paused; `podq resume {args.queue_name}` "
          "lets workers take jobs again", flush=True)
    return 0


HANDLERS = {"info": cmd_info, "drain": cmd_drain, "resume": cmd_resume}
