"""`podq web`: parse the options, start the shared feed and serve the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import typing as t
from dataclasses import dataclass

from aiohttp import web
from redis.exceptions import RedisError

from podq.cli_common import EXIT_REDIS_TOO_OLD, queue_name, state_defaults
from podq.errors import RedisVersionError
from podq.redact import redact
from podq.redis_url import HELP, redis_url
from podq.web.auth import Guard, load_token
from podq.web.feed import Feed
from podq.web.handlers import create_app

logger = logging.getLogger("podq.web")


@dataclass
class Options:
    redis_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    queues: list[str] | None = None  # None: every queue known to Redis, as they appear
    token: str | None = None
    sample_s: float = 10.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="podq web",
        description="A dashboard of podq's queues, jobs and workers. Read-only unless a "
        "write token is set ($PODQ_WEB_TOKEN, or a file: --token-file or "
        "$PODQ_WEB_TOKEN_FILE).",
    )
    p.add_argument("--redis-url", help=HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on "
                   "(default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--queue", type=queue_name, action="append", dest="queues", metavar="NAME",
                   help="a queue to show (repeatable; default: every queue on this Redis)")
    p.add_argument("--token-file", help="file holding the write token (e.g. a mounted "
                   "Secret); without any token the dashboard is read-only")
    p.add_argument("--sample-interval", type=float, default=10.0, dest="sample_s",
                   help="seconds between samples of the queues' counters (charts)")
    return state_defaults(p)


async def serve(options: Options, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until stop is set (or forever); ready is set once it listens."""
    feed = Feed(options.redis_url, options.queues, sample_s=options.sample_s)
    await feed.start()
    app = create_app(feed, Guard(options.token))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        logger.info("podq web on http://%s:%d (redis %s, %s)", options.host, options.port,
                    redact(options.redis_url),
                    "write token set" if options.token else "read-only")
        if ready is not None:
            ready.set()
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await feed.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        token = load_token(args.token_file)
    except OSError as e:
        print(f"podq web: cannot read the token file: {e}", file=sys.stderr)
        return 2
    options = Options(
        redis_url=redis_url(args.redis_url),
        host=args.host, port=args.port, queues=args.queues, token=token,
        sample_s=args.sample_s,
    )
    try:
        asyncio.run(serve(options))
    except KeyboardInterrupt:
        return 130
    except RedisVersionError as e:
        print(f"podq web: {e}", file=sys.stderr)
        return EXIT_REDIS_TOO_OLD
    except (OSError, RedisError) as e:
        print(f"podq web: cannot serve with Redis at {redact(options.redis_url)}: "
              f"{redact(str(e))}", file=sys.stderr)
        return 69
    return 0


__all__: t.Sequence[str] = ["Options", "build_parser", "main", "serve"]
