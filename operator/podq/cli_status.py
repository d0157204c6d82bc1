"""`podq status`: a job's state, read from Redis or from its Job resource."""

from __future__ import annotations

import argparse
import json
import typing as t

from podq.cli_common import (
    EXIT_UNAVAILABLE,
    CliError,
    add_redis,
    open_queue,
    queue_and_key,
)
from podq.jobstate import format_state, job_state


def add_parsers(sub: t.Any) -> None:
    """Add `status` to the `podq` subcommands."""
    s = sub.add_parser("status", help="a job's state, from Redis or from its Job resource")
    s.add_argument("job", nargs="?",
                   help="job key, job id (podq:{QUEUE}:job:KEY) or job.podq.dev/NAME")
    add_redis(s)
    s.add_argument("--resource", metavar="NAME", help="read the Job resource NAME instead")
    s.add_argument("-n", "--namespace", default="default",
                   help="namespace of the Job resource (default: default)")
    s.add_argument("--json", action="store_true", help="print the state as JSON")


RESOURCE_PREFIXES = ("job.podq.dev/", "jobs.podq.dev/")


async def _resource_state(name: str, namespace: str) -> dict[str, t.Any]:
    try:
        from podq.operator.lookup import job_state as resource_job_state
        from podq.operator.lookup import read_job_resource
    except ImportError:
        raise CliError("reading Job resources needs the operator extra: "
                       "pip install 'podq[operator]'") from None
    try:
        body = await read_job_resource(name, namespace)
    except Exception as e:  # no kubeconfig, API unreachable, forbidden
        raise CliError(f"cannot read job.podq.dev/{name} in namespace {namespace}: {e}",
                       EXIT_UNAVAILABLE) from None
    if body is None:
        raise CliError(f"job.podq.dev/{name} not found in namespace {namespace}",
                       EXIT_UNAVAILABLE)
    return resource_job_state(body)


async def _redis_state(args: argparse.Namespace, target: str) -> dict[str, t.Any]:
    queue_name, key = queue_and_key(args, target)
    queue = await open_queue(args, queue_name)
    try:
        job = await queue.job(key)
        if job is None:
            raise CliError(f"no job {key!r} in queue {queue_name!r} (never enqueued, or "
                           "finished and expired after its ttl)", EXIT_UNAVAILABLE)
        return job_state(job)
    finally:
        await queue.disconnect()


async def cmd_status(args: argparse.Namespace) -> int:
    target = args.job
    resource = args.resource
    if target and target.startswith(RESOURCE_PREFIXES):
        resource = target.split("/", 1)[1]
    elif target and resource:
        raise CliError("give a job key/id or --resource, not both")
    if resource:
        state = await _resource_state(resource, args.namespace)
    elif target:
        state = await _redis_state(args, target)
    else:
        raise CliError("give a job key, a job id, job.podq.dev/NAME or --resource NAME")
    if args.json:
        print(json.dumps(state, default=str))
    else:
        print(format_state(state))
    return 0


HANDLERS = {"status": cmd_status}
