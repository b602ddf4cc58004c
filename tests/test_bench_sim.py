"""benchmarks/bench_sim.py runs, and its per-kind timing does not change the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sim.py"


def _bench(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("case", ["lan", "chaos"])
def test_time_by_kind_leaves_the_run_unchanged(case: str) -> None:
    small = ("--nodes", "24", "--duration", "4")
    plain = _bench(case, *small)
    timed = _bench(case, *small, "--by-kind")
    assert timed["trace_hash"] == plain["trace_hash"]
    assert timed["events"] == plain["events"]
    kinds = timed["time_by_kind"]
    assert isinstance(kinds, dict)
    assert {"<timer>", "ping", "ack", "gossip"} <= set(kinds)
    assert 0 < sum(row["share_of_wall"] for row in kinds.values()) <= 1.0
    assert all(row["messages"] > 0 and row["us_per_message"] > 0 for row in kinds.values())
