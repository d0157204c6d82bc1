"""podq for real, on this machine: control plane, Redis, operator, worker, examples.

Started by scripts/demo after it has installed what is needed. The worker runs the
example functions (worker_image/podq_hello.py, as in the worker image); the operator
and the worker serve Prometheus metrics on 127.0.0.1; the example CronJob is run once
at the start (`podq cronjob run`), so its first Job does not wait for the schedule.
Everything it starts is stopped again on Ctrl-C (or, with --exit-when-done, once the
examples finished).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from podq.testing import ControlPlane, RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".podq" / "demo"
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
    items = plane.kubectl_json("get", "jobs.podq.dev")
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
    print("      kubectl get podq -w ; .venv/bin/podq info ; .venv/bin/podq jobs")
    for name, port in metrics.items():
        print(f"      curl -s http://127.0.0.1:{port}/metrics   # the {name}'s metrics")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop everything once the example Jobs have finished")
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds to wait for the examples to finish")
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)

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
        processes.append(start("operator", [
            podq, "operator", "--all-namespaces", "--redis-url", redis.url,
            "--metrics-port", str(metrics["operator"]), "--metrics-host", "127.0.0.1"], env))
        processes.append(start("worker", [
            podq, "worker", "podq_hello.settings", "--redis-url", redis.url,
            "--metrics-port", str(metrics["worker"]), "--metrics-host", "127.0.0.1"], env))
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
        print_access(plane, redis.url, metrics)
        if args.exit_when_done:
            return 0
        print("Ctrl-C stops the worker, the operator, Redis and the control plane.")
        signal.pause()
        return 0
    except KeyboardInterrupt:
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


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)
    sys.exit(main())
