"""Job keys (uuid1 strings, unique within a process and across a fork), the Redis
keys of a queue as docs/redis-keys.md lists them, and the scripts."""

from __future__ import annotations

import inspect
import os
import re
import uuid
from pathlib import Path

import redis

import podq
from podq import Job
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
