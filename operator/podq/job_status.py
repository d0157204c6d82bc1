"""Job statuses (SAQ's) and the sets of them the engine, the CLI and the operator test
against; re-exported by podq.job, SAQ's home for them."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Job status. Terminal: complete, failed, aborted."""

    NEW = "new"
    QUEUED = "queued"
    ACTIVE = "active"
    ABORTING = "aborting"
    ABORTED = "aborted"
    FAILED = "failed"
    COMPLETE = "complete"

    def __str__(self) -> str:
        return self.value


ACTIVE_STATUSES = {Status.NEW, Status.QUEUED, Status.ACTIVE}
TERMINAL_STATUSES = {Status.COMPLETE, Status.FAILED, Status.ABORTED}
UNSUCCESSFUL_TERMINAL_STATUSES = TERMINAL_STATUSES - {Status.COMPLETE}
RUNNING_STATUSES = frozenset({Status.ACTIVE, Status.ABORTING})  # taken, run by a worker
