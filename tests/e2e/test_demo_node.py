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
from chart_release import ROOT


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
    before = netns_names()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--exit-when-done",
         "--timeout", "240"],
        cwd=ROOT, env={**os.environ, "PODQ_DEMO_DIR": str(run_dir)},
        capture_output=True, text=True, timeout=540)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
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
    assert netns_names() <= before, netns_names() - before
