"""Script calls gathered into one pipelined round trip.

A worker at concurrency 100 finishes up to 100 jobs in one turn of the event loop; sent
one by one, each write-back costs a connection from the pool, a system call to send
and one to read. The batcher sends every script call made within one turn of the loop
(up to MAX_BATCH) as one pipeline on one connection: one send, one read, each call
still atomic (its own EVALSHA) and answered on its own.

The scripts sent this way are idempotent under a resend (write-backs are guarded by
their attempt id), as a retried pipeline after a dropped connection may resend them.
"""

from __future__ import annotations

import asyncio
import typing as t

from redis.exceptions import NoScriptError, RedisError

if t.TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

MAX_BATCH = 500

_Call = tuple["AsyncScript", list[t.Any], list[t.Any], "asyncio.Future[t.Any]"]


class ScriptBatcher:
    """Runs script calls, gathering those of one loop turn into one pipeline."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def call(
        self, script: AsyncScript, keys: list[t.Any], args: list[t.Any]
    ) -> asyncio.Future[t.Any]:
        """The script's reply, sent with the other calls of this loop turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[t.Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        while self._pending:
            calls, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(self._send(calls))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:
                script, keys, args, future = calls[0]
                reply = await script(keys=keys, args=args, client=self.redis)
                if not future.done():
                    future.set_result(reply)
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            for (script, keys, args, future), reply in zip(calls, replies, strict=True):
                if isinstance(reply, NoScriptError):  # Redis restarted or flushed scripts
                    try:
                        reply = await script(keys=keys, args=args, client=self.redis)
                    except RedisError as e:
                        reply = e
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except Exception as e:  # the connection failed: each caller decides to retry
            for *_, future in calls:
                if not future.done():
                    future.set_exception(e)
        except BaseException:
            for *_, future in calls:
                future.cancel()
            raise

    async def drain(self) -> None:
        """Wait until every call made so far has been answered."""
        while self._pending or self._sending:
            if self._pending:
                self._flush()
            await asyncio.wait(list(self._sending))
