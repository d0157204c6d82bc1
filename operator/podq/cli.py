"""The `podq` command: worker, enqueue, info, status, drain/resume, operator; abort,
retry, jobs and cronjob run are in podq.cli_jobs."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import socket
import sys
import time
import typing as t

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from podq import drain as draining
from podq import redis_url as redis_urls
from podq.job import JOB_FIELDS
from podq.jobstate import format_state, job_state
from podq.limit_specs import InvalidLimitSpec, parse_limits
from podq.logs import FORMATS, configure
from podq.metrics import MetricsPortError
from podq.queue import Limit, Queue, cluster, keys, list_queues
from podq.queue.pool import waiting_pool
from podq.redact import install_logging_filter, redact, remember_url
from podq.worker import Worker, import_settings

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1
BURST_DEQUEUE_TIMEOUT_S = 1.0


REDIS_URL_HELP = redis_urls.HELP


def version() -> str:
    try:
        return importlib.metadata.version("podq")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


# the Job fields `podq enqueue` takes as options (each declared with cli=True in Job)
ENQUEUE_OPTIONS = [field for field in JOB_FIELDS.values() if field.use.cli]

def redis_url(args: argparse.Namespace) -> str:
    url = redis_urls.redis_url(args.redis_url)
    remember_url(url)  # masked in every log line and error from now on
    return url


async def check_redis(queue: Queue, url: str) -> None:
    try:
        await asyncio.wait_for(queue.redis.ping(), 5)
    except (RedisError, OSError, TimeoutError) as e:
        raise CliError(f"cannot reach Redis at {redact(url)}: {e}", EXIT_UNAVAILABLE) from None


def add_redis(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        help=REDIS_URL_HELP,
    )
    p.add_argument("--queue", default=None, help="queue name (default: default)")


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podq", description="podq: async Python jobs on Redis")
    parser.add_argument("--version", action="version", version=f"podq {version()}",
                        help="print podq's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

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
    w.add_argument("--timeout", type=int, help="default timeout (s) of jobs enqueued without one")
    w.add_argument("--max-disruptions", type=_at_least_one,
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

    h = sub.add_parser(
        "worker-health",
        help="exit 0 when a worker of this host is alive in Redis (a liveness probe)",
    )
    h.add_argument("settings", help="the worker's settings, as given to `podq worker`")
    add_redis(h)
    h.add_argument("--hostname", help="host of the worker (default: this host's name)")

    e = sub.add_parser("enqueue", help="enqueue one job and print its key and id")
    e.add_argument("function", help="name of a function the queue's workers registered")
    e.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    add_redis(e)
    for field in ENQUEUE_OPTIONS:
        # --scheduled also takes +N (seconds from now): read in _enqueue
        kind = str if field.name == "scheduled" else field.type
        e.add_argument("--" + field.name.replace("_", "-"), type=kind, help=field.use.help)
    e.add_argument("--no-check", action="store_true", help="skip the registered-function check")
    e.add_argument("--json", action="store_true", help="print the job as JSON")

    i = sub.add_parser("info", help="queues, counts and live workers")
    i.add_argument("--redis-url", help=REDIS_URL_HELP)
    i.add_argument("--queue", action="append", help="only these queues (repeatable)")
    i.add_argument("--json", action="store_true", help="print the queues as JSON")

    s = sub.add_parser("status", help="a job's state, from Redis or from its Job resource")
    s.add_argument("job", nargs="?",
                   help="job key, job id (podq:{QUEUE}:job:KEY) or job.podq.dev/NAME")
    add_redis(s)
    s.add_argument("--resource", metavar="NAME", help="read the Job resource NAME instead")
    s.add_argument("-n", "--namespace", default="default",
                   help="namespace of the Job resource (default: default)")
    s.add_argument("--json", action="store_true", help="print the state as JSON")

    d = sub.add_parser("drain", help="pause a queue and wait until no job of it runs")
    d.add_argument("queue_name", metavar="queue", help="name of the queue")
    d.add_argument("--redis-url", help=REDIS_URL_HELP)
    d.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    d.add_argument("--resume", action="store_true", help="lift the pause instead")

    r = sub.add_parser("resume", help="lift a queue's pause and wake its workers")
    r.add_argument("queue_name", metavar="queue", help="name of the queue")
    r.add_argument("--redis-url", help=REDIS_URL_HELP)

    sub.add_parser("operator", help="run the Kubernetes operator (needs podq[operator])")
    sub.add_parser("web", help="the dashboard: queues, jobs and workers (podq web --help)")
    from podq import cli_jobs  # imports this module's helpers: once it is loaded

    cli_jobs.add_parsers(sub)
    return parser


# -- worker ---------------------------------------------------------------------------


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
        settings["queue"] = Queue.from_url(url, name=name)
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
    await check_redis(queue, url)
    try:
        worker = Worker(**settings)
    except (TypeError, ValueError) as e:
        raise CliError(f"bad worker settings: {e}") from None
    try:
        await worker.start()
    except MetricsPortError as e:
        raise CliError(str(e), EXIT_UNAVAILABLE) from None
    finally:
        await queue.disconnect()
    return 0


# -- worker-health ----------------------------------------------------------------------


async def cmd_worker_health(args: argparse.Namespace) -> int:
    """Healthy while a worker on this host has a live record in Redis: its event loop is
    refreshing it. Unreachable Redis counts as healthy: restarting the pod would not help,
    and the worker reconnects by itself."""
    args.concurrency = args.burst = args.max_burst_jobs = None
    args.shutdown_grace_period_s = args.timeout = None
    settings, url = load_worker_settings(args)
    queue: Queue = settings["queue"]
    hostname = args.hostname or socket.gethostname()
    try:
        try:
            await check_redis(queue, url)
        except CliError as e:
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


# -- enqueue ----------------------------------------------------------------------------


async def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        kwargs = json.loads(args.kwargs)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CliError(f"--kwargs is not valid JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise CliError("--kwargs must be a JSON object, e.g. '{\"a\": 1}'")
    url = redis_url(args)
    queue = Queue.from_url(url, name=args.queue or "default")
    try:
        await check_redis(queue, url)
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
            text = args.scheduled
            try:
                options["scheduled"] = (
                    time.time() + float(text[1:]) if text.startswith("+") else float(text)
                )
            except ValueError:
                raise CliError(f"--scheduled must be epoch seconds or +N, not {text!r}") from None
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
            print(json.dumps({"id": job.id, **job.to_dict()}))
        else:
            print(f"{job.key}\t{job.id}")
        return 0
    finally:
        await queue.disconnect()


# -- info -------------------------------------------------------------------------------


async def cmd_info(args: argparse.Namespace) -> int:
    url = redis_url(args)
    # a waiting pool: the queues below use this client as it is (podq.queue.pool)
    client = aioredis.Redis.from_pool(waiting_pool(url))
    try:
        try:
            await asyncio.wait_for(client.ping(), 5)
        except (RedisError, OSError, TimeoutError) as e:
            raise CliError(f"cannot reach Redis at {redact(url)}: {e}", EXIT_UNAVAILABLE) from None
        names = args.queue or await list_queues(client)
        out = []
        for name in names:
            # on a cluster each queue talks to the primary of its own slot
            queue = (Queue.from_url(url, name=name) if cluster.is_cluster_url(url)
                     else Queue(client, name=name))
            out.append(
                {
                    "name": name,
                    "queued": await queue.count("queued"),
                    "scheduled": await queue.count("scheduled"),
                    "active": await queue.count("active"),
                    "depth": await queue.depth(),
                    "paused": await draining.is_paused(queue),
                    "workers": await queue.workers(),
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
            f"queue {q['name']}: queued {q['queued']}, scheduled {q['scheduled']}, "
            f"active {q['active']}, workers {len(q['workers'])}"
            + (" (paused)" if q["paused"] else "")
        )
        for w in q["workers"]:
            print(
                f"  worker {w['id']} host {w['hostname']} pid {w['pid']} "
                f"concurrency {w['concurrency']} active {len(w['active'])} "
                f"functions {','.join(w['functions'])}"
            )
    return 0


# -- status -----------------------------------------------------------------------------

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


def queue_and_key(args: argparse.Namespace, target: str) -> tuple[str, str]:
    """The queue and key of a job named by key (in --queue) or by id."""
    queue_name = args.queue or "default"
    key = target
    if target.startswith(keys.ROOT + "{"):
        try:
            key = keys.key_from_id(target)
            queue_name = keys.queue_from_id(target)
        except ValueError as e:
            raise CliError(str(e)) from None
        if args.queue and args.queue != queue_name:
            raise CliError(f"job id {target!r} is of queue {queue_name!r}, not {args.queue!r}")
    return queue_name, key


async def _redis_state(args: argparse.Namespace, target: str) -> dict[str, t.Any]:
    queue_name, key = queue_and_key(args, target)
    url = redis_url(args)
    try:
        queue = Queue.from_url(url, name=queue_name)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        await check_redis(queue, url)
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


# -- drain / resume -----------------------------------------------------------------------


async def _queue_for(args: argparse.Namespace) -> tuple[Queue, str]:
    url = redis_url(args)
    try:
        queue = Queue.from_url(url, name=args.queue_name)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        await check_redis(queue, url)
    except CliError:
        await queue.disconnect()
        raise
    return queue, url


async def cmd_resume(args: argparse.Namespace) -> int:
    queue, _ = await _queue_for(args)
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

    queue, _ = await _queue_for(args)
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


# -- operator ---------------------------------------------------------------------------


def cmd_operator(argv: list[str]) -> int:
    try:
        from podq.operator.main import main as operator_main
    except ImportError:
        print(
            "podq operator needs the operator extra: pip install 'podq[operator]'", file=sys.stderr
        )
        return 2
    return int(operator_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "operator":
        return cmd_operator(argv[1:])
    if argv and argv[0] == "web":
        from podq.web.main import main as web_main

        return web_main(argv[1:])
    args = build_parser().parse_args(argv)
    level = logging.INFO
    if getattr(args, "verbose", 0):
        level = logging.DEBUG
    configure(level, getattr(args, "log_format", "plain"))
    install_logging_filter()
    from podq import cli_jobs

    handlers = {"worker": cmd_worker, "worker-health": cmd_worker_health,
                "enqueue": cmd_enqueue, "info": cmd_info, "status": cmd_status,
                "drain": cmd_drain, "resume": cmd_resume, **cli_jobs.HANDLERS}
    try:
        return asyncio.run(handlers[args.command](args))
    except CliError as e:
        print(f"podq: error: {redact(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
