"""Queues: the API (podq.queue.base), stored in Redis (podq.queue.redis).

`Queue` here is the Redis queue, podq's only store: `Queue(redis, name)` and
`Queue.from_url(url)` both work, as does SAQ's `RedisQueue`.
"""

from podq.queue.base import (
    DEFAULT_MAX_DISRUPTIONS,
    DEFAULT_SWEPT_JOB_ERROR,
    WORKER_LOST,
    JobError,
)
from podq.queue.keys import QUEUES_KEY
from podq.queue.limits import QUEUE_CONCURRENCY_HELD, QUEUE_LIMIT, QUEUE_RATE_HELD, Limit
from podq.queue.notify import Change, Subscription, WakeSubscription
from podq.queue.prepare import PRIORITY_LIMIT
from podq.queue.redis import RedisQueue, check_redis_version, list_queues
from podq.utils import cancel_and_wait, cancel_requested

Queue = RedisQueue

__all__ = [
    "DEFAULT_MAX_DISRUPTIONS",
    "DEFAULT_SWEPT_JOB_ERROR",
    "PRIORITY_LIMIT",
    "QUEUES_KEY",
    "QUEUE_CONCURRENCY_HELD",
    "QUEUE_LIMIT",
    "QUEUE_RATE_HELD",
    "WORKER_LOST",
    "Change",
    "JobError",
    "Limit",
    "Queue",
    "RedisQueue",
    "Subscription",
    "WakeSubscription",
    "cancel_and_wait",
    "cancel_requested",
    "check_redis_version",
    "list_queues",
]
