"""podq for real, on this machine: control plane, Redis, operator, workers, examples.

Started by scripts/demo after it has installed what is needed. Two modes; the first
line it prints says which:

- node, where the machine allows it (root, cgroups, apt-get or the packages; a run
  folder short enough for the node's sockets): a real node
  (`scripts/control-plane up --node`: kubelet, containerd, a Redis for the pods), the
  worker and operator images built here (`scripts/images`), and charts/podq installed
  with them in namespace podq-demo (Pod Security `restricted`): the operator and the
  workers run as pods, the workers scaled from zero by the operator;
- processes, elsewhere or with --processes: the control plane without a node, the
  operator and one worker as local processes serving metrics on 127.0.0.1, and the
  operator's validating webhook registered by URL (a CA made here by openssl), so that
  `kubectl apply` refuses a bad schedule as it does with the chart.

Either way the workers run the example functions (worker_image/podq_hello.py, as in the
worker image) and the example CronJob is run once at the start (`podq cronjob run`), so
its first Job does not wait for the schedule. Everything it starts is stopped again on
Ctrl-C, a closed terminal (SIGHUP) or SIGTERM (or, with --exit-when-done, once the
examples finished). $PODQ_DEMO_DIR moves its run folder (default: .podq/demo).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from podq.testing import (
    ControlPlane,
    RedisServer,
    build_images,
    chart_image_values,
    free_port,
    install_chart,
)
from podq.testing_webhook import configuration, make_tls

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts" / "lib"))
import podq_node  # noqa: E402  (standard library only: whether a node can run here)

RUN_DIR = Path(os.environ.get("PODQ_DEMO_DIR") or REPO / ".podq" / "demo")
NAMESPACE = "podq-demo"  # node mode: the chart's release and the examples
TERMINAL = {"complete", "failed", "aborted"}
EXAMPLE_CRONJOB = "report"  # examples/cronjob-report.yaml


def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(RUN_DIR / f"{name}.log", "ab")  # open as long as the process
    print(f"    {name}: {shlex.join(argv)}  (log: {log.name})")
    # its own session: Ctrl-C reaches only this script, which stops the children in order
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def job_states(plane: ControlPlane) -> list[tuple[str, str, bool]]:
    """(name, status, made by a CronJob) of every podq Job resource."""
    items = plane.kubectl_json("get", "jobs.podq.dev", "--all-namespaces")
    return [
        (
            item["metadata"]["name"],
            item.get("status", {}).get("status", "new"),
            any(ref.get("kind") == "CronJob"
                for ref in item["metadata"].get("ownerReferences", [])),
        )
        for item in items["items"]
    ]


def wait_for_examples(
    plane: ControlPlane, deadline_s: float, processes: list[subprocess.Popen[bytes]]
) -> bool:
    """True once every Job finished and a CronJob's child did too."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                print(f"{shlex.join(process.args)} exited with {process.returncode}")
                return False
        states = job_states(plane)
        if states and all(s in TERMINAL for _, s, _ in states) and any(c for *_, c in states):
            return True
        time.sleep(1)  # a person watching; the tests wait on conditions instead
    return False


def print_access(plane: ControlPlane, redis_url: str, metrics: dict[str, int]) -> None:
    """How to reach what the demo runs, from another shell."""
    print("    To look around, in another shell (from this folder):")
    print(f"      eval \"$(PODQ_CONTROL_PLANE_DIR={plane.run_dir} scripts/control-plane env)\"")
    print(f"      export PODQ_REDIS_URL={redis_url}")
    print("      kubectl get podq -w ; .venv/bin/podq info ;"
          " .venv/bin/podq jobs --status complete")
    for name, port in metrics.items():
        print(f"      curl -s http://127.0.0.1:{port}/metrics   # the {name}'s metrics")


def node_metrics_commands(namespace: str = NAMESPACE) -> list[str]:
    """Node mode: the operator's and a worker's metrics through the API server's proxy
    (the pods' addresses are inside the node's network namespace), for release podq
    (tests/e2e runs them)."""
    api = f"/api/v1/namespaces/{namespace}"
    # the leader's pod: the Lease holder's identity is its host name and a suffix (a
    # standby behind the metrics Service answers podq_operator_leader 0 alone)
    leader = (f"$(kubectl get lease podq-operator -n {namespace}"
              " -o jsonpath='{.spec.holderIdentity}' | sed 's/-[^-]*$//')")
    worker = (f"$(kubectl get pods -n {namespace} -l app.kubernetes.io/component=worker"
              " -o jsonpath='{.items[0].metadata.name}')")
    return [f"kubectl get --raw \"{api}/pods/{leader}:9090/proxy/metrics\""
            "   # the operator's metrics (its leader's)",
            f"kubectl get --raw \"{api}/pods/{worker}:9100/proxy/metrics\""
            "   # a worker's metrics (while one runs)"]


def run_processes(args: argparse.Namespace) -> int:
    """The control plane without a node; the operator and a worker as local processes."""
    print("==> control plane (etcd, kube-apiserver, kube-controller-manager)")
    plane = ControlPlane.up(RUN_DIR / "control-plane")
    env = plane.env
    processes: list[subprocess.Popen[bytes]] = []
    redis = RedisServer()
    try:
        redis.start()
        print(f"==> redis-server at {redis.url}")
        plane.kubectl("apply", "-f", str(REPO / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                      "crd/cronjobs.podq.dev", "--timeout=60s")
        print("==> operator and worker")
        podq = str(REPO / ".venv" / "bin" / "podq")
        env["PYTHONPATH"] = str(REPO / "worker_image")  # podq_hello, as in the worker image
        metrics = {"operator": free_port(), "worker": free_port()}
        webhook_port, tls = free_port(), make_tls(RUN_DIR / "webhook-tls")
        processes.append(start("operator", [
            podq, "operator", "--all-namespaces", "--redis-url", redis.url,
            "--metrics-port", str(metrics["operator"]), "--metrics-host", "127.0.0.1",
            "--webhook-port", str(webhook_port), "--webhook-host", "127.0.0.1",
            "--webhook-cert-dir", str(tls)], env))
        processes.append(start("worker", [
            podq, "worker", "podq_hello.settings", "--redis-url", redis.url,
            "--metrics-port", str(metrics["worker"]), "--metrics-host", "127.0.0.1"], env))
        # failurePolicy Ignore, the chart's default: applies pass while the operator starts
        plane.kubectl("apply", "-f", "-", input=json.dumps(
            configuration("podq-demo", webhook_port, tls, "Ignore")))
        print(f"    validating webhook: https://127.0.0.1:{webhook_port}/validate (kubectl"
              " apply refuses e.g. schedule '61 * * * *', naming the field)")
        print_access(plane, redis.url, metrics)
        print("==> kubectl apply -f examples/")
        print(plane.kubectl("apply", "-f", str(REPO / "examples")).stdout, end="")
        print(f"==> podq cronjob run {EXAMPLE_CRONJOB}  (its schedule fires every minute)")
        ran = subprocess.run([podq, "cronjob", "run", EXAMPLE_CRONJOB], env=env,
                             capture_output=True, text=True, timeout=60)
        print(ran.stdout + ran.stderr, end="")
        done = wait_for_examples(plane, args.timeout, processes)
        print(plane.kubectl("get", "podq").stdout, end="")
        if not done:
            print(f"examples did not finish (limit {args.timeout:.0f}s); logs in {RUN_DIR}")
            return 1
        print("\nAll example Jobs finished.")
        if args.exit_when_done:  # everything stops now: nothing to look around in
            return 0
        print_access(plane, redis.url, metrics)
        print("Ctrl-C stops the worker, the operator, Redis and the control plane.")
        signal.pause()
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.close()
        plane.down()


def run_node(args: argparse.Namespace) -> int:
    """A real node; charts/podq installed with images built here; workers as pods."""
    print("==> images: worker, operator (scripts/images; cached after the first build)")
    images = build_images()
    print("==> control plane and a node (kubelet, containerd, a Redis for the pods),"
          " the images imported")
    plane = ControlPlane.up(RUN_DIR / "control-plane", node=True,
                            images=(image["archive"] for image in images.values()))
    try:
        values = chart_image_values(images)
        values["redis"] = {"url": plane.pod_redis_url}
        values["operator"]["logFormat"] = "plain"
        values["metrics"] = {"enabled": True}  # the operator's, on a Service
        values["workers"].update(
            metrics={"enabled": True},
            autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 2},
            longestJobTimeoutSeconds=60,
            resources={"requests": {"cpu": "10m", "memory": "32Mi"},
                       "limits": {"memory": "256Mi"}})
        print(f"==> helm install podq charts/podq -n {NAMESPACE} (Pod Security: restricted)")
        took = install_chart(plane, "podq", NAMESPACE, values, restricted=True)
        print(f"    installed in {took:.1f}s; the operator scales the workers (0 to 2 pods)")
        print(f"==> kubectl apply -n {NAMESPACE} -f examples/")
        print(plane.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples")).stdout,
              end="")
        print(f"==> podq cronjob run {EXAMPLE_CRONJOB}  (its schedule fires every minute)")
        env = {**plane.env, "PODQ_REDIS_URL": plane.redis_url or ""}
        ran = subprocess.run([str(REPO / ".venv" / "bin" / "podq"), "cronjob", "run",
                              EXAMPLE_CRONJOB, "-n", NAMESPACE], env=env,
                             capture_output=True, text=True, timeout=60)
        print(ran.stdout + ran.stderr, end="")
        done = wait_for_examples(plane, args.timeout, [])
        print(plane.kubectl("get", "podq", "-n", NAMESPACE).stdout, end="")
        print(plane.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout, end="")
        if not done:
            print(f"examples did not finish (limit {args.timeout:.0f}s); logs in"
                  f" {plane.run_dir / 'logs'}")
            return 1
        if args.exit_when_done:  # everything stops now: nothing to look around in
            print("\nAll example Jobs finished, run by worker pods.")
            return 0
        print("\nAll example Jobs finished, run by worker pods. To look around, in another"
              " shell (from this folder):")
        print(f"      eval \"$(PODQ_CONTROL_PLANE_DIR={plane.run_dir} scripts/control-plane"
              " env)\"")
        print(f"      kubectl get podq,pods -n {NAMESPACE} -w")
        print(f"      export PODQ_REDIS_URL={plane.redis_url} ;"
              " .venv/bin/podq jobs --status complete")
        for line in node_metrics_commands():
            print(f"      {line}")
        print("Ctrl-C stops the pods, the node and the control plane, and removes them.")
        signal.pause()
        return 0
    finally:
        plane.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop everything once the example Jobs have finished")
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds to wait for the examples to finish")
    parser.add_argument("--processes", action="store_true",
                        help="operator and worker as local processes even where a node"
                             " could run")
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    reason = "--processes given" if args.processes else (
        podq_node.unsupported_reason() or podq_node.run_folder_problem(RUN_DIR / "control-plane"))
    try:
        if reason is None:
            print("==> mode: node (operator and workers as pods on a real node, installed"
                  " by charts/podq)")
            return run_node(args)
        print(f"==> mode: processes (operator and worker as local processes; no node:"
              f" {reason})")
        return run_processes(args)
    except KeyboardInterrupt:
        return 0


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):  # a closed terminal stops it too
        signal.signal(stop_signal, interrupt)
    sys.exit(main())
