"""`podq status` on jobs in Redis, as a process."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

from engine_helpers import Workers
from ops_helpers import PODQ, podq_run
from ops_settings import fail, ok

from podq import Queue, Status


async def test_status_of_complete_and_failed_jobs_by_key_and_id(
    queue: Queue, workers: Workers, redis_url: str
) -> None:
    await workers.start(queue, [ok, fail])
    done = await queue.enqueue("ok", key="done")
    broken = await queue.enqueue("fail", key="broken", retries=1)
    for job in (done, broken):
        await job.refresh(until_complete=10)

    code, out, err = await podq_run("status", "done", "--queue", "test", "--redis-url",
                                    redis_url, "--json")
    assert code == 0, err
    state = json.loads(out)
    assert state["status"] == "complete" and state["result"] == "fine"
    assert state["attempts"] == 1 and state["progress"] == 1.0
    assert state["key"] == "done" and state["queue"] == "test" and state["function"] == "ok"
    assert state["worker"] == done.worker_id and state["error"] is None
    for field in ("queued", "started", "completed"):
        assert datetime.fromisoformat(state[field]).year >= 2024, field
    assert state["started"] <= state["completed"]

    code, out, err = await podq_run("status", "podq:{test}:job:broken", "--redis-url",
                                    redis_url)
    assert code == 0, err
    assert out.splitlines()[0] == "podq:{test}:job:broken"
    assert "status:    failed" in out and "attempts:  1 of 1" in out
    assert "progress:  0%" in out  # a percentage, as kubectl get shows it
    assert "ValueError: always fails" in out  # the traceback's last line is shown
    assert (await queue.job("broken")).status is Status.FAILED


async def test_status_of_a_scheduled_job(queue: Queue, redis_url: str) -> None:
    await queue.enqueue("ok", key="pending", scheduled=4102444800)  # 2100-01-01
    code, out, err = await podq_run("status", "pending", "--queue", "test", "--json",
                                    "--redis-url", redis_url)
    assert code == 0, err
    state = json.loads(out)
    assert state["status"] == "queued" and state["started"] is None
    assert state["scheduled"].startswith("2100-01-01T00:00:00")


async def test_status_of_a_missing_job_exits_1(queue: Queue, redis_url: str) -> None:
    code, out, err = await podq_run("status", "nope", "--queue", "test", "--redis-url",
                                    redis_url)
    assert code == 1 and out == ""
    assert "no job 'nope' in queue 'test'" in err
    code, _, err = await podq_run("status", "podq:{other}:job:x", "--queue", "test",
                                  "--redis-url", redis_url)
    assert code == 2 and "is of queue 'other'" in err
    code, _, err = await podq_run("status", "--redis-url", redis_url)
    assert code == 2 and "give a job key" in err


def test_without_a_kubeconfig_the_resource_commands_say_so_plainly(tmp_path: Path) -> None:
    """Not a client's log line plus "Invalid kube-config file" about a file that is not
    there: one error naming where a kubeconfig was looked for."""
    missing = tmp_path / "missing.kubeconfig"
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(missing)
    for args in (["status", "--resource", "x"], ["cronjob", "run", "x"]):
        done = subprocess.run([PODQ, *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1, done
        assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
        assert f"no kubeconfig: {missing} not found" in done.stderr, done.stderr
