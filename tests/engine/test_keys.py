"""Default job keys: uuid1 strings, unique within a process and across a fork."""

from __future__ import annotations

import os
import uuid

from podq import Job


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
