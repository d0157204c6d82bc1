"""What the bad-input catalogue (test_bad_inputs.py) runs on: the Stage (one operator,
one worker, a password-protected redis-server, two namespaces) and each case's Ctx."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from kubernetes_asyncio import client
from operator_harness import (
    GROUP,
    VERSION,
    Process,
    condition,
    eventually,
)

from podq.testing import ControlPlane

PASSWORD = "s3cr/t@pa%2Fss:w0rd"
ENCODED = urllib.parse.quote(PASSWORD, safe="")
SECRET_FORMS = (PASSWORD, ENCODED, urllib.parse.quote(PASSWORD), "s3cr/t@pa")
CANARY_S = 20.0  # apply-to-Complete of the canary, on a loaded 2-core machine
IDLE_QUEUE = "idle"  # no worker: its jobs stay queued, for the Redis corruption cases


@dataclass
class Stage:
    plane: ControlPlane
    url: str
    poison: str  # namespace of the bad inputs
    canary: str  # namespace of the canary Jobs
    logs: Path
    operator: Process
    worker: Process
    metrics_port: int
    worker_metrics_port: int = 0
    canary_times: list[float] = field(default_factory=list)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def wait_http(process: Process, url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.alive, f"operator exited:\n{process.tail()}"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"operator not healthy after {within}s:\n{process.tail()}")


class Ctx:
    """What a case gets: the stage and an API client for this test."""

    def __init__(self, stage: Stage, api: client.ApiClient) -> None:
        self.stage = stage
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.name = f"bad-{uuid.uuid4().hex[:8]}"

    async def create(self, spec: dict[str, Any], namespace: str | None = None,
                     name: str | None = None) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job",
                "metadata": {"name": name or self.name}, "spec": spec}
        await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace or self.stage.poison, "jobs", body)

    async def create_raw(self, spec_json: str) -> None:
        """Create from JSON text: values nested thousands of levels deep, which the API
        server accepts (up to 10,000) and Python's json.dumps cannot write."""
        manifest = (f'{{"apiVersion":"{GROUP}/{VERSION}","kind":"Job",'
                    f'"metadata":{{"name":"{self.name}"}},"spec":{spec_json}}}')
        done = await asyncio.to_thread(
            self.stage.plane.kubectl, "create", "-n", self.stage.poison, "-f", "-",
            input=manifest, check=False)
        assert done.returncode == 0, done.stderr

    async def delete_and_wait(self, within: float = 60) -> None:
        await self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.stage.poison, "jobs", self.name)

        async def gone() -> bool:
            listed = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.stage.poison, "jobs",
                field_selector=f"metadata.name={self.name}")
            return not listed["items"]
        await eventually(gone, within=within, what=f"{self.name} to be deleted")

    async def get(self, name: str | None = None, namespace: str | None = None) -> dict:
        return await self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace or self.stage.poison, "jobs", name or self.name)

    async def wait(self, predicate: Callable[[dict], bool], what: str,
                   within: float = 60) -> dict:
        seen: list[dict] = []

        async def probe() -> dict | None:
            body = await self.get()
            seen[:] = [body]
            return body if predicate(body) else None
        try:
            return await eventually(probe, within=within, what=f"{self.name}: {what}")
        except AssertionError as error:
            status = {"status": seen[0].get("status"), "finalizers": seen[0]["metadata"].get(
                "finalizers")} if seen else None
            raise AssertionError(f"{error}; status: {json.dumps(status)[:2000]}") from None

    async def marked(self, type_: str, reason: str, naming: str, within: float = 60) -> dict:
        """Wait for condition type_ True with reason whose message names `naming`, and a
        Warning Event with that reason."""
        def has(body: dict) -> bool:
            found = condition(body, type_)
            return bool(found and found["status"] == "True" and found["reason"] == reason)
        body = await self.wait(has, f"{type_}={reason}", within)
        assert naming in condition(body, type_)["message"], condition(body, type_)

        async def event() -> bool:
            listed = await self.core.list_namespaced_event(
                self.stage.poison, field_selector=f"involvedObject.name={self.name}")
            return any(e.reason == reason and e.type == "Warning" for e in listed.items)
        await eventually(event, what=f"a Warning Event {reason} on {self.name}")
        return body

    async def redis(self) -> aioredis.Redis:
        return aioredis.from_url(self.stage.url)



async def canary(ctx: Ctx) -> float:
    """Apply a canary Job in the canary namespace; seconds until it is Complete."""
    name = f"canary-{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    await ctx.create({"function": "noop"}, namespace=ctx.stage.canary, name=name)

    async def complete() -> bool:
        body = await ctx.get(name, ctx.stage.canary)
        return (body.get("status") or {}).get("status") == "complete"
    await eventually(complete, within=CANARY_S, what=f"canary {name} to complete")
    return time.monotonic() - began


