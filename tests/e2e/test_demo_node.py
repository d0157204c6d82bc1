"""./scripts/demo in node mode, as a new user runs it on a machine that allows a node
(root, cgroups): its first line says so, the chart's operator and worker pods run the
examples to completion, and with --exit-when-done it removes what it started (processes,
the node's network namespace, the run folder's control plane).

It starts a control plane and a node of its own ($PODQ_DEMO_DIR in a temporary folder),
in the background from collection on (demo_run.py), beside the session node's tests;
tests/kube/test_demo.py runs the processes mode."""

from __future__ import annotations

import pytest
from demo_run import BackgroundDemo
from host import netns_names, processes_mentioning


@pytest.mark.timeout(600)
def test_demo_runs_the_examples_on_a_real_node(background_demo: BackgroundDemo) -> None:
    demo = background_demo
    run_dir, netns = demo.run_dir, demo.netns
    code = demo.wait(timeout=540)
    seen = demo.lines
    out = "".join(seen)
    assert code == 0, out[-6000:]
    assert any(line.startswith("==> helm install") for line in seen), out[-6000:]
    # the node was up in its own network namespace
    assert demo.netns_when_up, (netns, out[-3000:])
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
    assert processes_mentioning(str(run_dir)) == []
    assert netns not in netns_names()
    demo.remove_run_dir()
