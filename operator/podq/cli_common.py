"""What every `podq` command shares: its error and exit codes, the Redis URL and
--queue options, reaching Redis, and naming a job by key or id."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
from collections.abc import Callable

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from podq import redis_url as redis_urls
from podq.errors import RedisVersionError
from podq.queue import Queue, check_redis_version, cluster, keys
from podq.redact import redact, remember_url

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1
# Redis older than podq needs (RedisVersionError): sysexits' EX_UNAVAILABLE, as `podq
# web` exits without Redis; every command, `podq web` and `podq operator` exit with it
EXIT_REDIS_TOO_OLD = 69


def version() -> str:
    try:
        return importlib.metadata.version("podq")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least low (and at most high, if given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        return value
    return parse


def queue_name(text: str) -> str:
    """An argparse type: a usable queue name (podq.queue.keys.check_queue_name), so a
    bad --queue is refused as the option's error, before any connection."""
    try:
        return keys.check_queue_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def redis_url(args: argparse.Namespace) -> str:
    url = redis_urls.redis_url(args.redis_url)
    remember_url(url)  # masked in every log line and error from now on
    return url


async def check_redis(redis: aioredis.Redis, url: str) -> None:
    """Redis at url answers (a client of a queue, or of no queue) and is a version podq
    can use (one INFO server: check_redis_version), or a CliError: EXIT_UNAVAILABLE when
    unreachable, EXIT_REDIS_TOO_OLD naming the version when too old."""
    try:
        await asyncio.wait_for(check_redis_version(redis), 5)
    except RedisVersionError as e:
        raise CliError(str(e), EXIT_REDIS_TOO_OLD) from None
    except (RedisError, OSError, TimeoutError) as e:
        raise CliError(f"cannot reach Redis at {redact(url)}: {e}", EXIT_UNAVAILABLE) from None


async def open_queue(args: argparse.Namespace, name: str) -> Queue:
    """The queue `name` at --redis-url, Redis reached: the caller disconnects it.
    A bad name or unreachable Redis is a CliError."""
    url = redis_url(args)
    try:
        queue = Queue.from_url(url, name=name)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        await check_redis(queue.redis, url)
    except BaseException:
        await queue.disconnect()
        raise
    return queue


def queue_on(client: aioredis.Redis, url: str, name: str) -> Queue:
    """The queue `name` through client (of the Redis at url), or on a cluster through a
    client of its own, as each queue talks to the primary of its own slot: disconnect
    it when its redis is not client."""
    return (Queue.from_url(url, name=name) if cluster.is_cluster_url(url)
            else Queue(client, name=name))


def add_redis(p: argparse.ArgumentParser, queue: bool = True) -> None:
    """--redis-url, and --queue (one queue) unless the command names its queues itself."""
    p.add_argument("--redis-url", help=redis_urls.HELP)
    if queue:
        p.add_argument("--queue", type=queue_name, default=None,
                       help="queue name (default: default)")


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


def state_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Append "(default: X)" to the help of each option that takes a value and has a
    default its help does not state yet (tuning knobs: what leaving them out means)."""
    for action in parser._actions:
        if (action.option_strings and action.nargs != 0 and action.help
                and "default" not in action.help and action.default not in (None, [], "")
                and not isinstance(action.default, bool)):
            action.help += " (default: %(default)s)"
    return parser
