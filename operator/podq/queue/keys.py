"""Every Redis key and channel podq uses, and the job id format (docs/redis-keys.md).

Every key of a queue starts with `podq:{NAME}:`: the braces are a Redis Cluster hash
tag, so all keys of one queue live in one slot (the Lua scripts touch several keys
atomically) and different queues spread over shards. This module imports nothing of
podq, so any module may name keys through it.
"""

from __future__ import annotations

import re

ROOT = "podq:"
QUEUES_KEY = ROOT + "queues"  # set of queue names (`podq info`); outside any queue's slot
_JOB_MARK = "}:job:"
# fullmatch: with `$` and match, "a\n" passed (`$` matches before a final newline)
_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+")


def is_queue_name(name: object) -> bool:
    """Whether the name is usable as a queue name (no braces: they would break the hash
    tag)."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name))


def check_queue_name(name: str) -> str:
    """The name, if usable as a queue name (is_queue_name); else ValueError."""
    if not is_queue_name(name):
        raise ValueError(f"invalid queue name {name!r}: use letters, digits and _.:-")
    return name


class QueueKeys:
    """The Redis keys and pub/sub channels of one queue."""

    __slots__ = (
        "abort_prefix", "active", "changes", "dependents_prefix", "job_prefix", "limited",
        "limits", "name", "parked_prefix", "paused", "pending_prefix", "prefix", "queued",
        "rate_prefix", "ready", "scheduled", "seq", "slot_prefix", "stats", "sweep_lock", "waiting",
        "wake", "worker_prefix", "workers",
    )

    def __init__(self, name: str) -> None:
        self.name = check_queue_name(name)
        self.prefix = f"{ROOT}{{{name}}}:"
        self.job_prefix = self.prefix + "job:"  # + job key: the job hash
        self.abort_prefix = self.prefix + "abort:"  # + job key: the abort marker
        self.worker_prefix = self.prefix + "worker:"  # + worker id: liveness record
        self.queued = self.prefix + "queued"  # zset of ready job keys
        # list: one token while ready work may wait, popped by an idle worker's
        # take_when_ready (podq.queue.redis_take)
        self.ready = self.prefix + "ready"
        self.scheduled = self.prefix + "scheduled"  # zset of job keys due later
        self.active = self.prefix + "active"  # zset of taken job keys
        self.seq = self.prefix + "seq"  # FIFO counter within a priority
        self.stats = self.prefix + "stats"  # hash of lifetime counters
        self.workers = self.prefix + "workers"  # zset of worker ids by record expiry
        self.sweep_lock = self.prefix + "sweep-lock"
        self.paused = self.prefix + "paused"  # set by `podq drain`
        # flow control (podq.queue.limits, docs/limits.md)
        self.limits = self.prefix + "limits"  # hash: name -> "concurrency,rate,per ms,burst"
        self.limited = self.prefix + "limited"  # set of limit names with parked jobs
        self.slot_prefix = self.prefix + "slots:"  # + name: hash job key -> attempt id
        self.parked_prefix = self.prefix + "parked:"  # + name: zset of jobs waiting on it
        self.rate_prefix = self.prefix + "rate:"  # + name: GCRA theoretical arrival (ms)
        # dependencies (docs/dependencies.md)
        self.waiting = self.prefix + "waiting"  # zset of jobs waiting on others, by enqueue
        self.pending_prefix = self.prefix + "pending:"  # + job key: set of its open deps
        self.dependents_prefix = self.prefix + "dependents:"  # + job key: set waiting on it
        self.changes = self.prefix + "changes"  # channel: every job change
        self.wake = self.prefix + "wake"  # channel: ready work and aborts, for workers

    def job(self, job_key: str) -> str:
        """The job hash; also the job's id."""
        return self.job_prefix + job_key

    def abort(self, job_key: str) -> str:
        return self.abort_prefix + job_key

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id

    def waker(self, worker_id: str) -> str:
        """A worker's own list, pushed to end its take_when_ready (podq.queue.redis_take)."""
        return self.prefix + "waker:" + worker_id

    def slots(self, name: str) -> str:
        """The concurrency slots held under a limit: hash job key -> attempt id."""
        return self.slot_prefix + name

    def parked(self, name: str) -> str:
        """The ready jobs waiting on a limit: zset, scored as in the queued zset."""
        return self.parked_prefix + name

    def rate(self, name: str) -> str:
        """A rate limit's state (GCRA theoretical arrival time, epoch ms)."""
        return self.rate_prefix + name

    def pending(self, job_key: str) -> str:
        """The dependencies a waiting job still waits on (set of job keys)."""
        return self.pending_prefix + job_key

    def dependents(self, job_key: str) -> str:
        """The jobs waiting on this one (set of job keys)."""
        return self.dependents_prefix + job_key

    def take_record(self, request: str) -> str:
        """The job keys one take request got, so a resent request gets them again."""
        return f"{self.prefix}take:{request}"

    def take_last(self, worker_id: str) -> str:
        """The record key of a worker's last take request that named its previous one
        (take.lua): a late copy of an older request takes nothing."""
        return f"{self.prefix}take-last:{worker_id}"

    def cron_slot(self, function: str, slot: int) -> str:
        """Claim of one slot of a `CronJob(unique=False)`, so it is enqueued once."""
        return f"{self.prefix}cron-slot:{function}:{slot}"

    def operator_claim(self, job_key: str) -> str:
        """Record that an operator enqueued this job (podq.operator.jobs)."""
        return f"{self.prefix}operator-claim:{job_key}"

    # -- written by `podq web` (podq.web.feed) from the change feed and the stats hash

    def web_finished(self, status: str) -> str:
        """zset of the keys of jobs that finished with status (complete, failed,
        aborted) while a `podq web` ran, score = when (epoch ms); capped."""
        return f"{self.prefix}web:finished:{status}"

    def web_events(self, job_key: str) -> str:
        """list of `<epoch ms> <status>`: a job's changes seen by `podq web`."""
        return f"{self.prefix}web:events:{job_key}"

    @property
    def web_samples(self) -> str:
        """zset of samples of the stats hash, `<epoch ms> <complete> <failed>
        <aborted>`, score = epoch s; the last two hours."""
        return f"{self.prefix}web:samples"


def resource_job_key(namespace: str, name: str, uid: str, spec_key: str | None = None) -> str:
    """The job key of a podq.dev Job resource (the part after `job:` in its job hash).

    Always begins with the resource's namespace and a '/' (namespace names cannot contain
    one), so two namespaces never share a job: `<namespace>/<spec.key>` when the spec
    sets a key, else `<namespace>/<name>/<uid>` (the uid makes a re-created resource of
    the same name a new job). A Python client shares deduplication with a resource by
    enqueueing under the same form, e.g. `resource_job_key("team-a", "", "", "nightly")`.
    """
    if spec_key:
        return f"{namespace}/{spec_key}"
    return f"{namespace}/{name}/{uid}"


# Commands a queue user may run: everything but the @dangerous category (FLUSHALL, KEYS,
# CONFIG, DEBUG, MONITOR, ACL, ...), and only on the keys and channels of acl_rules;
# but INFO, which sweep.lua reads Redis's uptime from and check_redis_version (Queue.connect,
# the CLI, podq web, the operator) its version (server-wide counters, no key or value;
# `+info|server` would be narrower, but Redis deprecates first-arg rules). SCAN
# and RANDOMKEY take no key, so Redis does not filter what they return: they would list
# other queues' job keys (`<namespace>/<name>/...`); workers and clients need neither.
_ACL_COMMANDS = ("+@all", "-@dangerous", "+info", "-scan", "-randomkey")


def acl_rules(queue: str | None) -> list[str]:
    """Redis ACL rules (`ACL SETUSER <user> on ><password> <rules...>`) that confine a
    user to one queue's keys and channels, plus the set of queue names (`podq info`).
    A worker or client connecting as that user gets NOPERM on any other queue's keys,
    also from inside the Lua scripts. queue None: every queue's (the operator's user).
    """
    pattern = f"{ROOT}*" if queue is None else QueueKeys(queue).prefix + "*"
    keys = [f"~{pattern}"] if queue is None else [f"~{pattern}", f"~{QUEUES_KEY}"]
    return ["resetkeys", *keys, "resetchannels", f"&{pattern}", *_ACL_COMMANDS]


def is_job_id(text: str) -> bool:
    return text.startswith(ROOT + "{") and _JOB_MARK in text


def key_from_id(job_id: str | bytes) -> str:
    """The job key of a job id `podq:{QUEUE}:job:KEY`, also for keys containing ':' or
    '}:job:' (queue names cannot contain braces, so the first mark ends the name)."""
    if isinstance(job_id, bytes):
        job_id = job_id.decode()
    if is_job_id(job_id):
        return job_id[job_id.find(_JOB_MARK) + len(_JOB_MARK):]
    raise ValueError(f"not a podq job id: {job_id!r}")


def queue_from_id(job_id: str) -> str:
    """The queue name of a job id."""
    if not is_job_id(job_id):
        raise ValueError(f"not a podq job id: {job_id!r}")
    return job_id[len(ROOT) + 1: job_id.find(_JOB_MARK)]
