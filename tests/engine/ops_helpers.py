"""Helpers of the metrics, drain and status tests: the `podq` command, scraping."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
PODQ = str(Path(sys.executable).parent / "podq")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def podq_async(*args: str) -> asyncio.subprocess.Process:
    """`podq ARGS` as a child process, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        PODQ, *args, cwd=HERE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PODQ_REDIS_URL": ""},
    )


async def podq_run(*args: str, within: float = 30) -> tuple[int, str, str]:
    proc = await podq_async(*args)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode or 0, out.decode(), err.decode()
