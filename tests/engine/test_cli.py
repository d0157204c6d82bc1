"""The `podq` command as a subprocess: good and bad input, SIGKILL and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import types
from datetime import datetime

import pytest
from engine_helpers import HERE, PODQ, Workers, output, start_worker_process, wait_for

from podq import Queue, Status
from podq.cli import main as cli_main
from podq.testing import free_port

SETTINGS = "podq_test_settings.settings"


def podq(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODQ, *args], cwd=HERE, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PODQ_REDIS_URL": ""},
    )


def start_worker(procs: list, redis_url: str, *extra: str) -> subprocess.Popen[str]:
    return start_worker_process(procs, redis_url, *extra, settings=SETTINGS)


async def exit_code(proc: subprocess.Popen[str], within_s: float = 30) -> int:
    try:
        return await asyncio.to_thread(proc.wait, within_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker did not exit; its output:\n{output(proc)}") from None


async def live_worker(queue: Queue) -> dict:
    return await wait_for(queue.workers, 30)


def unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_enqueue_prints_key_and_id_and_stores_options(queue: Queue, redis_url: str) -> None:
    r = podq("enqueue", "add", "--kwargs", '{"a": 1, "b": 2}', "--redis-url", redis_url,
             "--queue", "test", "--key", "k1", "--retries", "2", "--priority", "3",
             "--ttl", "60", "--timeout", "5")
    assert r.returncode == 0, r.stderr
    key, job_id = r.stdout.split()
    assert key == "k1" and job_id == "podq:{test}:job:k1"
    job = await queue.job("k1")
    assert job.kwargs == {"a": 1, "b": 2} and (job.retries, job.priority, job.ttl) == (2, 3, 60)
    assert job.timeout == 5 and job.status is Status.QUEUED
    r = podq("enqueue", "add", "--redis-url", redis_url, "--queue", "test", "--scheduled", "+60",
             "--json")
    scheduled = json.loads(r.stdout)["scheduled"]  # the CLI's one time format
    assert r.returncode == 0 and datetime.fromisoformat(scheduled).timestamp() > time.time()
    assert await queue.count("scheduled") == 1
    # the time as podq printed it is taken back, as a Job resource's spec.scheduled is
    r = podq("enqueue", "add", "--redis-url", redis_url, "--queue", "test", "--key", "again",
             "--scheduled", scheduled)
    assert r.returncode == 0, r.stderr
    again = (await queue.job("again")).scheduled
    assert abs(again - datetime.fromisoformat(scheduled).timestamp()) < 1, again
    r = podq("enqueue", "add", "--redis-url", redis_url, "--queue", "test", "--key", "y2100",
             "--scheduled", "2100-01-01T01:00:00+01:00")
    assert r.returncode == 0 and (await queue.job("y2100")).scheduled == 4102444800, r.stderr
    dup = podq("enqueue", "add", "--redis-url", redis_url, "--queue", "test", "--key", "k1")
    assert dup.returncode == 1 and "already pending" in dup.stderr


def test_enqueue_bad_input(redis_url: str) -> None:
    r = podq("enqueue", "add", "--kwargs", "{not json", "--redis-url", redis_url)
    assert r.returncode == 2 and "--kwargs is not valid JSON" in r.stderr
    url = unreachable_url()
    r = podq("enqueue", "add", "--redis-url", url)
    assert r.returncode == 1 and f"cannot reach Redis at {url}" in r.stderr
    r = podq("info", "--redis-url", url)
    assert r.returncode == 1 and url in r.stderr


def test_enqueue_more_bad_input_in_process(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["enqueue", "add", "--kwargs", "[1]", "--redis-url", redis_url]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert cli_main(["enqueue", "add", "--redis-url", redis_url, "--scheduled", "soon"]) == 2
    assert "--scheduled" in capsys.readouterr().err
    # a time without its zone is ambiguous: refused, not read in the host's zone
    assert cli_main(["enqueue", "add", "--redis-url", redis_url, "--scheduled",
                     "2100-01-01T00:00:00"]) == 2
    assert "ISO 8601 time with its zone" in capsys.readouterr().err
    assert cli_main(["enqueue", "add", "--redis-url", redis_url, "--priority", "99999"]) == 2
    assert "priority" in capsys.readouterr().err
    url = "redis://user:secret@127.0.0.1:1/0"
    assert cli_main(["info", "--redis-url", url]) == 1
    err = capsys.readouterr().err
    assert "secret" not in err and "user:***@127.0.0.1:1" in err


def test_worker_bad_input(
    redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = podq("worker", "no_such_module.settings", "--redis-url", redis_url)
    assert r.returncode == 2 and "cannot import settings 'no_such_module.settings'" in r.stderr
    url = unreachable_url()
    r = podq("worker", SETTINGS, "--redis-url", url)
    assert r.returncode == 1 and f"cannot reach Redis at {url}" in r.stderr
    r = podq("worker", SETTINGS, "--redis-url", redis_url, "--max-disruptions", "0")
    assert r.returncode == 2 and "--max-disruptions: must be at least 1, got 0" in r.stderr
    monkeypatch.chdir(HERE)
    assert cli_main(["worker", "podq_test_settings.missing", "--redis-url", redis_url]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["worker", "podq_test_settings.not_a_dict", "--redis-url", redis_url]) == 2
    assert "must be a dict" in capsys.readouterr().err
    assert cli_main(["worker", "podq_test_settings.unknown_key", "--redis-url", redis_url]) == 2
    assert "bad worker settings: " in capsys.readouterr().err
    assert cli_main(["worker", "podq_test_settings.no_functions", "--redis-url", redis_url]) == 2
    assert "register no functions" in capsys.readouterr().err


async def test_worker_burst_runs_jobs_and_exits(redis_url: str) -> None:
    q = Queue.from_url(redis_url, name="cli")
    try:
        job = await q.enqueue("add", a=2, b=3)
        r = podq("worker", "podq_test_settings.make_settings", "--redis-url", redis_url,
                 "--burst")
        assert r.returncode == 0, r.stderr
        await job.refresh()
        assert job.status is Status.COMPLETE and job.result == 5
    finally:
        await q.disconnect()


async def test_python_m_podq_runs_the_command(redis_url: str) -> None:
    """`python -m podq worker ...`, as `python -m saq ...` runs SAQ's."""
    q = Queue.from_url(redis_url, name="cli")
    try:
        job = await q.enqueue("add", a=2, b=3)
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "podq", "worker", "podq_test_settings.make_settings",
             "--redis-url", redis_url, "--burst"],
            cwd=HERE, capture_output=True, text=True, timeout=20,
        )
        assert r.returncode == 0, r.stderr
        await job.refresh()
        assert job.status is Status.COMPLETE and job.result == 5
    finally:
        await q.disconnect()


def test_worker_quiet_leaves_logging_unconfigured(redis_url: str) -> None:
    """SAQ's --quiet: the settings module configures logging, the command does not."""
    args = ("worker", "podq_test_settings.make_settings", "--redis-url", redis_url, "--burst")
    loud, quiet = podq(*args), podq(*args, "--quiet")
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert "INFO podq: Worker" in loud.stderr and "started on queue" in loud.stderr
    assert "podq" not in quiet.stderr and "started" not in quiet.stderr


async def test_unknown_function_and_info_with_a_live_worker(
    redis_url: str, spawn: list, queue: Queue
) -> None:
    default = Queue.from_url(redis_url)
    try:
        start_worker(spawn, redis_url)
        [record] = await live_worker(default)
        r = podq("enqueue", "nope", "--redis-url", redis_url)
        assert r.returncode == 2
        assert "unknown function 'nope'" in r.stderr and "add, slow" in r.stderr
        r = podq("info", "--redis-url", redis_url)
        assert r.returncode == 0 and "queue default" in r.stdout and record["id"] in r.stdout
        r = podq("info", "--redis-url", redis_url, "--json")
        [info] = [q for q in json.loads(r.stdout) if q["name"] == "default"]
        assert info["workers"][0]["functions"] == ["add", "slow"]
        assert info["workers"][0]["hostname"] and info["workers"][0]["pid"] == spawn[0].pid
    finally:
        await default.disconnect()


async def test_worker_killed_with_sigkill_has_its_jobs_run_again_attempts_intact(
    redis_url: str, spawn: list, workers: Workers
) -> None:
    q = Queue.from_url(redis_url)
    try:
        proc = start_worker(spawn, redis_url)
        await live_worker(q)
        again = await q.enqueue("slow", seconds=60, key="again", retries=2, timeout=0)
        lost = await q.enqueue("slow", seconds=60, key="lost", retries=1, timeout=0)
        async def both_active() -> bool:
            return await q.count("active") == 2

        await wait_for(both_active, 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        killed_at = time.monotonic()
        # a healthy worker notices the dead one's expired liveness record and sweeps
        await workers.start(q, [("slow", lambda ctx, seconds: "rerun")])
        await again.refresh(until_complete=30)
        assert again.status is Status.COMPLETE and again.result == "rerun"
        # a killed worker is a disruption, not a failure: even with retries=1 the job
        # runs again, and the killed run did not use up an attempt
        await lost.refresh(until_complete=30)
        assert lost.status is Status.COMPLETE and lost.result == "rerun"
        for job in (again, lost):
            assert job.attempts == 1 and job.disruptions == 1
            assert str(proc.pid) in job.last_disruption  # the lost worker, by id
        # the dead worker's liveness ttl (1 s) and a sweep (0.3 s), with margin for a
        # loaded machine (5 s, with the new worker's start in it, was too tight)
        assert time.monotonic() - killed_at < 10
    finally:
        await q.disconnect()


async def test_sigterm_drains_running_jobs(redis_url: str, spawn: list) -> None:
    q = Queue.from_url(redis_url)
    try:
        proc = start_worker(spawn, redis_url, "--shutdown-grace-period-s", "10")
        await live_worker(q)
        job = await q.enqueue("slow", seconds=5.0)
        await wait_for(lambda: q.count("active"), 30)
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:  # its record says so once it got the signal
            return any(w.get("draining") for w in await q.workers())

        # (a fixed 0.2 s: a loaded machine could deliver the late job before the signal)
        await wait_for(draining, 30)
        late = await q.enqueue("add", a=1, b=1)  # not taken: the worker is draining
        assert await exit_code(proc) == 0, output(proc)
        await job.refresh()
        assert job.status is Status.COMPLETE and job.result == "slow done"
        await late.refresh()
        assert late.status is Status.QUEUED
        assert await q.workers() == []
    finally:
        await q.disconnect()


async def test_sigterm_past_grace_puts_jobs_back(redis_url: str, spawn: list) -> None:
    q = Queue.from_url(redis_url)
    try:
        proc = start_worker(spawn, redis_url, "--shutdown-grace-period-s", "0.3")
        await live_worker(q)
        job = await q.enqueue("slow", seconds=60, timeout=120)
        await wait_for(lambda: q.count("active"), 30)
        proc.send_signal(signal.SIGTERM)
        assert await exit_code(proc) == 0, output(proc)
        await job.refresh()
        assert job.status is Status.QUEUED and await q.count("queued") == 1
    finally:
        await q.disconnect()


def test_operator_subcommand_forwards_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("podq.operator.main")
    fake.main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "podq.operator.main", fake)
    assert cli_main(["operator", "run", "--namespace", "x"]) == 7
    assert seen == [["run", "--namespace", "x"]]
    monkeypatch.setitem(sys.modules, "podq.operator.main", None)  # import fails
    assert cli_main(["operator"]) == 2
    assert "pip install 'podq[operator]'" in capsys.readouterr().err


async def test_info_and_jobs_skip_names_no_queue_can_have(redis_url: str) -> None:
    """Any queue's ACL user may add to podq:queues (docs/security.md): a name no queue
    can have there made `podq info` and `podq jobs` fail with a traceback for everyone."""
    q = Queue.from_url(redis_url)
    try:
        await q.enqueue("add", a=1, b=2)
        await q.redis.sadd("podq:queues", "a b", "x{y}", "\xff")
        r = podq("info", "--redis-url", redis_url, "--json")
        assert r.returncode == 0, r.stderr
        assert [i["name"] for i in json.loads(r.stdout)] == ["default"]
        r = podq("jobs", "--redis-url", redis_url)
        assert r.returncode == 0 and "default" in r.stdout, r.stderr
    finally:
        await q.disconnect()


def test_saq_s_command_form_is_answered_with_podq_worker(redis_url: str) -> None:
    """`python -m podq module.settings` (SAQ's `saq module.settings`) names the podq
    command that runs that worker; exit 2, as for any unknown command."""
    suggested = []
    for argv in ([SETTINGS], [SETTINGS, "-v"],
                 ["--verbose", "app.tasks.settings", "--workers", "2"]):
        r = subprocess.run([sys.executable, "-m", "podq", *argv], cwd=HERE,
                           capture_output=True, text=True, timeout=60)
        path = next(arg for arg in argv if not arg.startswith("-"))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("usage: podq "), r.stderr
        last = r.stderr.splitlines()[-1]
        assert last == (
            f"podq: error: {path!r} is not a podq command; to run a worker with the settings"
            f" {path} (SAQ's `saq {path}`): podq worker {path} (options: podq worker --help)")
        suggested.append(last.split("): ")[1].split(" (options")[0].split())
    # the command it names runs that worker (a burst: it stops once the queue is empty)
    assert suggested[0] == ["podq", "worker", SETTINGS]
    r = podq(*suggested[0][1:], "--redis-url", redis_url, "--burst")
    assert r.returncode == 0, r.stderr
    # not a dotted path: argparse's own answer, unchanged
    r = subprocess.run([sys.executable, "-m", "podq", "wrker"], cwd=HERE, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'wrker'" in r.stderr
    assert "podq worker" not in r.stderr.splitlines()[-1]
