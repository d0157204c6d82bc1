"""`podq enqueue`: one job, with the Job fields declared for the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing as t
from datetime import datetime

from podq.cli_common import (
    EXIT_UNAVAILABLE,
    CliError,
    add_redis,
    open_queue,
)
from podq.job import JOB_FIELDS, JobField
from podq.jobstate import job_json

# the Job fields `podq enqueue` takes as options (each declared with cli=True in Job)
ENQUEUE_OPTIONS = [field for field in JOB_FIELDS.values() if field.use.cli]


def _help(field: JobField) -> str:
    """The field's help, with its default when the help does not state one."""
    if "default" in field.use.help or isinstance(field.default, bool) \
            or not isinstance(field.default, int | float):
        return field.use.help
    return f"{field.use.help} (default: {field.default:g})"


def add_parsers(sub: t.Any) -> None:
    """Add `enqueue` to the `podq` subcommands."""
    e = sub.add_parser("enqueue", help="enqueue one job and print its key and id")
    e.add_argument("function", help="name of a function the queue's workers registered")
    e.add_argument("--kwargs", default="{}",
                   help="keyword arguments as a JSON object (default: %(default)s)")
    add_redis(e)
    for field in ENQUEUE_OPTIONS:
        # --scheduled also takes +N (seconds from now): read in _enqueue
        kind = str if field.name == "scheduled" else field.type
        e.add_argument("--" + field.name.replace("_", "-"), type=kind, help=_help(field))
    e.add_argument("--no-check", action="store_true", help="skip the registered-function check")
    e.add_argument("--json", action="store_true", help="print the job as JSON")


def scheduled_at(text: str) -> float:
    """--scheduled: +N (seconds from now), epoch seconds, or an ISO 8601 time with its
    zone, the format podq prints times in (and a Job resource's spec.scheduled takes)."""
    try:
        return time.time() + float(text[1:]) if text.startswith("+") else float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CliError("--scheduled must be an ISO 8601 time with its zone (such as "
                       f"2030-01-01T09:00:00Z), epoch seconds or +N, not {text!r}")
    return moment.timestamp()


async def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        kwargs = json.loads(args.kwargs)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CliError(f"--kwargs is not valid JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise CliError("--kwargs must be a JSON object, e.g. '{\"a\": 1}'")
    queue = await open_queue(args, args.queue or "default")
    try:
        if not args.no_check:
            workers = await queue.workers()
            known = sorted({f for w in workers for f in w.get("functions", [])})
            if workers and args.function not in known:
                raise CliError(
                    f"unknown function {args.function!r}: the workers of queue "
                    f"{queue.name!r} know {', '.join(known) or 'no functions'}"
                )
            if not workers:
                print(
                    f"podq: warning: no live worker on queue {queue.name!r}; "
                    "cannot check the function name",
                    file=sys.stderr,
                )
        options: dict[str, t.Any] = {}
        for field in ENQUEUE_OPTIONS:
            value = getattr(args, field.name)
            if value is not None and field.name != "scheduled":
                options[field.name] = value
        if args.scheduled:
            options["scheduled"] = scheduled_at(args.scheduled)
        try:
            job = await queue.enqueue(args.function, kwargs=kwargs, **options)
        except (TypeError, ValueError) as e:
            raise CliError(str(e)) from None
        if job is None:
            raise CliError(
                f"a job with key {options.get('key')!r} is already pending in queue "
                f"{queue.name!r} (queued, scheduled, active or aborting)",
                EXIT_UNAVAILABLE,
            )
        if args.json:
            print(json.dumps(job_json(job), default=str))
        else:
            print(f"{job.key}\t{job.id}")
        return 0
    finally:
        await queue.disconnect()


HANDLERS = {"enqueue": cmd_enqueue}
