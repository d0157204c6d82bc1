"""The bad-input catalogue (issue 8): manifests, Python API calls, CLI arguments and
corrupted or foreign data under a queue's Redis keys, on the real control plane and a
real redis-server that requires a password (holding '/', '@', ':' and '%2F').

One operator and one worker serve the whole module. Every case asserts a clear error
naming the thing, that a canary Job in another namespace still completes within
CANARY_S, and that the operator is still the process started at the beginning (no
restart). The last tests check that the password appeared nowhere: logs of the operator
and the worker, Events, statuses and metric labels.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from bad_input_cases import CASES
from bad_input_stage import ENCODED, PASSWORD, SECRET_FORMS, Ctx, Stage, canary, fetch, wait_http
from kubernetes_asyncio import client
from operator_harness import (
    GROUP,
    KUBE_TESTS,
    PODQ,
    VERSION,
    Process,
)

from podq.operator import safejson
from podq.testing import ControlPlane, RedisServer, free_port


@pytest.fixture(scope="module")
def stage(podq_crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    logs = tmp_path_factory.mktemp("bad-inputs")
    with RedisServer() as server:
        url = f"redis://:{ENCODED}@127.0.0.1:{server.port}/0"
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        safejson.install()  # this process reads the deep Jobs back too
        suffix = uuid.uuid4().hex[:6]
        poison, canary = f"poison-{suffix}", f"canary-{suffix}"
        for namespace in (poison, canary):
            podq_crds.kubectl("create", "namespace", namespace)
        metrics_port, health_port, worker_metrics_port = free_port(), free_port(), free_port()
        operator = Process(
            [PODQ, "operator", "--namespace", poison, "--namespace", canary, "--redis-url", url,
             "--reconcile-interval", "1", "--cron-refresh", "1", "--metrics-host", "127.0.0.1",
             "--metrics-port",
             str(metrics_port), "--liveness", f"http://127.0.0.1:{health_port}/healthz"],
            logs / "operator.log", dict(podq_crds.env))
        worker = Process(
            [PODQ, "worker", "operator_worker_settings.settings", "--redis-url", url,
             "--metrics-host", "127.0.0.1", "--metrics-port", str(worker_metrics_port)],
            logs / "worker.log", dict(os.environ, PYTHONPATH=str(KUBE_TESTS)))
        stage = Stage(podq_crds, url, poison, canary, logs, operator, worker, metrics_port,
                      worker_metrics_port)
        try:
            wait_http(operator, f"http://127.0.0.1:{health_port}/healthz")
            yield stage
        finally:
            for process in (operator, worker):
                process.stop()
                print(f"--- {process.log.name} ---\n{process.tail(60)}")
            for namespace in (poison, canary):
                podq_crds.discard_namespace(namespace)



@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input(stage: Stage, kube_api: client.ApiClient, name: str) -> None:
    ctx = Ctx(stage, kube_api)
    await CASES[name](ctx)
    stage.canary_times.append(await canary(ctx))
    assert stage.operator.alive, f"operator exited:\n{stage.operator.tail()}"
    assert stage.worker.alive, f"worker exited:\n{stage.worker.tail()}"


def test_catalogue_size() -> None:
    assert len(CASES) >= 40, len(CASES)


async def test_no_secret_in_logs_events_status_or_metrics(
    stage: Stage, kube_api: client.ApiClient
) -> None:
    """After the catalogue (one case fails a job with the password in every URL form)."""
    assert stage.operator.popen.pid and stage.operator.alive  # still the first process
    texts = {"operator log": stage.operator.log.read_text(errors="replace"),
             "worker log": stage.worker.log.read_text(errors="replace")}
    assert "***" in texts["worker log"]  # the leaking job was logged, masked
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    for namespace in (stage.poison, stage.canary):
        events = await core.list_namespaced_event(namespace)
        texts[f"events {namespace}"] = "\n".join(
            f"{e.reason} {e.message}" for e in events.items)
        jobs = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "jobs")
        texts[f"statuses {namespace}"] = json.dumps([j.get("status") for j in jobs["items"]])
    assert "***" in texts[f"events {stage.poison}"]
    for what, port in (("operator", stage.metrics_port), ("worker", stage.worker_metrics_port)):
        texts[f"{what} metrics"] = await asyncio.to_thread(
            fetch, f"http://127.0.0.1:{port}/metrics")
    assert 'function="leak"' in texts["worker metrics"]  # the labels are there, unmasked
    for where, text in texts.items():
        for secret in SECRET_FORMS:
            assert secret not in text, f"{secret!r} in {where}"
    print(f"canary apply-to-Complete (s): {sorted(stage.canary_times)}")

