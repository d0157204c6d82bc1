"""redis.acl against a real redis-server: the embedded Redis's rendered arguments create
one ACL user per worker pool queue, with podq.queue.keys.acl_rules; a pool's worker,
started with its rendered args and env, serves its queue as that user and is refused
(NOPERM) on any other queue; the operator's URL still reaches every queue.

The kubelet's part (Secret values into env, `$(VAR)` expansion) is done by hand, as in
test_redis_wiring.py."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from chart_helpers import ROOT
from test_redis_wiring import kubelet_env, one

from podq.queue import Queue
from podq.queue.keys import acl_rules
from podq.testing import free_port, wait_for_port

VENV_BIN = Path(sys.executable).parent
VALUES = {"redis": {"embedded": {"enabled": True}, "acl": {"enabled": True}},
          "workers": {"pools": [{"name": "emails", "settings": "podq_hello.settings"}]}}


def user_rules(args: list[str]) -> dict[str, list[str]]:
    """`--user NAME on >PASSWORD rules...` arguments of redis-server, by user name."""
    users: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        if arg == "--user":
            rest = args[i + 1:]
            end = next((j for j, a in enumerate(rest) if a.startswith("--")), len(rest))
            users[rest[0]] = rest[1:end]
    return users


def test_acl_users_per_queue_confine_each_pool(render, tmp_path: Path) -> None:
    objs = render(VALUES)
    secret = one(objs, "Secret", "podq-redis-acl")
    passwords = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(passwords) == ["default", "emails"]
    assert len(set(passwords.values())) == 2 and all(len(p) == 32 for p in passwords.values())
    secrets = {("podq-redis-acl", q): p for q, p in passwords.items()}
    secrets[("podq-redis", "redis-password")] = main_password = "operatorPassw0rd"

    (container,) = one(objs, "Deployment", "podq-redis")["spec"]["template"]["spec"][
        "containers"]
    env = kubelet_env(container, secrets)
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    users = user_rules(args)
    # the chart's copy of the rules is podq's (keys.acl_rules), for every pool queue
    for queue in ("default", "emails"):
        assert users[f"podq-{queue}"] == ["on", f">{passwords[queue]}", *acl_rules(queue)]

    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    args = [str(data) if a == "/data" else a for a in args]
    args[args.index("--port") + 1] = str(port)
    server = subprocess.Popen(["redis-server", *args, "--bind", "127.0.0.1",
                               "--logfile", str(tmp_path / "redis.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker_proc = None
    try:
        wait_for_port(port, 30)
        local = f"127.0.0.1:{port}"
        worker = one(objs, "Deployment", "podq-worker-emails")["spec"]["template"]["spec"][
            "containers"][0]
        worker_env = kubelet_env(worker, secrets)
        url = worker_env["PODQ_REDIS_URL"]
        assert url == f"redis://podq-emails:{passwords['emails']}@podq-redis:6379/0"
        worker_env["PODQ_REDIS_URL"] = url = url.replace("podq-redis:6379", local)
        operator = one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
            "containers"][0]
        operator_url = kubelet_env(operator, secrets)["PODQ_REDIS_URL"].replace(
            "podq-redis:6379", local)
        assert operator_url.startswith(f"redis://:{main_password}@")

        worker_proc = subprocess.Popen(
            [str(VENV_BIN / "podq"), "worker", *worker["args"]],
            env={**os.environ, **worker_env, "HOME": str(tmp_path)}, cwd=ROOT / "worker_image")

        async def run() -> Any:
            emails = Queue.from_url(url, name="emails")
            other = Queue.from_url(url, name="default")
            everything = Queue.from_url(operator_url, name="default")
            try:
                job = await emails.enqueue("echo", kwargs={"message": "as podq-emails"})
                assert job is not None
                await job.refresh(until_complete=30)
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await other.enqueue("echo", kwargs={"message": "steered"})
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await other.job("anything")
                assert await everything.enqueue("echo", kwargs={}) is not None
                return job
            finally:
                for queue in (emails, other, everything):
                    await queue.disconnect()

        job = asyncio.run(run())
        assert job.status == "complete" and job.result["message"] == "as podq-emails"
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            worker_proc.wait(20)
        server.terminate()
        server.wait(10)


def test_acl_needs_a_password_source(render_error) -> None:
    assert "existingSecret" in render_error({"redis": {"url": "redis://r:6379/0",
                                                       "acl": {"enabled": True}}})
    assert "auth" in render_error({"redis": {"embedded": {"enabled": True, "auth": False},
                                             "acl": {"enabled": True}}})
