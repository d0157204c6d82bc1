"""Scale from zero on a real node: `kubectl apply` of one Job to Complete, through a new
worker pod. A script that prints figures, not a test.

    sudo .venv/bin/python benchmarks/scale_from_zero.py [--runs 10]

One node (`scripts/control-plane up --node`: kubelet, containerd, runc), the images built
here (`scripts/images`), charts/podq installed as the e2e tests install it (workers
autoscaled from 0 to 3, concurrency 2; the operator's scale-down window shortened to 2 s
so that each run starts from zero again quickly; scale-up is the chart's default). Each
run: wait until the worker Deployment is at 0 replicas with no pod left, apply one Job
(function `echo`), wait (a watch: `kubectl wait`) for status Complete; the time from
just before the apply to then, and the pod that ran it (it must be one created after
the apply). Target (issue 10): p50 of 10 runs <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq.testing import (  # noqa: E402
    ControlPlane,
    build_images,
    chart_image_values,
    install_chart,
)

NAMESPACE = "podq-bench"


def values(plane: ControlPlane, images: dict[str, dict]) -> dict:
    chart = chart_image_values(images)
    chart["redis"] = {"url": plane.pod_redis_url}
    chart["operator"].update(logFormat="plain", extraArgs=["--stabilisation-window=2"])
    chart["workers"].update(
        concurrency=2, longestJobTimeoutSeconds=20,
        autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 3},
        resources={"requests": {"cpu": "10m", "memory": "32Mi"},
                   "limits": {"memory": "256Mi"}})
    return chart


def worker_pods(plane: ControlPlane) -> list[dict]:
    return plane.kubectl_json("get", "pods", "-n", NAMESPACE, "-l",
                              "app.kubernetes.io/component=worker")["items"]


def at_zero(plane: ControlPlane, deployment: str) -> bool:
    spec = plane.kubectl_json("get", "deployment", deployment, "-n", NAMESPACE)["spec"]
    return spec.get("replicas", 0) == 0 and not worker_pods(plane)


def iso(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 time in UTC (as status.startedTime)."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return whole + float(f"0.{frac or 0}")


def one_run(plane: ControlPlane, deployment: str) -> tuple[float, str, dict[str, float]]:
    """(seconds from apply to Complete, the pod, the phases in between)."""
    plane.wait_for("the worker Deployment at zero", lambda: at_zero(plane, deployment),
                   timeout=120, interval=0.2)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    job = {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"function": "echo", "kwargs": {"message": name}}}
    started, wall = time.monotonic(), time.time()
    plane.kubectl("apply", "-f", "-", input=json.dumps(job))
    plane.kubectl("wait", "-n", NAMESPACE, f"pqjob/{name}",
                  "--for=jsonpath={.status.status}=complete", "--timeout=120s", timeout=150)
    elapsed = time.monotonic() - started
    status = plane.kubectl_json("get", "pqjob", name, "-n", NAMESPACE)["status"]
    pod = status["result"]["worker"]  # its hostname: the pod's name
    # a pod of the worker Deployment, made after the apply (there was none before)
    assert pod.startswith(f"{deployment}-"), pod
    # where the time went: the job's start and end (ms, from Redis's clock: same host)
    phases = {
        "apply to job started (scale-up, pod start, worker start, take)":
            iso(status["startedTime"]) - wall,
        "job run": iso(status["completedTime"]) - iso(status["startedTime"]),
        "to resource Complete seen": wall + elapsed - iso(status["completedTime"]),
    }
    plane.kubectl("delete", "pqjob", name, "-n", NAMESPACE, "--wait=true")
    return elapsed, pod, phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    images = build_images()
    took = ", ".join(f"{name} {image['seconds']}s" for name, image in images.items())
    print(f"images: {took}")
    run = Path(tempfile.mkdtemp(prefix="podq-bench-node-"))
    up_started = time.monotonic()
    with ControlPlane.up(run, exit_with=os.getpid(), node=True,
                         images=(image["archive"] for image in images.values())) as plane:
        print(f"control plane and node up, images imported, in"
              f" {time.monotonic() - up_started:.1f}s")
        took = install_chart(plane, "podq", NAMESPACE, values(plane, images))
        print(f"helm install --wait: {took:.1f}s")
        deployment = plane.kubectl_json(
            "get", "deployments", "-n", NAMESPACE, "-l",
            "app.kubernetes.io/component=worker")["items"][0]["metadata"]["name"]
        times = []
        pods = set()
        phases: dict[str, list[float]] = {}
        for i in range(args.runs):
            elapsed, pod, parts = one_run(plane, deployment)
            for phase, seconds in parts.items():
                phases.setdefault(phase, []).append(seconds)
            assert pod not in pods, f"run {i + 1} reused pod {pod}: not from zero"
            pods.add(pod)
            times.append(elapsed)
            print(f"run {i + 1:2d}: apply -> Complete in {elapsed:.2f}s (pod {pod})",
                  flush=True)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(f"scale from zero, apply -> Complete through a new pod, {len(times)} runs: "
          f"p50 {statistics.median(times):.2f}s, p90 {p90:.2f}s, min {ordered[0]:.2f}s, "
          f"max {ordered[-1]:.2f}s (target p50 <= 3 s)")
    print("median of each phase: " + ", ".join(
        f"{phase} {statistics.median(values):.2f}s" for phase, values in phases.items()))
    print(f"total {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
