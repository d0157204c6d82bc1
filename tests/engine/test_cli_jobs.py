"""`podq abort`, `podq retry`, `podq jobs`, `--version`, help on every option, one time
format, and worker logs that name their job: on a real redis-server."""

from __future__ import annotations

import argparse
import json
import re

from engine_helpers import Workers, output, start_worker_process, wait_for
from ops_helpers import podq_run
from ops_settings import fail, ok
from redis import Redis

from podq import Queue, Status
from podq.cli import build_parser
from podq.cli_jobs import scan_finished
from podq.jobstate import iso_from_text, iso_utc
from podq.operator.main import build_parser as operator_parser
from podq.queue.keys import acl_rules
from podq.testing import RedisServer
from podq.web.main import build_parser as web_parser

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAR = 4102444800  # 2100-01-01


def walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_subcommand_has_help() -> None:
    parsers = [(build_parser(), "podq"), (operator_parser(), "podq operator"),
               (web_parser(), "podq web")]
    missing = [f"{path} {'/'.join(action.option_strings) or action.dest}"
               for parser, name in parsers for path, action in walk(parser, name)
               if not action.help]
    assert missing == []
    commands = {path for parser, name in parsers for path, _ in walk(parser, name)}
    assert {"podq abort", "podq retry", "podq jobs", "podq cronjob run"} <= commands


def test_every_value_option_states_its_default() -> None:
    """`podq enqueue --retries` and the like: what an option left out means (the
    timeouts said nothing of the 10 s default, --retries/--ttl/--heartbeat nothing)."""
    parser = build_parser()
    vague = [f"{path} {'/'.join(action.option_strings)}"
             for path, action in walk(parser, "podq")
             if path in ("podq enqueue", "podq worker") and action.option_strings
             and action.nargs != 0 and "default" not in (action.help or "")
             and action.dest not in ("limit",)]
    assert vague == []
    # and every option of any command that has a default says it (the operator's tuning)
    parsers = [(parser, "podq"), (operator_parser(), "podq operator"),
               (web_parser(), "podq web")]
    silent = [f"{path} {'/'.join(action.option_strings)}"
              for tree, name in parsers for path, action in walk(tree, name)
              if action.option_strings and action.nargs != 0
              and action.default not in (None, [], "") and "default" not in action.help]
    assert silent == []


async def test_a_missing_subcommand_is_named_as_help_shows_it() -> None:
    code, _, err = await podq_run("cronjob")
    assert code == 2 and "the following arguments are required: {run}" in err, err


async def test_version() -> None:
    code, out, _ = await podq_run("--version")
    assert code == 0 and re.fullmatch(r"podq \d+\.\d+\.\d+\S*\n", out), out


def test_one_time_format() -> None:
    assert iso_utc(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    # a resource's status times, with and without fractions, read the same way
    assert iso_from_text("2023-11-14T22:13:20Z") == "2023-11-14T22:13:20.000Z"
    assert iso_from_text("2023-11-14T22:13:20.123Z") == "2023-11-14T22:13:20.123Z"
    assert iso_utc(0) is None and iso_from_text(None) is None


async def test_every_json_output_prints_times_in_the_one_format(
    queue: Queue, workers: Workers, redis_url: str,
) -> None:
    """enqueue, abort, retry, status and jobs: the times of a job as ISO 8601 UTC with
    milliseconds, never epoch numbers (enqueue/abort/retry printed milliseconds)."""
    await workers.start(queue, [ok, fail])
    common = ("--queue", "test", "--redis-url", redis_url)
    outputs = {
        "enqueue": await podq_json("enqueue", "ok", "--key", "later", "--scheduled", "+3600",
                                   *common),
        "abort": await podq_json("abort", "later", *common),
    }
    broken = await queue.enqueue("fail", key="broken")
    await broken.refresh(until_complete=10)
    outputs["retry"] = await podq_json("retry", "broken", *common)
    await (await queue.job("broken")).refresh(until_complete=10)
    outputs["status"] = await podq_json("status", "broken", *common)
    outputs["jobs"] = (await podq_json("jobs", "--status", "failed", *common))["jobs"][0]
    times = {"queued", "started", "completed", "touched", "scheduled", "ready_since"}
    for command, fields in outputs.items():
        found = {name: fields[name] for name in times if fields.get(name) is not None}
        assert "queued" in found, (command, fields)
        wrong = {name: value for name, value in found.items()
                 if not (isinstance(value, str) and ISO_UTC.match(value))}
        # and no other field that looks like an epoch time (s or ms) slipped through
        wrong |= {name: value for name, value in fields.items()
                  if isinstance(value, int | float) and not isinstance(value, bool)
                  and 1e9 <= value < 1e14}
        assert wrong == {}, f"podq {command} --json: {wrong}"
    assert ISO_UTC.match(outputs["enqueue"]["ready_since"]), outputs["enqueue"]
    assert outputs["enqueue"]["scheduled"] > outputs["enqueue"]["queued"]
    # podq info --json: each worker's last report
    (info,) = await podq_json("info", *common)
    assert info["workers"] and all(ISO_UTC.match(w["ts"]) for w in info["workers"]), info


async def podq_json(*args: str) -> dict:
    code, out, err = await podq_run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_jobs_lists_and_filters_a_page_at_a_time(queue: Queue, redis_url: str) -> None:
    for n in range(5):
        await queue.enqueue("ok", key=f"later-{n}", scheduled=FAR)
    await queue.enqueue("fail", key="now")
    listed = await podq_json("jobs", "--queue", "test", "--redis-url", redis_url)
    assert [j["key"] for j in listed["jobs"]] == ["now"] + [f"later-{n}" for n in range(5)]
    assert all(ISO_UTC.match(j["queued"]) for j in listed["jobs"])
    assert listed["next_start"] == {"test": None}
    page = await podq_json("jobs", "--queue", "test", "--status", "scheduled", "--limit", "2",
                           "--redis-url", redis_url)
    assert [j["key"] for j in page["jobs"]] == ["later-0", "later-1"]
    assert page["next_start"] == {"test": 2}
    # when a scheduled job runs, in the one time format (it was not shown at all)
    assert {j["scheduled"] for j in page["jobs"]} == {"2100-01-01T00:00:00.000Z"}
    rest = await podq_json("jobs", "--queue", "test", "--status", "scheduled", "--start", "4",
                           "--redis-url", redis_url)
    assert [j["key"] for j in rest["jobs"]] == ["later-4"]
    failing = await podq_json("jobs", "--function", "fail", "--redis-url", redis_url)
    assert [(j["queue"], j["key"]) for j in failing["jobs"]] == [("test", "now")]
    code, out, err = await podq_run("jobs", "--queue", "test", "--limit", "2",
                                    "--redis-url", redis_url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "KEY", "FUNCTION", "STATUS", "ATTEMPTS", "QUEUED",
                                "SCHEDULED", "COMPLETED"]
    assert lines[1].split()[:5] == ["test", "now", "fail", "queued", "0"]
    assert lines[1].split()[6:] == ["-", "-"]
    assert lines[2].split()[6:] == ["2100-01-01T00:00:00.000Z", "-"]
    assert lines[-1] == "more in queue test: podq jobs --queue test --start 2"
    code, _, err = await podq_run("jobs", "--limit", "100000", "--redis-url", redis_url)
    assert code == 2 and "1 to 1000" in err


async def test_jobs_finds_finished_jobs_by_scanning(queue: Queue, workers: Workers,
                                                   redis_url: str) -> None:
    await workers.start(queue, [ok, fail])
    finished = [await queue.enqueue("fail" if n % 3 == 0 else "ok", key=f"done-{n}")
                for n in range(30)]
    for job in finished:
        await job.refresh(until_complete=10)
    await queue.enqueue("ok", key="pending", scheduled=FAR)
    failed = await podq_json("jobs", "--queue", "test", "--status", "failed",
                             "--redis-url", redis_url)
    assert sorted(j["key"] for j in failed["jobs"]) == sorted(f"done-{n}" for n in range(0, 30, 3))
    assert all(j["status"] == "failed" and ISO_UTC.match(j["completed"])
               for j in failed["jobs"])
    assert failed["next_start"] == {"test": None}
    # page by page with the scan cursor: every complete job once, none twice
    seen: list[str] = []
    start = "0"
    for _ in range(30):
        page = await podq_json("jobs", "--queue", "test", "--status", "complete", "--limit",
                               "1", "--start", start, "--function", "ok",
                               "--redis-url", redis_url)
        seen += [j["key"] for j in page["jobs"]]
        if page["next_start"]["test"] is None:
            break
        start = str(page["next_start"]["test"])
    assert sorted(seen) == sorted(f"done-{n}" for n in range(30) if n % 3)


    # with nothing pending, the table says where the finished ones are (not "no jobs")
    await queue.abort(await queue.job("pending"), "done with it")
    code, out, err = await podq_run("jobs", "--queue", "test", "--redis-url", redis_url)
    assert code == 0, err
    assert out.strip() == ("no running, queued or scheduled jobs; finished ones: podq jobs"
                           " --status complete (or failed, aborted)")
    code, out, err = await podq_run("jobs", "--queue", "test", "--status", "complete",
                                    "--function", "fail", "--redis-url", redis_url)
    assert (code, out.strip()) == (0, "no jobs"), err


def calls(client: Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_the_scan_for_finished_jobs_reads_whole_records_of_matches_only(
        queue: Queue, redis_url: str) -> None:
    """It read every record it scanned whole (HGETALL: kwargs and result too)."""
    for n in range(30):
        job = await queue.enqueue("fail" if n % 3 == 0 else "ok", key=f"s{n}", big="x" * 1000)
        await queue.finish(job, Status.FAILED if n % 3 == 0 else Status.COMPLETE, result=n)
    sync = Redis.from_url(redis_url)
    try:
        for function, status, want in ((None, "failed", range(0, 30, 3)),
                                       ("ok", "complete", [n for n in range(30) if n % 3]),
                                       ("fail", "complete", [])):
            before = calls(sync, "hgetall"), calls(sync, "hmget")
            found, following = await scan_finished(queue, status, function, 0, 1000)
            read = calls(sync, "hgetall") - before[0], calls(sync, "hmget") - before[1]
            assert following is None
            assert sorted(j.key for j in found) == sorted(f"s{n}" for n in want)
            assert all(j.status.value == status and j.kwargs["big"] for j in found)
            assert read == (len(want), 30)  # the whole record of each match only
    finally:
        sync.close()


async def test_jobs_of_a_queue_user_that_may_not_scan() -> None:
    """A queue's ACL user (docs/security.md) may not SCAN: finished jobs are then those
    `podq web` recorded, with a warning, not an error."""
    with RedisServer() as server:
        queue = Queue.from_url(server.url, name="emails")
        try:
            await queue.connect()
            job = await queue.enqueue("ok", key="stopped", scheduled=FAR)
            await queue.abort(job, "stopped by the test")
            await queue.redis.execute_command("ACL", "SETUSER", "mail", "reset", "on",
                                              ">mail-pw", *acl_rules("emails"))
        finally:
            await queue.disconnect()
        user_url = server.url.replace("redis://", "redis://mail:mail-pw@")
        admin = await podq_json("jobs", "--queue", "emails", "--status", "aborted",
                                "--redis-url", server.url)
        assert [j["key"] for j in admin["jobs"]] == ["stopped"]
        code, out, err = await podq_run("jobs", "--queue", "emails", "--status", "aborted",
                                        "--json", "--redis-url", user_url)
        assert code == 0, err
        assert "this Redis user may not SCAN" in err
        assert json.loads(out)["jobs"] == []  # no podq web recorded it


async def test_abort_and_retry(queue: Queue, workers: Workers, redis_url: str) -> None:
    await workers.start(queue, [ok, fail])
    broken = await queue.enqueue("fail", key="broken")
    await broken.refresh(until_complete=10)
    await queue.enqueue("ok", key="waiting", scheduled=FAR)
    common = ("--queue", "test", "--redis-url", redis_url)

    code, out, err = await podq_run("abort", "waiting", *common)
    assert (code, out) == (0, "waiting\taborted\n"), err
    assert (await queue.job("waiting")).status == Status.ABORTED
    # the abort marker lives 5 s: held longer here, so the refusal below cannot race it
    # on a loaded machine (each CLI run starts a Python process)
    assert await queue.redis.pexpire(queue.keys.abort("waiting"), 120_000)
    code, _, err = await podq_run("abort", "waiting", *common)
    assert code == 1 and "already finished (aborted)" in err

    code, _, err = await podq_run("retry", "nope", *common)
    assert code == 1 and "no job 'nope'" in err
    again = await podq_json("retry", "podq:{test}:job:broken", "--redis-url", redis_url)
    assert again["key"] == "broken" and again["function"] == "fail"
    job = await queue.job("broken")
    await job.refresh(until_complete=10)
    assert job.status == Status.FAILED and job.attempts == 1  # a run of its own

    code, out, err = await podq_run("retry", "waiting", *common)
    assert code == 1 and "aborted a moment ago" in err  # its abort marker is there
    await queue.redis.delete(queue.keys.abort("waiting"))  # as its expiry would
    code, out, err = await podq_run("retry", "waiting", *common)
    assert code == 0, err
    job = await queue.job("waiting")
    await job.refresh(until_complete=10)
    assert job.status == Status.COMPLETE and job.result == "fine"
    code, _, err = await podq_run("retry", "waiting", *common)
    assert code == 1 and "only a failed or aborted job" in err


async def test_worker_log_lines_name_their_job_as_json(
        queue: Queue, redis_url: str, spawn: list) -> None:
    worker = start_worker_process(spawn, redis_url, "--queue", "test", "--log-format", "json",
                                  settings="ops_settings.settings")
    job = await queue.enqueue("chatty", key="talker", words="hi")
    await job.refresh(until_complete=20)
    assert job.status == Status.COMPLETE

    def said() -> dict | None:
        for line in output(worker).splitlines():
            record = json.loads(line)  # every line is JSON
            if record["message"] == "chatty says hi":
                return record
        return None
    record = await wait_for(said, 30)
    assert record["job"] == {"key": "talker", "function": "chatty"}

    # a failed attempt says why, the retried one and the last one alike
    broken = await queue.enqueue("fail", key="broken", retries=2)
    await broken.refresh(until_complete=20)
    expected = {"Job broken failed (attempt 1 of 2): ValueError: always fails; retrying",
                "Job broken (fail) failed: ValueError: always fails"}

    def failures() -> set[str]:
        return expected & {json.loads(line)["message"]
                           for line in output(worker).splitlines()}
    await wait_for(lambda: failures() == expected, 10)
    assert record["severity"] == "warn" and record["logger"] == "ops_settings"
    assert ISO_UTC.match(record["timestamp"])
    started = json.loads(output(worker).splitlines()[0])
    assert "job" not in started  # not logged while a job ran
