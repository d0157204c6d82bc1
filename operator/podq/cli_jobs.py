"""`podq abort`, `podq retry`, `podq jobs` and `podq cronjob run`: acting on single jobs
and listing them."""

from __future__ import annotations

import argparse
import json
import sys
import typing as t

from redis.exceptions import NoPermissionError

from podq.cli_common import (
    EXIT_UNAVAILABLE,
    CliError,
    add_redis,
    open_queue,
    queue_and_key,
    queue_name,
    queue_on,
    redis_url,
    whole_number,
)
from podq.job import JOB_FIELDS, TERMINAL_STATUSES, UNSUCCESSFUL_TERMINAL_STATUSES, Job, Status
from podq.jobstate import iso_utc, job_json
from podq.queue import Queue, list_queues
from podq.web.data import STATUS_FILTERS, list_jobs, resource_of

MAX_LIMIT = 1000
SCAN_COUNT = 200  # job hashes one SCAN call looks at (finished jobs are in no set)
SCAN_BUDGET = 20_000  # ... and one page at most
FINISHED = {s.value for s in TERMINAL_STATUSES}
# what a retry copies of the failed job: what its caller chose, under the same key
_COPIED = [name for name, field in JOB_FIELDS.items()
           if field.use.caller and name not in ("queue", "progress", "scheduled")]


def add_parsers(sub: t.Any) -> None:
    a = sub.add_parser("abort", help="abort a queued, scheduled or running job")
    a.add_argument("job", help="job key or job id (podq:{QUEUE}:job:KEY)")
    add_redis(a)
    a.add_argument("--reason", default="aborted with podq abort",
                   help="error text the aborted job keeps (default: %(default)s)")
    a.add_argument("--json", action="store_true", help="print the job as JSON")

    r = sub.add_parser("retry", help="run a failed or aborted job again, under its key")
    r.add_argument("job", help="job key or job id (podq:{QUEUE}:job:KEY)")
    add_redis(r)
    r.add_argument("--json", action="store_true", help="print the new job as JSON")

    j = sub.add_parser("jobs", help="list jobs a page at a time: running, queued, "
                       "scheduled, then finished ones newest first")
    add_redis(j, queue=False)
    j.add_argument("--queue", type=queue_name, action="append",
                   help="only this queue (repeatable; default: every queue)")
    j.add_argument("--status", choices=STATUS_FILTERS,
                   help="only jobs in this state. Finished ones (complete, failed, aborted) "
                        "are found by scanning the queue's job records (they are in no "
                        "set; Redis keeps them for their ttl); without --status, those "
                        "a running `podq web` recorded are listed after the pending ones")
    j.add_argument("--function", help="only jobs of this function")
    j.add_argument("--limit", type=whole_number(1, MAX_LIMIT), default=50,
                   help=f"jobs shown per queue, 1 to {MAX_LIMIT} (default: %(default)s); "
                        "with a finished --status a page may hold more: it ends with the "
                        f"SCAN step (about {SCAN_COUNT} records) that reaches the limit")
    j.add_argument("--start", type=int, default=0,
                   help="where the page starts: a position, or with a finished --status a "
                        "scan cursor, as printed after a page (default: 0)")
    j.add_argument("--json", action="store_true",
                   help="one JSON object: the jobs and, per queue, where the next page "
                        "starts (null: no more)")

    c = sub.add_parser("cronjob", help="act on podq CronJob resources (needs podq[operator])")
    cron = c.add_subparsers(dest="cron_command", required=True, metavar="{run}")
    run = cron.add_parser("run", help="create a Job from a CronJob now, like "
                          "`kubectl create job --from=cronjob/NAME`")
    run.add_argument("name", help="name of the CronJob")
    run.add_argument("-n", "--namespace", default="default",
                     help="namespace of the CronJob (default: default)")
    run.add_argument("--job-name", help="name of the Job to create "
                     "(default: NAME-manual-<5 random characters>)")


async def _job(args: argparse.Namespace) -> tuple[Queue, Job]:
    queue_name, key = queue_and_key(args, args.job)
    queue = await open_queue(args, queue_name)
    try:
        job = await queue.job(key)
    except BaseException:
        await queue.disconnect()
        raise
    if job is None:
        await queue.disconnect()
        raise CliError(f"no job {key!r} in queue {queue_name!r}", EXIT_UNAVAILABLE)
    return queue, job


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job_json(job), default=str))
    else:
        print(f"{job.key}\t{Status(job.status).value}")


async def cmd_abort(args: argparse.Namespace) -> int:
    queue, job = await _job(args)
    try:
        if job.status in TERMINAL_STATUSES:
            raise CliError(f"job {job.key!r} already finished ({job.status.value})",
                           EXIT_UNAVAILABLE)
        await queue.abort(job, args.reason)
        fresh = await queue.job(job.key) or job
    finally:
        await queue.disconnect()
    _print_job(fresh, args.json)
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    queue, job = await _job(args)
    try:
        if job.status not in UNSUCCESSFUL_TERMINAL_STATUSES:
            raise CliError(f"only a failed or aborted job can be retried; {job.key!r} is "
                           f"{job.status.value}", EXIT_UNAVAILABLE)
        resource = await resource_of(queue, job.key)
        if resource is not None:
            where = f"job.podq.dev/{resource.name} in namespace {resource.namespace}" \
                if resource.name else "a podq Job resource"
            raise CliError(f"job {job.key!r} belongs to {where}: delete and re-create the "
                           "resource to run it again")
        copy = Job(**{name: getattr(job, name) for name in _COPIED})
        for name in _COPIED:
            copy.choose(name, job.chose(name))
        again = await queue.enqueue(copy)
        if again is None:
            raise CliError(f"the queue refused {job.key!r}: it is pending again, or was "
                           "aborted a moment ago", EXIT_UNAVAILABLE)
    finally:
        await queue.disconnect()
    _print_job(again, args.json)
    return 0


def _row(queue: str, job: Job) -> dict[str, t.Any]:
    return {"queue": queue, "key": job.key, "function": job.function,
            "status": Status(job.status).value, "blocked": job.blocked,
            "attempts": job.attempts,
            "retries": job.retries, "progress": job.progress,
            "queued": iso_utc(job.queued), "scheduled": iso_utc(int(job.scheduled * 1000)),
            "started": iso_utc(job.started),
            "completed": iso_utc(job.completed)}


async def scan_finished(queue: Queue, status: str, function: str | None, cursor: int,
                        limit: int) -> tuple[list[Job], int | None]:
    """Finished jobs of one status, by SCAN over the queue's job hashes from `cursor`:
    at least `limit` of them unless the scan ends or SCAN_BUDGET records were looked at
    (a SCAN call may bring up to SCAN_COUNT more). Returns the jobs and the cursor of
    the next page (None: the scan is complete). Reads the status and function of each
    record (HMGET of the stored fields), and the whole record of those that match."""
    found: list[Job] = []
    looked = 0
    while True:
        cursor, fields = await queue.scan_job_fields(cursor, SCAN_COUNT, ("status", "function"))
        looked += len(fields)
        keys = [key for key, (is_, runs) in fields
                if is_ == status and (function is None or runs == function)]
        found.extend(job for job in await queue.jobs(keys)  # as read now: it may have changed
                     if job is not None and job.status.value == status)
        if not cursor:
            return found, None
        if len(found) >= limit or looked >= SCAN_BUDGET:
            return found, int(cursor)


async def _page(queue: Queue, args: argparse.Namespace) -> tuple[list[Job], int | None]:
    """One page of one queue's jobs, and where the next page starts."""
    start = max(args.start, 0)
    if args.status in FINISHED:
        try:
            return await scan_finished(queue, args.status, args.function, start, args.limit)
        except NoPermissionError:  # a queue's ACL user may not SCAN (docs/security.md)
            print(f"podq: warning: this Redis user may not SCAN; listing the {args.status} "
                  f"jobs of queue {queue.name} that `podq web` recorded", file=sys.stderr)
    page = await list_jobs(queue, args.status, args.function, start, args.limit)
    return page.jobs, page.next_start


async def cmd_jobs(args: argparse.Namespace) -> int:
    probe = await open_queue(args, "default")
    rows: list[dict[str, t.Any]] = []
    pages: dict[str, int | None] = {}
    try:
        names, url = args.queue or await list_queues(probe.redis), redis_url(args)
        for name in names:
            queue = queue_on(probe.redis, url, name)
            try:
                jobs, pages[name] = await _page(queue, args)
            finally:
                if queue.redis is not probe.redis:
                    await queue.disconnect()
            rows.extend(_row(name, job) for job in jobs)
    finally:
        await probe.disconnect()
    if args.json:
        print(json.dumps({"jobs": rows, "next_start": pages}, default=str))
        return 0
    if not rows:  # finished jobs are found by SCAN only when asked for (--status)
        print("no jobs" if args.status else "no running, queued or scheduled jobs; finished"
              " ones: podq jobs --status complete (or failed, aborted)")
    columns = ("queue", "key", "function", "status", "attempts", "queued", "scheduled",
               "completed")
    for r in rows:  # why a queued job waits: dependencies, concurrency or rate
        r["status"] += f" ({r['blocked']})" if r["blocked"] else ""
    table = [[("-" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(columns)]
    if table:
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for name, start in pages.items():
        if start is not None:
            status = f" --status {args.status}" if args.status else ""
            print(f"more in queue {name}: podq jobs --queue {name}{status} --start {start}")
    return 0


async def cmd_cronjob(args: argparse.Namespace) -> int:
    try:
        from podq.operator.cronrun import CronJobNotFound, run_cronjob
    except ImportError:
        raise CliError("podq cronjob needs the operator extra: pip install 'podq[operator]'"
                       ) from None
    try:
        made = await run_cronjob(args.name, args.namespace, args.job_name)
    except CronJobNotFound as e:
        raise CliError(str(e), EXIT_UNAVAILABLE) from None
    except Exception as e:  # no kubeconfig, API unreachable, forbidden, name taken
        raise CliError(f"cannot create a Job from cronjob.podq.dev/{args.name}: {e}",
                       EXIT_UNAVAILABLE) from None
    print(f"job.podq.dev/{made['metadata']['name']} created")
    return 0


HANDLERS = {"abort": cmd_abort, "retry": cmd_retry, "jobs": cmd_jobs, "cronjob": cmd_cronjob}
