"""Every public name and parameter of SAQ 0.26.4 (enumerated from the installed `saq`
package by tests/engine/saq_api.py) exists in podq, or docs/saq-compatibility.md lists
it as a deliberate deviation with its reason; and every listed deviation still is one."""

from __future__ import annotations

import typing as t

import saq
from saq_api import api_items, covers, documented_deviations, report


def test_the_installed_saq_is_the_version_the_deviations_were_written_for() -> None:
    assert saq.__version__ == "0.26.4"


def test_saqs_api_is_enumerated_down_to_parameters_and_defaults() -> None:
    items = dict(api_items())
    # a sample of each kind: names, members, parameters, defaults, TypedDict keys
    for item in ("saq.worker.Worker", "saq.worker.Worker.process",
                 "saq.worker.Worker(poll_interval)", "saq.worker.Worker(dequeue_timeout=0.0)",
                 "saq.queue.redis.RedisQueue.dequeue(timeout)", "saq.job.Job.refresh",
                 "saq.job.Job(retries=1)", "saq.job.Status.ABORTING",
                 "saq.types.WorkerInfo.queue_key", "saq.errors.InvalidUrlError",
                 "saq.utils.exponential_backoff(jitter=True)", "saq.queue.base.Queue.map"):
        assert items[item], item
    assert len(items) > 550


def test_every_saq_name_and_parameter_is_in_podq_or_a_documented_deviation() -> None:
    assert report()["undocumented"] == []


def test_every_documented_deviation_is_still_missing_from_podq() -> None:
    assert report()["stale rows"] == []


def test_every_documented_deviation_gives_its_reason() -> None:
    deviations = documented_deviations()
    assert deviations
    assert [item for item, reason in deviations.items() if len(reason.split()) < 4] == []


def test_a_missing_parameter_or_a_changed_default_or_position_is_found() -> None:
    from saq_api import _parameter_items

    def saq_fn(a: int, b: int = 1, *, c: str = "x", **kw: t.Any) -> None: ...

    def same(a: int, b: int = 1, *, c: str = "x", d: int = 0, **kw: t.Any) -> None: ...

    def differs(b: int = 1, a: int = 0, *, c: str = "y") -> None: ...

    assert all(covered for _, covered in _parameter_items("f", saq_fn, same))
    assert [i for i, covered in _parameter_items("f", saq_fn, differs) if not covered] == [
        "f(a)", "f(b)", "f(b=1)", "f(c='x')", "f(**kw)",
    ]


def test_a_row_covers_what_is_under_it() -> None:
    assert covers("saq.worker.start", "saq.worker.start(port=8080)")
    assert covers("saq.job.Job(meta)", "saq.job.Job(meta=<factory>)")
    assert not covers("saq.job.Job(meta)", "saq.job.Job(metadata)")
    assert not covers("saq.worker.start", "saq.worker.startup")
