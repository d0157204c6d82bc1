"""CronJob slot computation and decisions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from podq.operator.cron import (
    Child,
    InvalidCronSpec,
    children_to_delete,
    decide,
    due_slot,
    parse_schedule,
)

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


def test_latest_slot_includes_an_exact_hit() -> None:
    schedule = parse_schedule("*/5 * * * *", "UTC")
    assert schedule.latest_at_or_before(T0) == T0
    assert schedule.latest_at_or_before(T0 + timedelta(minutes=4)) == T0
    assert schedule.next_after(T0) == T0 + timedelta(minutes=5)


def test_six_fields_means_seconds_last() -> None:
    schedule = parse_schedule("* * * * * */10", None)
    assert schedule.next_after(T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=10)


def test_time_zone_is_honoured() -> None:
    schedule = parse_schedule("0 9 * * *", "Europe/Paris")  # 09:00 CET = 08:00 UTC
    assert schedule.next_after(T0).astimezone(UTC) == datetime(2026, 3, 2, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "zone", "reason"),
    [
        ("61 * * * *", "UTC", "InvalidSchedule"),
        ("* * *", "UTC", "InvalidSchedule"),
        ("* * * * * * *", "UTC", "InvalidSchedule"),
        ("@fortnightly", "UTC", "InvalidSchedule"),
        ("* * * * *", "Mars/Olympus", "InvalidTimeZone"),
        ("* * * * *", "../etc/passwd", "InvalidTimeZone"),
        ("5-1 * * * *", "UTC", "InvalidSchedule"),  # reversed: croniter would wrap it
        ("0 9 * * fri-mon", "UTC", "InvalidSchedule"),
        ("0 0 1 dec-jan *", "UTC", "InvalidSchedule"),
        ("0 0 31 2 *", "UTC", "InvalidSchedule"),  # no date matches
        ("0 0 31 2,4,6,9,11 *", "UTC", "InvalidSchedule"),
        ("*/0 * * * *", "UTC", "InvalidSchedule"),
    ],
)
def test_invalid_specs_are_named(expression: str, zone: str, reason: str) -> None:
    with pytest.raises(InvalidCronSpec) as invalid:
        parse_schedule(expression, zone)
    assert invalid.value.reason == reason


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "1-5 * * * *", "0 9 * * mon-fri",
                                        "0-59/15 * * * *", "0 0 31 * *", "* * * * 0-6"])
def test_valid_ranges_and_rare_dates_pass(expression: str) -> None:
    parse_schedule(expression, "UTC")


def test_impossible_dates_and_reversed_ranges_say_so() -> None:
    with pytest.raises(InvalidCronSpec, match="no date matches"):
        parse_schedule("0 0 30 2 *", None)
    with pytest.raises(InvalidCronSpec, match="range 5-1 of the minute field is reversed"):
        parse_schedule("5-1 * * * *", None)


def test_after_downtime_only_the_latest_missed_slot_is_due() -> None:
    schedule = parse_schedule("* * * * *", "UTC")
    now = T0 + timedelta(days=3, seconds=30)
    assert due_slot(schedule, T0, now) == T0 + timedelta(days=3)
    assert due_slot(schedule, T0 + timedelta(days=3), now) is None


def decision(**overrides):
    arguments = dict(
        handled_until=T0, now=T0 + timedelta(minutes=1, seconds=2), suspend=False,
        policy="Allow", starting_deadline_s=None, active_children=[],
    )
    arguments.update(overrides)
    return decide(parse_schedule("* * * * *", "UTC"), **arguments)


def test_decisions() -> None:
    slot = T0 + timedelta(minutes=1)
    assert decision().action == "fire" and decision().slot == slot
    assert decision(handled_until=slot).action == "wait"
    assert decision(suspend=True).action == "wait"
    assert decision(active_children=["a"]).action == "fire"  # Allow
    forbid = decision(policy="Forbid", active_children=["a"])
    assert (forbid.action, forbid.reason) == ("skip", "ConcurrencyForbidden")
    replace = decision(policy="Replace", active_children=["a", "b"])
    assert (replace.action, replace.replace) == ("fire", ("a", "b"))
    late = decision(starting_deadline_s=1)
    assert (late.action, late.reason) == ("skip", "MissedSchedule")
    assert decision(starting_deadline_s=5).action == "fire"


def test_history_keeps_newest_per_kind() -> None:
    def child(i: int, state: str) -> Child:
        return Child(f"c{i}", T0 + timedelta(minutes=i), state)  # type: ignore[arg-type]

    children = [child(i, "complete") for i in range(5)]
    children += [child(10 + i, "failed") for i in range(3)]
    children.append(child(20, "active"))
    assert children_to_delete(children, 3, 1) == ["c0", "c1", "c10", "c11"]
    assert children_to_delete(children, 10, 10) == []
