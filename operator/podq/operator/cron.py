"""CronJob decisions: schedule slots, what a tick should do, which children to trim.

Pure: time is passed in, nothing is read or written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from podq.job import UNSUCCESSFUL_TERMINAL_STATUSES, Status

# croniter's get_prev from an instant exactly on a slot returns the slot before it.
_EPSILON = timedelta(microseconds=1)


class InvalidCronSpec(ValueError):
    """A schedule or time zone the schema let through but that cannot be used."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Schedule:
    expression: str
    zone: ZoneInfo

    def latest_at_or_before(self, moment: datetime) -> datetime:
        local = (moment + _EPSILON).astimezone(self.zone)
        return croniter(self.expression, local).get_prev(datetime)

    def next_after(self, moment: datetime) -> datetime:
        return croniter(self.expression, moment.astimezone(self.zone)).get_next(datetime)


def parse_schedule(expression: str, time_zone: str | None) -> Schedule:
    """A Schedule, or InvalidCronSpec with reason InvalidTimeZone / InvalidSchedule."""
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidCronSpec(
            "InvalidTimeZone", f"spec.timeZone {time_zone!r} is not a known IANA time zone"
        ) from None
    expression = expression.strip()
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise InvalidCronSpec(
            "InvalidSchedule",
            f"spec.schedule {expression!r} has {len(fields)} fields; expected 5 or 6",
        )
    reversed_range = _reversed_range(fields) if not expression.startswith("@") else None
    if reversed_range:
        raise InvalidCronSpec("InvalidSchedule", f"spec.schedule {expression!r} is not valid:"
                              f" {reversed_range} (batch/v1 refuses it too)")
    try:
        if not croniter.is_valid(expression):
            raise CroniterError("not a valid cron expression")
        croniter(expression, datetime.now(zone)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidCronSpec(
            "InvalidSchedule", f"spec.schedule {expression!r} is not valid: no date matches it"
            " (such as day 30 or 31 of February)") from None
    except (CroniterError, ValueError, KeyError) as error:
        raise InvalidCronSpec(
            "InvalidSchedule", f"spec.schedule {expression!r} is not valid: {error}"
        ) from None
    return Schedule(expression, zone)


_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
_NAMES = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_NAMES.update({name: number for number, name in enumerate(
    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})


def _reversed_range(fields: Sequence[str]) -> str | None:
    """The first range such as 5-1 (croniter would wrap it around; cron refuses it)."""
    for position, value in enumerate(fields):
        for part in value.split(","):
            bounds = part.split("/", 1)[0].split("-")
            if len(bounds) != 2:
                continue
            low, high = (_NAMES.get(b.lower(), int(b) if b.isdigit() else None) for b in bounds)
            if low is not None and high is not None and low > high:
                return f"range {part} of the {_FIELD_NAMES[position]} field is reversed"
    return None


def due_slot(schedule: Schedule, handled_until: datetime, now: datetime) -> datetime | None:
    """The latest slot in (handled_until, now], or None.

    After downtime this is the newest missed slot only: older ones are not run, and
    unlike batch/v1 CronJob there is no "too many missed start times" give-up.
    """
    slot = schedule.latest_at_or_before(now)
    return slot if slot > handled_until else None


Action = Literal["wait", "fire", "skip"]


@dataclass(frozen=True)
class Decision:
    action: Action
    slot: datetime | None = None
    replace: tuple[str, ...] = ()  # unfinished children to delete first (Replace)
    reason: str = ""
    message: str = ""


def decide(
    schedule: Schedule,
    *,
    handled_until: datetime,
    now: datetime,
    suspend: bool,
    policy: str,
    starting_deadline_s: int | None,
    active_children: Sequence[str],
) -> Decision:
    """What one tick of a CronJob should do.

    A skipped slot (deadline passed, Forbid with a Job still running) is not recorded as
    scheduled, as in batch/v1: with Forbid it runs once the running Job ends, if still
    within startingDeadlineSeconds. While suspended nothing fires; on resume the latest
    missed slot runs (batch/v1 behaviour), unless a deadline says it is too late.
    """
    slot = due_slot(schedule, handled_until, now)
    if slot is None or suspend:
        return Decision("wait")
    late_s = (now - slot).total_seconds()
    if starting_deadline_s is not None and late_s > starting_deadline_s:
        return Decision(
            "skip", slot, reason="MissedSchedule",
            message=f"slot {slot.isoformat()} is {late_s:.0f}s late, past"
            f" startingDeadlineSeconds={starting_deadline_s}",
        )
    if active_children and policy == "Forbid":
        return Decision(
            "skip", slot, reason="ConcurrencyForbidden",
            message=f"slot {slot.isoformat()} skipped: {', '.join(active_children)} still running",
        )
    replace = tuple(active_children) if policy == "Replace" else ()
    return Decision("fire", slot, replace=replace, reason="Scheduled")


@dataclass(frozen=True)
class Child:
    name: str
    scheduled: datetime
    state: Literal["active", "complete", "failed"] = "active"
    completed: datetime | None = field(default=None, compare=False)
    uid: str = field(default="", compare=False)


def children_to_delete(
    children: Sequence[Child], successful_limit: int, failed_limit: int
) -> list[str]:
    """Finished children beyond the history limits, oldest first."""
    doomed: list[str] = []
    for state, limit in (("complete", successful_limit), ("failed", failed_limit)):
        finished = sorted((c for c in children if c.state == state), key=lambda c: c.scheduled)
        excess = len(finished) - limit
        doomed.extend(c.name for c in finished[: max(excess, 0)])
    return doomed


def child_state(status: dict | None) -> Literal["active", "complete", "failed"]:
    value = (status or {}).get("status")
    if value == Status.COMPLETE:
        return "complete"
    if value in UNSUCCESSFUL_TERMINAL_STATUSES:
        return "failed"
    return "active"
