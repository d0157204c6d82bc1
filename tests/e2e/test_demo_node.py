"""./scripts/demo in node mode, as a new user runs it on a machine that allows a node
(root, cgroups): its first line says so, the chart's operator and worker pods run the
examples to completion, and with --exit-when-done it removes what it started (processes,
the node's network namespace, the run folder's control plane).

It starts a control plane and a node of its own ($PODQ_DEMO_DIR in a temporary folder);
tests/kube/test_demo.py runs the processes mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chart_release import ROOT, node_module


def processes_under(folder: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.timeout(600)
def test_demo_runs_the_examples_on_a_real_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run_dir = tmp_path_factory.mktemp("demo")  # short: the node's sockets live in it
    netns = node_module().netns_name(run_dir / "control-plane")  # the demo node's own
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--exit-when-done",
         "--timeout", "240"],
        cwd=ROOT, env={**os.environ, "PODQ_DEMO_DIR": str(run_dir), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # lines as they come
    assert demo.stdout is not None
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("==> images"):  # the node is up: its namespace exists
                assert netns in netns_names(), (netns, netns_names())
        code = demo.wait(timeout=540)
    finally:
        if demo.poll() is None:
            demo.terminate()  # the demo stops what it started
            demo.wait(timeout=120)
    out = "".join(seen)
    assert code == 0, out[-6000:]
    assert any(line.startswith("==> images") for line in seen), out[-6000:]
    lines = out.splitlines()
    assert lines[0].startswith("==> mode: node"), lines[:3]
    assert "All example Jobs finished, run by worker pods." in out, out[-4000:]
    # what it printed: the examples complete, the operator's two pods and a worker pod
    # of the chart, on the node
    for job in ("add-two-numbers", "count-words", "flaky-with-retries", "report-manual-"):
        assert any(job in line and " complete " in line for line in lines), (job, out)
    pods = [line.split() for line in lines if line.startswith("podq-")]
    assert sum(p[0].startswith("podq-operator-") for p in pods) == 2, pods
    assert all(p[2] == "Running" and p[6] == "podq-node" for p in pods), pods
    # (node mode starts no worker of its own: pods of the chart ran the examples)
    assert not [line for line in lines if line.strip().startswith("worker: ")], out
    # --exit-when-done: nothing of it is left running, its network namespace is gone
    assert processes_under(run_dir) == []
    assert netns not in netns_names()
