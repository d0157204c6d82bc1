"""The operator's /metrics scraped during a scale-up, and `podq status` reading a Job
resource, on the real control plane with the real operator and a real worker."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from operator_harness import (
    PODQ,
    Harness,
    eventually,
)
from prometheus_client.parser import text_string_to_metric_families
from test_operator_autoscale import deployment, replicas

from podq.testing import free_port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def podq(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PODQ, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_operator_metrics_show_depth_and_scaling_decision(harness: Harness) -> None:
    port = free_port()
    harness.start_operator("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    await harness.apps.create_namespaced_deployment(harness.namespace, deployment(
        "metered", "metered", **{"podq.dev/concurrency": "2", "podq.dev/max-replicas": "5"}))
    for index in range(3):
        await harness.create_job(f"m-{index}", "noop", queue="metered")

    async def scaled() -> bool:
        return await replicas(harness, "metered") == 2
    await eventually(scaled, within=30, what="2 replicas for 3 jobs at concurrency 2")

    def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, frozenset(labels.items())

    async def seen() -> dict | None:
        samples = scrape(port)
        return samples if samples.get(key("podq_operator_queue_depth", queue="metered")) == 3 \
            else None
    samples = await eventually(seen, within=20, what="depth 3 in the operator's metrics")
    assert samples[key("podq_operator_queue_active_jobs", queue="metered")] == 0
    ups = samples[key("podq_operator_scaling_decisions_total", queue="metered",
                      direction="up")]
    assert 1 <= ups <= 2  # from 0 as the jobs arrived: one step or two
    assert key("podq_operator_scaling_decisions_total", queue="metered",
               direction="down") not in samples
    assert samples[key("podq_operator_desired_replicas", namespace=harness.namespace,
                       deployment="metered")] == 2
    assert samples[key("podq_operator_worker_deployments")] == 1
    assert samples[key("podq_operator_job_resources")] == 3

    async def by_status() -> bool:  # queued once the status writer has synced them
        return scrape(port).get(key("podq_operator_job_resources_by_status", queue="metered",
                                    status="queued")) == 3
    await eventually(by_status, within=20, what="3 queued Job resources in the by-status gauge")


async def test_podq_status_reads_the_job_resource(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker("st")
    await harness.create_job("greet", "echo", queue="st", kwargs={"hello": "world"})
    await harness.wait_status("greet", "complete", within=60)
    env = harness.plane.env
    code, out, err = await podq(env, "status", "job.podq.dev/greet", "-n", harness.namespace,
                                "--json")
    assert code == 0, err
    state = json.loads(out)
    assert state["status"] == "complete" and state["result"] == {"hello": "world"}
    assert state["function"] == "echo" and state["queue"] == "st"
    assert state["attempts"] == 1 and state["worker"] and state["completed"]
    code, out, err = await podq(env, "status", "--resource", "greet", "--namespace",
                                harness.namespace)
    assert code == 0 and "status:    complete" in out, err
    code, out, err = await podq(env, "status", "job.podq.dev/absent", "-n", harness.namespace)
    assert code == 1
    assert f"job.podq.dev/absent not found in namespace {harness.namespace}" in err
