"""The images, without a Docker engine: what their Dockerfiles run, run as local processes.

The final stage's ENTRYPOINT + CMD (and the chart's arguments for them) are started with
the venv's `podq` in a folder laid out as the image's WORKDIR, against a real
redis-server, and must serve a job; the worker liveness probe the chart renders must
pass while the worker lives and fail once it is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import ROOT

from podq.queue import Queue

VENV_BIN = Path(sys.executable).parent
IMAGES = ROOT / "worker_image"


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) of the last stage, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, argument.strip()))
    assert stages, f"{dockerfile}: no FROM"
    return stages[-1]


def exec_form(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    values = [arg for ins, arg in stage if ins == instruction]
    assert values, f"no {instruction}"
    parsed = json.loads(values[-1])  # exec form only: a shell form would swallow signals
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, arg in stage:
        if ins == "ENV":
            for pair in arg.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def lay_out_workdir(stage: list[tuple[str, str]], into: Path) -> Path:
    """Copy what the final stage COPYs from the build context into the WORKDIR."""
    workdir = [arg for ins, arg in stage if ins == "WORKDIR"][-1]
    root = into / "image"
    for ins, arg in stage:
        if ins == "COPY" and not arg.startswith("--from"):
            *sources, dest = arg.split()
            target = root / dest.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for src in sources:
                shutil.copy(ROOT / src, target)
    folder = root / workdir.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local(argv: list[str]) -> list[str]:
    """The image's `podq` is the venv's here."""
    assert argv[0] == "podq", argv
    return [str(VENV_BIN / "podq"), *argv[1:]]


def process_env(stage: list[tuple[str, str]], redis_url: str, home: Path) -> dict[str, str]:
    env = {**os.environ, **image_env(stage)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    env["HOME"] = str(home)
    env["PODQ_REDIS_URL"] = redis_url
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def run_echo_job(redis_url: str, queue_name: str, deadline_s: float = 30) -> Any:
    queue = Queue.from_url(redis_url, name=queue_name)
    try:
        job = await queue.enqueue("echo", kwargs={"message": "from the image"})
        assert job is not None
        await job.refresh(until_complete=deadline_s)
        assert job.status == "complete", (job.status, job.error)
        return job.result
    finally:
        await queue.disconnect()


async def wait_exit(cmd: list[str], want: int, env: dict[str, str], cwd: Path,
                    deadline_s: float) -> tuple[str, str]:
    """Run cmd until it exits with `want`; its (stdout, stderr) then."""
    deadline = time.monotonic() + deadline_s
    while True:
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        if proc.returncode == want:
            return out.decode(), err.decode()
        if time.monotonic() > deadline:
            raise AssertionError(f"{cmd} did not exit {want} within {deadline_s}s: "
                                 f"{proc.returncode} {out.decode()}{err.decode()}")
        await asyncio.sleep(0.3)


def start(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=cwd, env=env)


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.operator"])
def test_dockerfile_is_slim_non_root_and_installs_the_repo(name: str) -> None:
    text = (IMAGES / name).read_text()
    stage = final_stage(IMAGES / name)
    bases = [arg for ins, arg in stage if ins == "FROM"]
    assert bases == ["${PYTHON_IMAGE}"] and "python:3.12-slim" in text
    users = [arg for ins, arg in stage if ins == "USER"]
    assert users and users[-1] == "10001:10001"  # numeric: runAsNonRoot can verify it
    # installed from this repository's source, in the build stage only
    assert "COPY operator/ ./operator/" in text and "pip install ." in text.replace("'", "")
    assert ("COPY", "--from=build /opt/podq /opt/podq") in stage
    ignore = (IMAGES / f"{name}.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:].count("!operator/") == 1


def installed_extras(dockerfile: Path) -> set[str]:
    """The extras of podq that the Dockerfile's `pip install` of the source names."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    (install,) = [line for line in lines if line.startswith("RUN") and "pip install" in line]
    target = shlex.split(install.split("pip install", 1)[1])[-1]
    assert target.startswith("."), target  # this repository's source
    extras = target[1:].strip("[]")
    return {e.strip() for e in extras.split(",") if e.strip()}


def extra_requirements(extras: set[str]) -> set[str]:
    """Distribution names those extras of pyproject.toml add."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras <= declared.keys(), extras - declared.keys()
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
            for extra in extras for req in declared[extra]}


def test_worker_image_installs_hiredis_and_the_operator_image_kopf_and_hiredis() -> None:
    """The worker image has the fast extra (hiredis: half the CPU per job, see
    docs/performance.md); the operator image the operator extra and the fast one too
    (hiredis: about 40% less operator CPU while Jobs are queued)."""
    worker = installed_extras(IMAGES / "Dockerfile")
    assert "fast" in worker and "hiredis" in extra_requirements(worker)
    assert "operator" not in worker  # no Kubernetes client in the worker image
    operator = installed_extras(IMAGES / "Dockerfile.operator")
    assert {"kopf", "hiredis"} <= extra_requirements(operator)


def test_operator_image_runs_podq_operator_with_args_the_cli_accepts() -> None:
    from podq.operator.main import build_parser

    stage = final_stage(IMAGES / "Dockerfile.operator")
    assert exec_form(stage, "ENTRYPOINT") == ["podq", "operator"]
    args = build_parser().parse_args(exec_form(stage, "CMD"))
    assert args.all_namespaces and args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert "operator" in installed_extras(IMAGES / "Dockerfile.operator")


def test_operator_cli_accepts_the_args_the_chart_renders(render) -> None:
    from podq.operator.main import build_parser

    for values in ({}, {"operator": {"watchNamespaces": ["a", "b"]}, "metrics": {
            "enabled": True}}):
        objs = render(values)
        (operator,) = [o for o in objs if o["kind"] == "Deployment"
                       and o["metadata"]["name"] == "podq-operator"]
        container = operator["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container  # the image's entrypoint, `podq operator`
        args = build_parser().parse_args(container["args"])
        assert args.liveness == "http://0.0.0.0:8080/healthz"
        if values:
            assert args.namespace == ["a", "b"] and args.metrics_port == 9090
        else:
            assert args.all_namespaces
            assert args.queue_access == "explicit"
            assert args.allow_queue == ["default=podq-system"]
        # two replicas by default, so the chart adds leader election; its Lease is named
        # after the Deployment, in the release's namespace
        assert args.leader_elect and args.leader_election_name == "podq-operator"

    # the image alone (docker run) behaves as the chart's install with one replica,
    # where there is no Lease to take, but for the queue grants, which name the release
    # namespace (docs/security.md), and the webhook, which needs the chart's certificate
    objs = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
    (operator,) = [o for o in objs if o["kind"] == "Deployment"
                   and o["metadata"]["name"] == "podq-operator"]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    stage = final_stage(IMAGES / "Dockerfile.operator")
    assert [a for a in container["args"] if not a.startswith(
        ("--queue-access=", "--allow-queue=", "--webhook-"))] == exec_form(stage, "CMD")


# ---------------------------------------------------------------- the worker image, run


async def test_worker_image_default_command_serves_a_job(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    stage = final_stage(IMAGES / "Dockerfile")
    entrypoint, cmd = exec_form(stage, "ENTRYPOINT"), exec_form(stage, "CMD")
    assert entrypoint == ["podq", "worker"]
    workdir = lay_out_workdir(stage, tmp_path)
    env = process_env(stage, redis_url, tmp_path)
    processes.append(start(local(entrypoint + cmd), workdir, env))

    result = await run_echo_job(redis_url, "default")
    assert result["message"] == "from the image"


async def test_worker_with_chart_args_serves_jobs_and_its_liveness_probe_tracks_it(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]], render
) -> None:
    """What Kubernetes runs for the chart's worker pool: the image's entrypoint with the
    chart's args, and the chart's exec liveness probe beside it."""
    objs = render({"workers": {"queue": "images", "concurrency": 3}})
    (worker,) = [o for o in objs if o["kind"] == "Deployment"
                 and o["metadata"]["name"] == "podq-worker"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    probe = container["livenessProbe"]["exec"]["command"]

    stage = final_stage(IMAGES / "Dockerfile")
    workdir = lay_out_workdir(stage, tmp_path)
    env = process_env(stage, redis_url, tmp_path)
    # no live worker yet: the probe fails
    await wait_exit(local(probe), 1, env, workdir, deadline_s=30)

    worker_proc = start(local(exec_form(stage, "ENTRYPOINT") + container["args"]), workdir, env)
    processes.append(worker_proc)
    result = await run_echo_job(redis_url, "images")
    assert result["message"] == "from the image"
    healthy, _ = await wait_exit(local(probe), 0, env, workdir, deadline_s=30)
    assert f":{worker_proc.pid}:" in healthy  # the worker id holds host and pid

    # the probe does not confuse another host's worker with this one
    _, other = await wait_exit(local([*probe, "--hostname", "other-pod"]), 1, env, workdir, 30)
    assert "no live worker of host 'other-pod'" in other

    # a worker killed without cleaning up: its record expires, the probe fails
    worker_proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(worker_proc.wait, 30)
    await wait_exit(local(probe), 1, env, workdir, deadline_s=30)


async def test_worker_liveness_probe_is_healthy_when_redis_is_unreachable(
    tmp_path: Path,
) -> None:
    """Restarting every worker pod during a Redis outage would only add to it."""
    from podq.testing import free_port

    stage = final_stage(IMAGES / "Dockerfile")
    workdir = lay_out_workdir(stage, tmp_path)
    env = process_env(stage, f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    _, err = await wait_exit(local(["podq", "worker-health", "podq_hello.settings"]), 0, env,
                             workdir, deadline_s=20)
    assert "cannot reach Redis" in err


async def test_worker_with_chart_args_finishes_running_jobs_on_sigterm(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]], render
) -> None:
    """A pod being scaled down gets SIGTERM: with the chart's args the worker lets its
    running job finish (within longestJobTimeoutSeconds), then exits by itself."""
    objs = render({"workers": {"longestJobTimeoutSeconds": 30}})
    (worker,) = [o for o in objs if o["kind"] == "Deployment"
                 and o["metadata"]["name"] == "podq-worker"]
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    stage = final_stage(IMAGES / "Dockerfile")
    workdir = lay_out_workdir(stage, tmp_path)
    env = process_env(stage, redis_url, tmp_path)
    proc = start(local(exec_form(stage, "ENTRYPOINT") + pod["containers"][0]["args"]),
                 workdir, env)
    processes.append(proc)

    queue = Queue.from_url(redis_url, name="default")
    try:
        job = await queue.enqueue("sleep", kwargs={"seconds": 3.0}, timeout=30)
        assert job is not None
        deadline = time.monotonic() + 30
        while True:  # wait until the worker runs it
            await job.refresh()
            if job.status == "active":
                break
            assert time.monotonic() < deadline, f"job never started: {job.status}"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        await job.refresh(until_complete=30)
        assert job.status == "complete", (job.status, job.error)
        assert job.result == 3.0
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0
    finally:
        await queue.disconnect()
