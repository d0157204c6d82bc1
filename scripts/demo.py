"""podq for real, on this machine: control plane, Redis, operator, worker, examples.

Started by scripts/demo after it has installed what is needed. Everything it starts
is stopped again on Ctrl-C (or, with --exit-when-done, once the examples finished).
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

from podq.testing import RedisServer

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".podq" / "demo"
TERMINAL = {"complete", "failed", "aborted"}


def control_plane(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [str(REPO / "scripts" / "control-plane"), *args],
        env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout


def exported(env_script: str) -> dict[str, str]:
    """The variables of `control-plane env`'s `export NAME=value` lines."""
    found = {}
    for line in env_script.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            found[name] = os.path.expandvars(shlex.split(value)[0]) if value else ""
    return found


def kubectl(*args: str, env: dict[str, str], capture: bool = False) -> str:
    result = subprocess.run(
        ["kubectl", *args], env=env, check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(RUN_DIR / f"{name}.log", "ab")  # open as long as the process
    print(f"    {name}: {shlex.join(argv)}  (log: {log.name})")
    # its own session: Ctrl-C reaches only this script, which stops the children in order
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def job_states(env: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(name, status, made by a CronJob) of every podq Job resource."""
    items = json.loads(kubectl("get", "jobs.podq.dev", "-o", "json", env=env, capture=True))
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
    env: dict[str, str], deadline_s: float, processes: list[subprocess.Popen[bytes]]
) -> bool:
    """True once every Job finished and a CronJob's child did too."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                print(f"{shlex.join(process.args)} exited with {process.returncode}")
                return False
        states = job_states(env)
        if states and all(s in TERMINAL for _, s, _ in states) and any(c for *_, c in states):
            return True
        time.sleep(1)  # a person watching; the tests wait on conditions instead
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop everything once the example Jobs have finished")
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds to wait for the examples to finish")
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PODQ_CONTROL_PLANE_DIR=str(RUN_DIR / "control-plane"))

    print("==> control plane (etcd, kube-apiserver, kube-controller-manager)")
    control_plane("up", env=env)
    env.update(exported(control_plane("env", env=env)))
    processes: list[subprocess.Popen[bytes]] = []
    redis = RedisServer()
    try:
        redis.start()
        print(f"==> redis-server at {redis.url}")
        kubectl("apply", "-f", str(REPO / "crds"), env=env)
        kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                "crd/cronjobs.podq.dev", "--timeout=60s", env=env)
        print("==> operator and worker")
        podq = str(REPO / ".venv" / "bin" / "podq")
        env["PYTHONPATH"] = str(REPO)
        processes.append(start("operator", [podq, "operator", "--all-namespaces",
                                            "--redis-url", redis.url], env))
        processes.append(start("worker", [podq, "worker", "examples.worker_settings.settings",
                                          "--redis-url", redis.url], env))
        print("==> kubectl apply -f examples/")
        kubectl("apply", "-f", str(REPO / "examples"), env=env)
        done = wait_for_examples(env, args.timeout, processes)
        kubectl("get", "podq", env=env)
        if not done:
            print(f"examples did not finish (limit {args.timeout:.0f}s); logs in {RUN_DIR}")
            return 1
        print("\nAll example Jobs finished. To look around, in another shell:")
        print(f"    eval \"$(PODQ_CONTROL_PLANE_DIR={env['PODQ_CONTROL_PLANE_DIR']}"
              " scripts/control-plane env)\"")
        print("    kubectl get podq -w")
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
        control_plane("down", env=env)


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)
    sys.exit(main())
