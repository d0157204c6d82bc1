"""Queue names: a name no queue can have ("a\\n" too: `$` with re.match let a final
newline through) is refused, naming it, wherever names enter: Queue construction,
the podq:queues registry, the command line (podq worker, info, jobs, drain, resume,
enqueue, web) and a worker's settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from podq import Queue
from podq.cli import main as cli_main
from podq.queue import QUEUES_KEY, list_queues
from podq.queue.keys import is_queue_name
from podq.web.main import build_parser as web_parser

BAD = ["a\n", "a\r", " a", "", "a\n\n", "x{y}"]


@pytest.mark.parametrize("name", BAD)
async def test_a_queue_of_a_bad_name_is_refused(name: str, redis_url: str) -> None:
    assert not is_queue_name(name)
    with pytest.raises(ValueError, match=re.escape(f"invalid queue name {name!r}")):
        Queue.from_url(redis_url, name=name)
    client = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="invalid queue name"):
            Queue(client, name=name)
        assert await client.exists(QUEUES_KEY) == 0  # nothing was registered
    finally:
        await client.aclose()


async def test_the_registry_lists_only_names_a_queue_can_have(redis_url: str) -> None:
    """Any queue's ACL user may add to podq:queues: names written there by hand are
    skipped, names registered by a queue are listed."""
    queue = Queue.from_url(redis_url, name="a")
    try:
        await queue.connect()
        await queue.redis.sadd(QUEUES_KEY, *BAD)
        assert await list_queues(queue.redis) == ["a"]
    finally:
        await queue.disconnect()


@pytest.mark.parametrize("name", ["a\n", " a", ""])
@pytest.mark.parametrize("command", [
    ["worker", "podq_test_settings.settings", "--burst", "--queue"],
    ["info", "--queue"], ["jobs", "--queue"], ["enqueue", "add", "--queue"],
    ["status", "k", "--queue"], ["drain"], ["resume"], ["web", "--queue"],
])
def test_the_command_line_refuses_a_bad_name_as_the_options_error(
    command: list[str], name: str, redis_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*command, name, "--redis-url", redis_url]
    with pytest.raises(SystemExit) as exited:
        if command[0] == "web":  # parsed only: `podq web` serves until stopped
            web_parser().parse_args(argv[1:])
        else:
            cli_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    option = "--queue" if command[-1] == "--queue" else "queue"
    assert f"argument {option}: invalid queue name {name!r}" in err, err


def test_a_worker_settings_bad_queue_name_is_named(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad_name_settings.py").write_text(
        "async def f(ctx):\n    pass\n\n"
        "settings = {'functions': [f], 'queue_name': 'a\\n'}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = cli_main(["worker", "bad_name_settings.settings", "--burst", "--redis-url", redis_url])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "settings 'bad_name_settings.settings': invalid queue name 'a\\n'" in err, err
