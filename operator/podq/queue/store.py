"""How a queue is stored in Redis: the Lua scripts, the job hash and limit encodings,
and the counts of a queue's sets read in one pipelined round trip."""

from __future__ import annotations

import json
import math
import typing as t
from dataclasses import dataclass
from importlib import resources

from podq.job import BRIEF_FIELDS, JOB_FIELDS, STORED_FIELDS, Status
from podq.utils import now_seconds

if t.TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

    from podq.job import Job
    from podq.queue.keys import QueueKeys

# the limit name of the whole queue in the limits hash (function names cannot be "*")
QUEUE_LIMIT = "*"
# Job.blocked of a ready job that waits on the queue's own rate or concurrency limit
# (set as it is read: podq.queue.redis_read.mark_queue_held)
QUEUE_RATE_HELD = "queue rate"
QUEUE_CONCURRENCY_HELD = "queue concurrency"

# hash field: "1" when the job's timeout was not chosen (take.lua may apply a worker's)
TIMEOUT_NOT_CHOSEN = "tdef"
# hash field: the size in bytes of the job's JSON as podq wrote it, which a brief read
# checks (HSTRLEN) without reading the JSON: one changed by others is a corrupt record
JSON_SIZE = "jlen"


def text(value: t.Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def number(value: t.Any) -> int | float:
    """A Redis reply as a number: int when whole."""
    try:
        return int(value)  # int() and float() read bytes as well as text
    except ValueError:
        as_float = float(value)
        return int(as_float) if as_float.is_integer() else as_float


def _library() -> dict[str, str]:
    """The shared Lua functions of podq/scripts/lib: file `NAME.lua` defines `NAME`."""
    folder = resources.files("podq").joinpath("scripts", "lib")
    return {
        entry.name.removesuffix(".lua"): entry.read_text()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".lua")
    }


def load_script(name: str) -> str:
    """A script of podq/scripts, preceded by the shared functions it calls (each is
    written once, in podq/scripts/lib)."""
    body = resources.files("podq").joinpath("scripts", name).read_text()
    library = _library()
    calling = body
    used: dict[str, str] = {}
    while True:  # also the functions the used ones call; each defined before its callers
        more = {f: text for f, text in library.items() if f not in used and f"{f}(" in calling}
        if not more:
            break
        used.update(more)
        calling = "\n".join(more.values())
    ordered = [text for function, text in library.items() if function in used]
    return "\n".join([*ordered, body])


class Scripts:
    """The Lua scripts of podq/scripts, registered on one client (run with EVALSHA)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.enqueue: AsyncScript = redis.register_script(load_script("enqueue.lua"))
        self.enqueue_many: AsyncScript = redis.register_script(load_script("enqueue_many.lua"))
        self.take: AsyncScript = redis.register_script(load_script("take.lua"))
        self.write: AsyncScript = redis.register_script(load_script("write.lua"))
        self.abort: AsyncScript = redis.register_script(load_script("abort.lua"))
        self.sweep: AsyncScript = redis.register_script(load_script("sweep.lua"))
        self.liveness: AsyncScript = redis.register_script(load_script("liveness.lua"))
        self.waiting_since: AsyncScript = redis.register_script(load_script("waiting_since.lua"))


def encode(name: str, value: t.Any, dump: t.Callable[[t.Any], t.Any] = json.dumps) -> t.Any:
    """A stored Job field's value as the job hash holds it (dump: a "json" field's)."""
    kind = JOB_FIELDS[name].use.stored
    if name == "status":
        return Status(value).value
    if kind == "json":
        return dump(value)
    if kind in _NUMBERS:
        return value or 0
    return value or ""


def json_pairs(payload: str | bytes) -> list[t.Any]:
    """The job's JSON as field/value pairs of its hash, with its size (JSON_SIZE)."""
    size = len(payload.encode() if isinstance(payload, str) else payload)
    return ["job", payload, JSON_SIZE, size]


def job_hash(job: Job, payload: str, fresh: bool = False,
             dump: t.Callable[[t.Any], t.Any] = json.dumps) -> list[t.Any]:
    """The job hash as field/value pairs (what the Lua scripts HSET): the JSON (payload:
    without the "json" fields), every stored field of Job, and whether the timeout was
    chosen.

    fresh: for a new hash (enqueue), the framework's fields still at their empty
    default are left out: read back, a missing field is its default, and the scripts
    read each of them with that default."""
    pairs = json_pairs(payload)
    for field in STORED_FIELDS:
        value = getattr(job, field.name)
        if fresh and not field.use.caller and not value:
            continue
        pairs += [field.name, encode(field.name, value, dump)]
    pairs += [TIMEOUT_NOT_CHOSEN, "0" if job.chose("timeout") else "1"]
    return pairs


_NUMBERS = ("int", "number")
# Job fields kept out of the job's JSON: each is its own JSON in the hash
APART = tuple(f.name for f in STORED_FIELDS if f.use.stored == "json")
# the fields take.lua returns of each job it takes, in this order (decode_fields)
TAKE_FIELDS = ("job", *(f.name for f in STORED_FIELDS), TIMEOUT_NOT_CHOSEN)
# each stored field's name and kind, and how a scalar kind is read back: decode_fields
# runs for every job taken, so none of this is looked up per job
_STORED_KINDS = tuple((f.name, f.use.stored) for f in STORED_FIELDS)
_DECODE: dict[str, t.Callable[[t.Any], t.Any]] = {
    "int": number, "number": float, "text": lambda value: text(value) or None}
# the fields a brief read gets (HMGET, with the JSON's size: HSTRLEN), in this order
BRIEF_READ = (*(f.name for f in BRIEF_FIELDS), JSON_SIZE)


def decode_fields(
    fields: dict[str, t.Any], load: t.Callable[[t.Any], t.Any], json_size: int | None = None
) -> tuple[dict[str, t.Any], bool] | None:
    """The job dict of the fields of a job hash as read (an HGETALL reply's, TAKE_FIELDS'
    values: take.lua's reply, or BRIEF_READ's) and whether its timeout was chosen; None
    for no job.

    The stored fields win over the same names inside the JSON: the scripts update them
    without parsing it. json_size (a brief read: HSTRLEN of the JSON, not read): the job
    dict holds only the stored fields read, and a JSON that is not the size podq wrote
    (changed by others) raises ValueError, as a JSON that does not parse would."""
    if json_size is None:
        if fields.get("job") is None:
            return None
        job_dict = load(fields["job"])
    else:
        if not json_size:
            return None
        written = fields.get(JSON_SIZE)
        if written is not None and int(written) != json_size:
            raise ValueError(f"its JSON ({json_size} bytes) is not the one podq wrote"
                             f" ({text(written)} bytes)")
        job_dict = {}
    for name, kind in _STORED_KINDS:
        value = fields.get(name)
        if value is not None:
            job_dict[name] = load(value) if kind == "json" else _DECODE[kind](value)
    return job_dict, text(fields.get(TIMEOUT_NOT_CHOSEN) or "0") != "1"


def decode_hash(
    raw: t.Any, load: t.Callable[[t.Any], t.Any]
) -> tuple[dict[str, t.Any], bool] | None:
    """decode_fields() of an HGETALL reply (dict or flat list)."""
    if not raw:
        return None
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return decode_fields({text(k): v for k, v in raw.items()}, load)


@dataclass(frozen=True)
class Counts:
    """The sizes of a queue's sets at one moment."""

    ready: int  # in the queued set
    due: int  # scheduled, due now (a worker promotes them as it takes)
    later: int  # scheduled, due later
    active: int  # active or aborting
    cap: int | None = None  # the queue's concurrency limit, if any
    blocked: int = 0  # waiting for the jobs they depend on (docs/dependencies.md)
    # how many jobs the queue's own rate limit lets start now (None: it has none)
    startable: int | None = None
    # (limit name, how many ready jobs are parked on it: podq.queue.limits), for each
    # limit that holds some back
    parked: tuple[tuple[str, int], ...] = ()

    @property
    def limited(self) -> int:
        """Ready jobs waiting on a limit (parked)."""
        return sum(size for _, size in self.parked)

    @property
    def queued(self) -> int:
        return self.ready + self.due + self.limited + self.blocked

    @property
    def incomplete(self) -> int:
        return self.ready + self.due + self.limited + self.blocked + self.later + self.active

    @property
    def rate_held(self) -> int:
        """Ready jobs that wait on the queue's own rate limit: those beyond what it lets
        start now. They stay in the ready queue, in their order (not parked)."""
        if self.startable is None:
            return 0
        return max(0, self.ready + self.due - self.startable)

    @property
    def depth(self) -> int:
        """Due work plus running work: what an autoscaler should size workers for. Jobs
        waiting on a limit (parked, or beyond what the queue's rate lets start now) are
        left out, and no more than the queue's concurrency limit counts: more workers
        would not run them sooner."""
        depth = self.ready + self.due - self.rate_held + self.active
        return depth if self.cap is None else min(depth, self.cap)


@dataclass(frozen=True)
class Limit:
    """How many jobs may run at once (concurrency), and how many may start per `per`
    seconds (rate), cluster-wide. None: no such limit.

    A rate limit spaces starts per/rate seconds apart, so no window of `per` seconds
    holds more than `rate` starts; `burst` > 1 lets that many start at once after an
    idle spell (then a window of `per` may hold up to rate + burst - 1)."""

    concurrency: int | None = None
    rate: int | None = None
    per: float = 60.0
    burst: int = 1

    def __post_init__(self) -> None:
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise ValueError(f"concurrency must be a positive integer, got {self.concurrency!r}")
        if self.rate is not None and (not isinstance(self.rate, int) or self.rate < 1):
            raise ValueError(f"rate must be a positive integer, got {self.rate!r}")
        if not (isinstance(self.per, int | float) and math.isfinite(self.per) and self.per > 0):
            raise ValueError(f"per must be a positive number of seconds, got {self.per!r}")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a positive integer, got {self.burst!r}")
        if self.concurrency is None and self.rate is None:
            raise ValueError("a Limit needs concurrency, rate or both")

    @property
    def per_ms(self) -> int:
        """`per` in whole milliseconds, as take.lua reads it."""
        return max(1, round(self.per * 1000))

    def encode(self) -> str:
        """As the limits hash holds it (read by take.lua): `concurrency,rate,per ms,burst`."""
        rate = f"{self.rate},{self.per_ms},{self.burst}" if self.rate else ",,"
        return f"{self.concurrency or ''},{rate}"

    @classmethod
    def decode(cls, value: t.Any) -> Limit:
        concurrency, rate, per_ms, burst = text(value).split(",")
        return cls(
            concurrency=int(concurrency) if concurrency else None,
            rate=int(rate) if rate else None,
            per=int(per_ms) / 1000 if per_ms else 60.0,
            burst=int(burst) if burst else 1,
        )


def queue_limit_room(
    encoded: t.Any, arrival: t.Any, now_ms: float
) -> tuple[int | None, int | None]:
    """The queue's own limit as the limits hash holds it (Limit.encode; None: no limit),
    and its rate's state (take.lua's GCRA theoretical arrival time, epoch ms; None:
    idle): (its concurrency cap, how many jobs its rate lets start at now_ms), None
    where it has no such limit. The same GCRA sum as take.lua's."""
    if not encoded:
        return None, None
    limit = Limit.decode(encoded)
    if not limit.rate:
        return limit.concurrency, None
    gap = limit.per_ms / limit.rate
    tat = max(float(arrival or 0), now_ms)
    starts = math.floor((now_ms + (limit.burst - 1) * gap - tat) / gap + 1e-6) + 1
    return limit.concurrency, max(0, starts)


async def read_counts(redis: aioredis.Redis, keys: QueueKeys) -> Counts:
    """All the counts of a queue, in one pipelined round trip."""
    current = now_seconds()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.queued)
        pipe.zcount(keys.scheduled, "-inf", current)
        pipe.zcount(keys.scheduled, f"({current}", "+inf")
        pipe.zcard(keys.active)
        pipe.smembers(keys.limited)
        pipe.hget(keys.limits, QUEUE_LIMIT)
        pipe.zcard(keys.waiting)
        pipe.get(keys.rate(QUEUE_LIMIT))
        (ready, due, later, active, limited_names, queue_limit, blocked,
         arrival) = await pipe.execute()
    cap, startable = queue_limit_room(queue_limit, arrival, current * 1000)
    parked: tuple[tuple[str, int], ...] = ()
    if limited_names:  # a second round trip only while jobs wait on a limit
        names = [text(name) for name in limited_names]
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(keys.parked(name))
            sizes = await pipe.execute()
        parked = tuple((name, size) for name, size in zip(names, sizes, strict=True) if size)
    return Counts(ready, due, later, active, cap, blocked, startable, parked)
