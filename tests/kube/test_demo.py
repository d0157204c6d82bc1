"""./scripts/demo in processes mode, as a new user runs it: the examples finish, and
what it prints to reach it works from another shell (the Redis URL with podq jobs and
podq info, both metrics endpoints, kubectl refusing a bad schedule through the
operator's webhook); closing its terminal (SIGHUP) stops everything it started.

It starts a control plane of its own (in a temporary folder, $PODQ_DEMO_DIR)."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from podq.testing import ControlPlane

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parents[2]
PODQ = str(Path(sys.executable).parent / "podq")
BAD_CRON = """apiVersion: podq.dev/v1alpha1
kind: CronJob
metadata: {name: bad-schedule}
spec:
  schedule: "61 * * * *"
  jobTemplate: {spec: {function: report}}
"""


class Demo:
    """scripts/demo.py --processes, its output read line by line as it comes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--processes",
             "--timeout", "240"],
            cwd=ROOT, env={**os.environ, "PODQ_DEMO_DIR": str(run_dir)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return
        pytest.fail(f"the demo never printed {text!r}:\n" + "\n".join(self.seen))

    def printed(self, pattern: str) -> str:
        for line in self.seen:
            if match := re.search(pattern, line):
                return match.group(1)
        pytest.fail(f"the demo printed nothing like {pattern!r}:\n" + "\n".join(self.seen))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "demo")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            os.killpg(running.process.pid, signal.SIGTERM)  # the demo stops its children
            try:
                running.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait(timeout=30)


def processes_under(folder: Path) -> list[str]:
    """Command lines of live processes naming `folder` (control plane, operator, worker)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if str(folder) in cmdline and proc.name.isdigit() and int(proc.name) != os.getpid():
            found.append(cmdline)
    return found


def run(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([PODQ, *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(420)
def test_demo_prints_what_reaches_it_and_stops_on_sighup(demo: Demo) -> None:
    demo.until("All example Jobs finished.", within=300)
    demo.until("Ctrl-C stops", within=30)
    assert demo.seen[0].startswith("==> mode: processes")

    # the Redis URL it prints: podq jobs lists the examples, a CronJob's child among them
    env = {**os.environ, "PODQ_REDIS_URL": demo.printed(r"export PODQ_REDIS_URL=(\S+)")}
    finished = run("jobs", "--status", "complete", env=env)
    for name in ("add-two-numbers", "count-words", "flaky-with-retries", "report-"):
        assert f"default/{name}" in finished, finished
    assert "workers 1" in run("info", env=env)

    # both metrics endpoints it prints answer, with the metrics the alerts read
    for who, metric in (("operator", "podq_operator_job_resources_by_status{"),
                        ("worker", "podq_job_queue_wait_seconds_bucket{")):
        url = demo.printed(rf"curl -s (\S+)\s+# the {who}'s metrics")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert metric in response.read().decode(), f"{who}: no {metric} at {url}"

    # kubectl apply refuses a bad schedule, naming the field: the webhook it registered
    plane = ControlPlane.from_run_dir(
        Path(demo.printed(r"PODQ_CONTROL_PLANE_DIR=(\S+) scripts/control-plane env")))
    refusal = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the API server reads webhook configs from a watch
        result = plane.kubectl("apply", "-f", "-", input=BAD_CRON, check=False)
        if result.returncode != 0:
            refusal = result.stderr
            break
        plane.kubectl("delete", "cronjobs.podq.dev", "bad-schedule", "--wait=false")
        time.sleep(0.5)
    assert 'admission webhook "validate.podq.dev" denied the request' in refusal, refusal
    assert "spec.schedule" in refusal and "61" in refusal

    # a closed terminal stops the worker, the operator, Redis and the control plane
    redis_port = int(env["PODQ_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    os.killpg(demo.process.pid, signal.SIGHUP)
    assert demo.process.wait(timeout=120) == 0
    assert processes_under(demo.run_dir) == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), 2):
        pass
