"""SAQ's README example (examples/saq_readme.py) runs on SAQ as written and on podq with
only `saq` replaced by `podq` in its imports: its worker started by each library's
command line, its client run in-process, against one redis-server. The outcomes are
compared (docs/saq-compatibility.md, "Migrating").
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import types
import typing as t
from pathlib import Path

import pytest
from engine_helpers import PODQ, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "saq_readme.py"
SAQ_IMPORT = re.compile(r"^(from|import) saq\b", re.MULTILINE)
EXAMPLE_PRINTS = re.compile(r"^(Connectiong\.\.\.|i am a cron job|Disconnecting from the database"
                            r"|Job<.*> Your DBHelper at work)$")


def migrated(source: str) -> str:
    """The migration: `saq` becomes `podq` in the imports."""
    return SAQ_IMPORT.sub(r"\1 podq", source)


def test_the_migration_changes_the_imports_only() -> None:
    source = EXAMPLE.read_text()
    changed = [
        (before, after)
        for before, after in zip(source.splitlines(), migrated(source).splitlines(), strict=True)
        if before != after
    ]
    assert changed == [("from saq import CronJob, Queue", "from podq import CronJob, Queue")]


def load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_example(lib: str, folder: Path) -> Path:
    """The example, as written for SAQ or migrated for podq, in folder."""
    folder.mkdir()
    source = EXAMPLE.read_text()
    path = folder / "saq_readme.py"
    path.write_text(source if lib == "saq" else migrated(source))
    return path


def start_worker(lib: str, folder: Path, redis_url: str) -> subprocess.Popen[bytes]:
    """The example's worker in folder, started by lib's command line; its output goes to
    folder/worker.log."""
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *sys.path])
    command = [sys.executable, "-m", "saq"] if lib == "saq" else [*PODQ, "worker"]
    with (folder / "worker.log").open("w") as out:
        return subprocess.Popen([*command, "saq_readme.settings"], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def run_example(lib: str, folder: Path, redis_url: str) -> dict[str, t.Any]:
    """Start the example's worker with lib's command line, run its client, stop the
    worker (SIGTERM); what the client printed and what the worker printed."""
    worker = None
    log = folder / "worker.log"
    try:
        module = load(write_example(lib, folder), f"saq_readme_on_{lib}")
        queue = module.queue
        await queue.connect()
        if lib == "saq":
            # SAQ's worker sweeps as it starts: racing its first take, which is not
            # atomic (docs/saq-compatibility.md, fix 1), that sweep can abort the first
            # job (CI printed None for its result). Its lock held, the comparison is of
            # what the example does, not of that race.
            await queue.redis.set(queue.namespace("sweep"), 1, ex=120)
        worker = start_worker(lib, folder, redis_url)
        # the worker is up once its record is in the queue's info
        await wait_for(lambda: _workers(queue), 30, 0.1)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            await asyncio.wait_for(module.main(), 120)
        # the cron job runs every 5 s: wait for its first run
        await wait_for(lambda: "i am a cron job" in log.read_text(), 30, 0.1)
        outcome = {
            "client printed": printed.getvalue().splitlines(),
            # the job scheduled in 10 s
            "test jobs waiting": [j.scheduled > 0 async for j in queue.iter_jobs(["queued"])
                                  if j.function == "test"],
        }
        await queue.disconnect()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
    # what the example printed (the libraries' own log lines differ and are left out)
    printed_lines = [line for line in log.read_text().splitlines() if EXAMPLE_PRINTS.match(line)]
    outcome["worker exit code"] = code
    outcome["worker printed"] = sorted({re.sub(r"Job<.*>", "Job<...>", p) for p in printed_lines})
    # before_process: once per job (the cron job's runs depend on the clock)
    outcome["jobs of test processed"] = sum("function: test" in p for p in printed_lines)
    return outcome


async def _workers(queue: t.Any) -> bool:
    return bool((await queue.info())["workers"])


async def test_saq_readme_example_runs_on_podq_after_changing_the_imports(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)  # the example's queue reads it on import
    on_saq = await run_example("saq", tmp_path / "saq", redis_url)
    on_podq = await run_example("podq", tmp_path / "podq", redis_url)
    assert on_saq == on_podq, (on_saq, on_podq)
    assert on_podq["client printed"] == [
        "{'x': 1}", "{'x': 2}", "{'x': 2}", "[{'x': 3}, {'x': 4}]",
    ]
    assert on_podq["test jobs waiting"] == [True]
    assert on_podq["worker exit code"] == 0
    assert on_podq["worker printed"] == [
        "Connectiong...", "Disconnecting from the database", "Job<...> Your DBHelper at work",
        "i am a cron job",
    ]
    assert on_podq["jobs of test processed"] == 5  # enqueue, apply twice, map of two
