"""Autoscaling arithmetic and the coalescer (pure)."""

from __future__ import annotations

import pytest

from podq.operator.coalesce import Coalescer, TokenBucket
from podq.operator.scaling import (
    BUSY_POD_COST,
    ScalingSettings,
    Stabiliser,
    deletion_costs,
    desired_replicas,
    settings_from_annotations,
)


@pytest.mark.parametrize(
    ("depth", "settings", "expected"),
    [
        (0, ScalingSettings(0, 10, 10), 0),
        (1, ScalingSettings(0, 10, 10), 1),
        (10, ScalingSettings(0, 10, 10), 1),
        (11, ScalingSettings(0, 10, 10), 2),
        (1000, ScalingSettings(0, 4, 10), 4),
        (0, ScalingSettings(2, 4, 10), 2),
        (7, ScalingSettings(0, 10, 1), 7),
    ],
)
def test_desired_replicas(depth: int, settings: ScalingSettings, expected: int) -> None:
    assert desired_replicas(depth, settings) == expected


def test_settings_from_annotations() -> None:
    assert settings_from_annotations(None) == ScalingSettings(0, 10, 10)
    parsed = settings_from_annotations({
        "podq.dev/min-replicas": "1", "podq.dev/max-replicas": "3", "podq.dev/concurrency": "2",
    })
    assert parsed == ScalingSettings(1, 3, 2)
    with pytest.raises(ValueError, match=r"podq\.dev/concurrency"):
        settings_from_annotations({"podq.dev/concurrency": "0"})
    with pytest.raises(ValueError, match=r"podq\.dev/max-replicas"):
        settings_from_annotations({"podq.dev/min-replicas": "5", "podq.dev/max-replicas": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        settings_from_annotations({"podq.dev/min-replicas": "many"})


def test_stabiliser_scales_up_at_once_and_down_after_the_window() -> None:
    stabiliser = Stabiliser(window_s=10)
    assert stabiliser.recommend(0, 3) == 3
    assert stabiliser.recommend(1, 5) == 5  # up: immediate
    assert stabiliser.recommend(5, 0) == 5  # down: held
    assert stabiliser.recommend(11.5, 0) == 0  # the 5 at t=1 left the window


def test_deletion_costs_mark_busy_pods() -> None:
    workers = [
        {"hostname": "pod-a", "active": ["j1", "j2"]},
        {"hostname": "pod-b", "active": []},
        {"hostname": "elsewhere", "active": ["j3"]},
    ]
    assert deletion_costs(workers, ["pod-a", "pod-b", "pod-c"]) == {
        "pod-a": 2 * BUSY_POD_COST, "pod-b": 0, "pod-c": 0,
    }


def test_token_bucket_limits_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100, burst=50, clock=lambda: now[0])
    assert bucket.take(80) == 50
    assert bucket.take(10) == 0
    assert bucket.seconds_until(10) == pytest.approx(0.1)
    now[0] = 0.2
    assert bucket.take(80) == 20


async def test_coalescer_writes_each_key_once_per_flush() -> None:
    coalescer: Coalescer[str] = Coalescer()
    for _ in range(10):
        for key in ("a", "b", "c"):
            coalescer.mark(key)
    assert await coalescer.wait(0.01)
    assert coalescer.take(2) == ["a", "b"]
    assert coalescer.take(10) == ["c"]
    assert not await coalescer.wait(0.01)
    coalescer.mark("a")
    assert await coalescer.wait(1)
