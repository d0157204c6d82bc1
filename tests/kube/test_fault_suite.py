"""The fault suite's short version (benchmarks/faults.py): Job resources on the real
control plane and redis-server while a worker is SIGKILLed, the leading operator is
SIGKILLed, Redis is flushed, Jobs are deleted mid-flight, a worker is SIGTERMed and
Redis is SIGSTOPped for 20 s.
Nothing may be lost, stuck or failed; duplicates only where Redis lost a completion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from podq.testing import ControlPlane

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from faults import DATA_LOSS, SHORT_FAULTS, run_once


@pytest.mark.timeout(900)
async def test_short_fault_suite_loses_nothing_and_fails_nothing(
    podq_crds: ControlPlane, tmp_path: Path,
) -> None:
    report = await run_once(podq_crds, jobs=60, retries=0, faults=SHORT_FAULTS,
                            logs=tmp_path, settle_within=240)
    summary = "\n".join(report.lines())
    print(summary)
    assert [name for _, name in report.faults] == list(SHORT_FAULTS)
    assert not report.lost, summary
    assert not report.stuck, summary
    assert not report.wrongly_failed, summary
    assert not report.ran_after_delete and not report.deleted_left, summary
    assert report.complete == report.jobs - report.deleted, summary
    # Redis forgot a job or its completion before the operator read it: run again (at
    # least once). A duplicate with no such fault between its two runs is a defect.
    assert all(set(cause.split("+")) <= set(DATA_LOSS) for cause in report.duplicates.values()
               ), summary
    assert report.takeover_s is not None and report.takeover_s < 15, summary
