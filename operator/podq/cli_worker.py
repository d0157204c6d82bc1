"""`podq worker` and `podq worker-health`: running a worker from its settings, and the
liveness probe that asks Redis whether this host's worker is alive."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import typing as t

from podq.cli_common import (
    EXIT_REDIS_TOO_OLD,
    EXIT_UNAVAILABLE,
    CliError,
    add_redis,
    check_redis,
    redis_url,
    whole_number,
)
from podq.errors import RedisVersionError
from podq.limit_specs import InvalidLimitSpec, parse_limits
from podq.logs import FORMATS
from podq.metrics import MetricsPortError
from podq.queue import QUEUE_LIMIT, Limit, Queue
from podq.worker import Worker, import_settings

BURST_DEQUEUE_TIMEOUT_S = 1.0
log = logging.getLogger("podq.worker")


def add_parsers(sub: t.Any) -> None:
    """Add `worker` and `worker-health` to the `podq` subcommands."""
    w = sub.add_parser("worker", help="run a worker from a settings dict (module.name)")
    w.add_argument("settings", help="dotted path to a settings dict or a callable returning one")
    add_redis(w)
    w.add_argument("--concurrency", type=int,
                   help="jobs run at once (default: the settings', else 10)")
    w.add_argument(
        "--burst", action="store_true", default=None, help="stop when the queue is empty"
    )
    w.add_argument("--max-burst-jobs", type=int,
                   help="with --burst: stop after this many jobs (default: no limit)")
    w.add_argument("--dequeue-timeout", type=float,
                   help="with --burst: seconds an empty queue is waited on before the worker "
                        f"exits (default {BURST_DEQUEUE_TIMEOUT_S:g} when the settings give none)")
    w.add_argument("--shutdown-grace-period-s", type=float,
                   help="on SIGTERM, seconds running jobs may finish before they are put "
                        "back in the queue (default: the settings')")
    w.add_argument("--timeout", type=int, help="default timeout (s) of jobs enqueued without "
                   "one (default: the settings', else 10)")
    w.add_argument("--max-disruptions", type=whole_number(1),
                   help="times a job may lose its worker (killed, shut down) before it ends "
                        "Failed WorkerLost (default: 5); such runs use no attempt")
    w.add_argument("--limit", action="append", metavar="NAME=SPEC",
                   help="a concurrency or rate limit of the queue, cluster-wide (repeatable;"
                        " NAME: a function or * for the whole queue): charge_card=concurrency:3,"
                        " send_email=rate:100/60, api=concurrency:5,rate:10/1,burst:3; set in"
                        " Redis as the worker starts, replacing the queue's limits and the"
                        " settings' (docs/limits.md)")
    w.add_argument("--no-limits", action="store_true",
                   help="clear the queue's limits as the worker starts")
    w.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics on this port (default: off)")
    w.add_argument("--metrics-host", metavar="ADDRESS",
                   help="address to serve metrics on (default: 0.0.0.0, every interface)")
    w.add_argument("--log-format", choices=FORMATS, default="plain",
                   help="plain text, or one JSON object a line like the operator's; lines "
                        "logged while a job runs name its key (default: plain)")
    w.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    w.add_argument("-q", "--quiet", action="store_true",
                   help="leave logging unconfigured, for settings that configure it "
                        "(SAQ's --quiet)")

    h = sub.add_parser(
        "worker-health",
        help="exit 0 when a worker of this host is alive in Redis (a liveness probe)",
    )
    h.add_argument("settings", help="the worker's settings, as given to `podq worker`")
    add_redis(h)
    h.add_argument("--hostname", help="host of the worker (default: this host's name)")


def load_worker_settings(args: argparse.Namespace) -> tuple[dict[str, t.Any], str]:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        settings = dict(import_settings(args.settings))
    except ModuleNotFoundError as e:
        raise CliError(f"cannot import settings {args.settings!r}: {e}") from None
    except AttributeError as e:
        raise CliError(f"settings {args.settings!r} not found: {e}") from None
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    url = redis_url(args)
    queue = settings.get("queue")
    if args.redis_url or queue is None or isinstance(queue, str):
        if isinstance(queue, str) and not args.redis_url:
            url = queue
        name = (
            args.queue
            or settings.pop("queue_name", None)
            or (queue.name if isinstance(queue, Queue) else "default")
        )
        try:  # a settings' queue_name is checked here, --queue by argparse
            settings["queue"] = Queue.from_url(url, name=name)
        except ValueError as e:
            raise CliError(f"settings {args.settings!r}: {e}") from None
    elif isinstance(queue, Queue):
        kw = queue.redis.connection_pool.connection_kwargs
        url = f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    else:
        raise CliError(f"settings 'queue' must be a podq.Queue or a Redis URL, not {queue!r}")
    settings.pop("queue_name", None)
    for opt in ("concurrency", "burst", "max_burst_jobs", "dequeue_timeout",
                "shutdown_grace_period_s", "timeout", "metrics_port", "metrics_host",
                "max_disruptions"):
        value = getattr(args, opt, None)
        if value is not None:
            settings[opt] = value
    if getattr(args, "limit", None) or getattr(args, "no_limits", False):
        settings["limits"] = worker_limits(args)
    if settings.get("burst") and not settings.get("dequeue_timeout"):
        # Worker(burst=True) requires it, as SAQ's does; the command line gives a default
        settings["dequeue_timeout"] = BURST_DEQUEUE_TIMEOUT_S
    if not settings.get("functions") and not settings.get("cron_jobs"):
        raise CliError(f"settings {args.settings!r} register no functions")
    return settings, url


def worker_limits(args: argparse.Namespace) -> dict[str, Limit]:
    """The limits of --limit (or none with --no-limits); a bad one is a CliError."""
    if args.no_limits and args.limit:
        raise CliError("--no-limits and --limit exclude each other")
    try:
        return parse_limits(args.limit or [])
    except InvalidLimitSpec as invalid:
        raise CliError(str(invalid)) from None


async def cmd_worker(args: argparse.Namespace) -> int:
    settings, url = load_worker_settings(args)
    queue: Queue = settings["queue"]
    await check_redis(queue.redis, url)
    try:
        worker = Worker(**settings)
    except (TypeError, ValueError) as e:
        raise CliError(f"bad worker settings: {e}") from None
    for name in sorted(set(worker.limits or ()) - set(worker.functions) - {QUEUE_LIMIT}):
        log.warning("limit %r: this worker registers no function %r (a typo?); it limits only"
                    " the workers of queue %s that do", name, name, queue.name)
    try:
        await worker.start()
    except MetricsPortError as e:
        raise CliError(str(e), EXIT_UNAVAILABLE) from None
    except RedisVersionError as e:  # Queue.connect checks again as the worker starts
        raise CliError(str(e), EXIT_REDIS_TOO_OLD) from None
    finally:
        await queue.disconnect()
    return 0


# -- worker-health ----------------------------------------------------------------------


async def cmd_worker_health(args: argparse.Namespace) -> int:
    """Healthy while a worker on this host has a live record in Redis: its event loop is
    refreshing it. Unreachable Redis counts as healthy: restarting the pod would not help,
    and the worker reconnects by itself. A Redis too old for podq does not."""
    args.concurrency = args.burst = args.max_burst_jobs = None
    args.shutdown_grace_period_s = args.timeout = None
    settings, url = load_worker_settings(args)
    queue: Queue = settings["queue"]
    hostname = args.hostname or socket.gethostname()
    try:
        try:
            await check_redis(queue.redis, url)
        except CliError as e:
            if e.code == EXIT_REDIS_TOO_OLD:
                raise
            print(f"podq: warning: {e}; not the worker's fault, reporting healthy",
                  file=sys.stderr)
            return 0
        live = [w for w in await queue.workers() if w.get("hostname") == hostname]
    finally:
        await queue.disconnect()
    if not live:
        print(f"podq: no live worker of host {hostname!r} on queue {queue.name!r}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(" ".join(w["id"] for w in live))
    return 0


HANDLERS = {"worker": cmd_worker, "worker-health": cmd_worker_health}
