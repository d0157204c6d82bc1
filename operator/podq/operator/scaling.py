"""Autoscaling decisions for worker Deployments: desired replicas, stabilisation, costs."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podq.operator.names import (
    ANNOTATION_CONCURRENCY,
    ANNOTATION_MAX_REPLICAS,
    ANNOTATION_MIN_REPLICAS,
)

DEFAULT_CONCURRENCY = 10
DEFAULT_MAX_REPLICAS = 10
BUSY_POD_COST = 1000  # per running job; idle pods get 0 and are deleted first


@dataclass(frozen=True)
class ScalingSettings:
    min_replicas: int = 0
    max_replicas: int = DEFAULT_MAX_REPLICAS
    concurrency: int = DEFAULT_CONCURRENCY


def settings_from_annotations(annotations: Mapping[str, str] | None) -> ScalingSettings:
    """Settings from a Deployment's podq.dev/* annotations; raises ValueError naming the
    annotation when one is not a sensible integer."""
    annotations = annotations or {}

    def read(name: str, default: int, lowest: int) -> int:
        raw = annotations.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"annotation {name}={raw!r} is not an integer") from None
        if value < lowest:
            raise ValueError(f"annotation {name}={value} is below {lowest}")
        return value

    min_replicas = read(ANNOTATION_MIN_REPLICAS, 0, 0)
    max_replicas = read(ANNOTATION_MAX_REPLICAS, max(DEFAULT_MAX_REPLICAS, min_replicas), 0)
    if max_replicas < min_replicas:
        raise ValueError(
            f"annotation {ANNOTATION_MAX_REPLICAS}={max_replicas} is below"
            f" {ANNOTATION_MIN_REPLICAS}={min_replicas}"
        )
    return ScalingSettings(min_replicas, max_replicas, read(ANNOTATION_CONCURRENCY, 10, 1))


def desired_replicas(depth: int, settings: ScalingSettings) -> int:
    """ceil((queued-and-due + active) / concurrency), within min/max.

    Active jobs count, unlike a list-length scaler: a pod still running jobs is needed.
    """
    wanted = math.ceil(max(depth, 0) / settings.concurrency)
    return max(settings.min_replicas, min(settings.max_replicas, wanted))


class Stabiliser:
    """Scale up at once, scale down only to the highest recommendation of the window.

    The same rule as the HPA's scale-down stabilisation: a dip in depth shorter than the
    window never removes a pod.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._history: deque[tuple[float, int]] = deque()

    def recommend(self, now: float, desired: int) -> int:
        self._history.append((now, desired))
        while self._history and self._history[0][0] < now - self.window_s:
            self._history.popleft()
        return max(value for _, value in self._history)


def deletion_costs(
    workers: Iterable[Mapping], pod_names: Iterable[str]
) -> dict[str, int]:
    """pod-deletion-cost per pod: BUSY_POD_COST per running job, 0 when idle.

    A worker reports its hostname, which in a pod is the pod's name; pods without a
    worker record (starting, or not running podq) count as idle.
    """
    costs = dict.fromkeys(pod_names, 0)
    for worker in workers:
        pod = worker.get("hostname")
        if pod in costs:
            costs[pod] += BUSY_POD_COST * len(worker.get("active") or ())
    return costs
