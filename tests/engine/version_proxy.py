"""The real redis-server, reporting an older version: a TCP proxy that passes every
command and reply through unchanged but for `redis_version:` in INFO replies. podq
refuses a Redis older than 7.0 (podq.queue.redis.check_redis_version); the tests of
what each podq process does then (test_redis_version*.py, the web and operator tests)
need no old redis-server: all else they meet is the real server.

The proxy reads the replies as RESP (2 and 3), one whole reply at a time, so that the
rewritten INFO text is sent with its new length."""

from __future__ import annotations

import asyncio
import re

from engine_helpers import RedisProxy, relay

OLD_VERSION = "6.2.14"  # the last Redis 6: no sharded pub/sub (SPUBLISH, SSUBSCRIBE)
_VERSION_LINE = re.compile(rb"redis_version:[^\r\n]*")
_AGGREGATES = {b"*": 1, b"~": 1, b">": 1, b"%": 2, b"|": 2}  # elements per count
_BLOBS = {b"$", b"=", b"!"}  # a length, then that many bytes


class OldVersionProxy(RedisProxy):
    """`async with OldVersionProxy(redis_port) as proxy:` a Redis at `proxy.url` that
    is the real one on redis_port, but for INFO reporting `redis_version:{version}`.
    `infos` counts the INFO replies it rewrote. `listen_port` may be chosen (a port a
    client already tries, to bring "Redis" up under it)."""

    def __init__(self, port: int, version: str = OLD_VERSION,
                 listen_port: int | None = None) -> None:
        super().__init__(port, listen_port)
        self.version = version.encode()
        self.infos = 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while True:
                reply = await self._reply(redis_r)
                if not reply:
                    return
                client_w.write(reply)
                await client_w.drain()

        await relay([upstream(), downstream()], [client_w, redis_w])

    async def _reply(self, reader: asyncio.StreamReader) -> bytes:
        """One whole reply (b"" at the end of the stream), INFO's text rewritten."""
        line = await reader.readline()
        if not line.endswith(b"\r\n"):
            return b""
        kind, count = line[:1], line[1:-2]
        if kind in _BLOBS and int(count) >= 0:
            body = (await reader.readexactly(int(count) + 2))[:-2]
            if _VERSION_LINE.search(body):
                self.infos += 1
                body = _VERSION_LINE.sub(b"redis_version:" + self.version, body)
                line = kind + str(len(body)).encode() + b"\r\n"
            return line + body + b"\r\n"
        if kind in _AGGREGATES and int(count) > 0:
            parts = [line]
            for _ in range(int(count) * _AGGREGATES[kind]):
                part = await self._reply(reader)
                if not part:
                    return b""
                parts.append(part)
            return b"".join(parts)
        return line  # a simple string, error, integer, null, double, boolean, ...
