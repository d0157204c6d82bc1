"""Redis ACL users per queue (docs/security.md), on a real redis-server with ACLs on:
the default user needs a password, and each queue's user may touch only its keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from engine_helpers import Workers, wait_for
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from podq import Job, Queue, Status
from podq.queue.keys import QueueKeys, acl_rules
from podq.testing import RedisServer

# redis-py turns Redis's "-NOPERM ..." reply into NoPermissionError with this text
NOPERM = "no permissions"


async def add(ctx: dict, a: int, b: int) -> int:
    return a + b


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A private redis-server (the session's stays open): ACL users are per server."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def users(acl_server: RedisServer) -> AsyncIterator[dict[str, str]]:
    """URLs by role: the operator (every queue), and a worker and a client per queue."""
    base = f"127.0.0.1:{acl_server.port}/0"
    admin = aioredis.from_url(f"redis://{base}")
    for user, queue in (("operator", None), ("worker-emails", "emails"),
                        ("client-emails", "emails"), ("worker-reports", "reports")):
        await admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{user}-pw",
                                    *acl_rules(queue))
    await admin.flushall()
    # ACLs on: from now on nobody gets in without a user and password
    await admin.execute_command("ACL", "SETUSER", "default", "resetpass", ">admin-pw")
    await admin.aclose()
    yield {user: f"redis://{user}:{user}-pw@{base}"
           for user in ("operator", "worker-emails", "client-emails", "worker-reports")}
    admin = aioredis.from_url(f"redis://default:admin-pw@{base}")
    await admin.execute_command("ACL", "SETUSER", "default", "nopass")
    await admin.aclose()


async def test_worker_and_client_of_a_queue_work_with_its_keys_only(
        users: dict[str, str], acl_server: RedisServer) -> None:
    emails = Queue.from_url(users["client-emails"], name="emails")
    worker_queue = Queue.from_url(users["worker-emails"], name="emails")
    workers = Workers()
    try:
        await emails.connect()
        await workers.start(worker_queue, [add])
        job = await emails.enqueue(Job("add", kwargs={"a": 2, "b": 3}, key="sum"))
        assert job is not None
        await wait_for(lambda: emails.job("sum"), 30)

        async def done() -> bool:
            found = await emails.job("sum")
            return found is not None and found.status == Status.COMPLETE
        await wait_for(done, 30)
        assert (await emails.job("sum")).result == 5
        # the liveness record, the stats, the scripts: all under the queue's prefix
        assert await emails.workers()

        # the same client on another queue's keys: refused by Redis, not by podq
        reports = Queue.from_url(users["client-emails"], name="reports")
        with pytest.raises(NoPermissionError, match=NOPERM):
            await reports.enqueue(Job("add", kwargs={"a": 1, "b": 1}, key="steer"))
        with pytest.raises(NoPermissionError, match=NOPERM):
            await reports.job("anything")
        raw = aioredis.from_url(users["client-emails"])
        for command in (("GET", QueueKeys("reports").job("x")),
                        ("HGETALL", QueueKeys("reports").job("x")),
                        ("PUBLISH", QueueKeys("reports").wake, "queued:"),
                        ("SPUBLISH", QueueKeys("reports").wake, "queued:"),
                        ("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"),
                        # keyless, so unfiltered: they would list other queues' job keys
                        ("SCAN", "0"), ("RANDOMKEY",)):
            with pytest.raises(NoPermissionError, match=NOPERM):
                await raw.execute_command(*command)
        # nor through a script of its own: keys are checked inside Lua too
        with pytest.raises(ResponseError, match=r"(?i)no permissions|noperm"):
            await raw.eval("return redis.call('GET', KEYS[1])", 1, QueueKeys("reports").job("x"))
        await raw.aclose()
        await reports.disconnect()

        # another queue's worker cannot take this queue's jobs
        thief = Queue.from_url(users["worker-reports"], name="emails")
        with pytest.raises(NoPermissionError, match=NOPERM):
            await thief.enqueue(Job("add", kwargs={"a": 0, "b": 0}))
        await thief.disconnect()

        # the operator's user reaches every queue
        operator = Queue.from_url(users["operator"], name="reports")
        assert await operator.enqueue(Job("add", kwargs={"a": 1, "b": 2}, key="op")) is not None
        await operator.disconnect()

        # and without a user: refused outright
        anonymous = aioredis.from_url(f"redis://127.0.0.1:{acl_server.port}/0")
        with pytest.raises(AuthenticationError):
            await anonymous.get(QueueKeys("emails").job("sum"))
        await anonymous.aclose()
    finally:
        await workers.stop_all()
        await emails.disconnect()
        await worker_queue.disconnect()


def test_acl_rules_cover_one_queue_prefix() -> None:
    rules = acl_rules("emails")
    assert "~podq:{emails}:*" in rules and "&podq:{emails}:*" in rules
    assert "~podq:queues" in rules and "-@dangerous" in rules
    assert not [r for r in rules if r.startswith(("~", "&")) and "reports" in r]
    assert "~podq:*" in acl_rules(None)
    with pytest.raises(ValueError):
        acl_rules("bad{name}")
