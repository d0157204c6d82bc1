"""Job keys (uuid1 strings, unique within a process and across a fork), the Redis
keys of a queue as docs/redis-keys.md lists them, in one slot per queue, and the
scripts."""

from __future__ import annotations

import inspect
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

import podq
from podq import Job, Queue, Status
from podq.queue.keys import QUEUES_KEY, QueueKeys
from podq.queue.store import load_script


def test_default_keys_are_unique_version_1_uuids() -> None:
    keys = [Job("f").key for _ in range(20000)]
    assert len(set(keys)) == len(keys)
    assert {uuid.UUID(key).version for key in keys[:100]} == {1}


def test_a_forked_child_draws_keys_of_its_own() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write a batch of keys made at the same time as the parent's
        os.close(read)
        os.write(write, "\n".join(Job("f").key for _ in range(2000)).encode())
        os._exit(0)
    os.close(write)
    parent = {Job("f").key for _ in range(2000)}
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split("\n"))
    assert len(child) == 2000
    assert not parent & child


def built_names() -> set[str]:
    """Every key and channel podq.queue.keys builds for a queue named NAME, each
    argument shown as `<its parameter name>` (job_key -> `<job key>`)."""
    keys = QueueKeys("NAME")
    names = {QUEUES_KEY}
    for attr in QueueKeys.__slots__:
        if attr != "name" and not attr.endswith("prefix"):
            names.add(getattr(keys, attr))
    for attr, member in vars(QueueKeys).items():
        if attr.startswith("_") or attr in QueueKeys.__slots__:
            continue
        if isinstance(member, property):
            names.add(getattr(keys, attr))
        elif callable(member):
            params = list(inspect.signature(member).parameters)[1:]
            names.add(member(keys, *(f"<{p.replace('_', ' ')}>" for p in params)))
    return names


def test_redis_keys_md_lists_exactly_the_keys_and_channels_podq_builds() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "redis-keys.md").read_text()
    rows = re.findall(r"^\| `(podq:[^`]+)` \|", doc, flags=re.MULTILINE)
    assert len(rows) == len(set(rows)), "a key is listed twice"
    assert set(rows) == built_names()


def test_every_name_starts_with_the_queue_hash_tag_but_the_queue_list() -> None:
    for name in built_names() - {QUEUES_KEY}:
        assert name.startswith("podq:{NAME}:"), name


def test_the_priority_zadd_is_written_once_and_every_script_loads(redis_url: str) -> None:
    folder = Path(podq.__file__).parent / "scripts"
    scripts = sorted(p.name for p in folder.glob("*.lua"))
    texts = {name: (folder / name).read_text() for name in scripts}
    assert [n for n, body in texts.items() if "1e12" in body] == []
    assert sorted(n for n, body in texts.items() if "make_ready(" in body) == [
        "enqueue.lua", "enqueue_many.lua", "take.lua", "write.lua"]
    client = redis.Redis.from_url(redis_url)
    try:
        for name in scripts:  # compiles, with the shared functions it calls
            assert client.script_load(load_script(name))
    finally:
        client.close()


async def test_fix9_keys_of_a_queue_share_a_hash_tag(queue: Queue) -> None:
    other = Queue(queue.redis, name="other")
    for q in (queue, other):
        await q.enqueue("f", key="a")
        await q.enqueue("f", key="b", scheduled=time.time() + 60)
        [job], _ = await q.take(1, "w1")
        await q.write_worker_info("w1", {"id": "w1"}, ttl=30)
        await q.abort(job, "x")
        await q.enqueue("f", key="c")
        [c], _ = await q.take(1, "w1")
        await q.finish(c, Status.COMPLETE)
        await q.sweep(lock=1)
    keys = [k.decode() for k in await queue.redis.keys("podq:{*")]
    assert keys
    slots: dict[str, set[int]] = {}
    for key in keys:
        name = key.split("{", 1)[1].split("}", 1)[0]
        slots.setdefault(name, set()).add(key_slot(key.encode()))
    assert set(slots) == {"test", "other"}
    assert all(len(s) == 1 for s in slots.values())  # one slot per queue
    assert slots["test"] != slots["other"]  # different queues spread over slots
    for q in (queue, other):  # the shard channels too (SPUBLISH in the scripts)
        assert {key_slot(c.encode()) for c in (q.keys.changes, q.keys.wake)} == slots[q.name]
    with pytest.raises(ValueError):
        Queue(queue.redis, name="bad{name}")
