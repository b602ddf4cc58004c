"""`mesh-node bench --quick --json` runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROUND = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_round.py"


def test_bench_quick_json_reports_every_key() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from node.cli import main; main()", "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    figures = json.loads(out.stdout)
    for key in ("verify_per_s", "ingest_per_s", "rtt_ms", "sign_us", "verify_us"):
        assert figures[key] > 0, key
    assert 0 < figures["ingest_ratio"] <= 2
    floor = 2 * figures["rtt_ms"] + 4 * (figures["sign_us"] + figures["verify_us"]) / 1000
    assert abs(figures["cnp_floor_ms"] - floor) < 0.01
    for key in ("cnp_p50_ms", "cnp_p99_ms"):
        assert set(figures[key]) == {"1", "4", "16"}
        assert all(v > 0 for v in figures[key].values())
    assert all(figures["cnp_p99_ms"][k] >= figures["cnp_p50_ms"][k] for k in ("1", "4", "16"))
    # first_idle rounds across processes complete too (a failed request raises).
    for key in ("cnp_first_idle_p50_ms", "cnp_first_idle_p99_ms"):
        assert set(figures[key]) == {"4", "16"}
        assert all(v > 0 for v in figures[key].values())


def test_round_timeline_covers_every_milestone_in_order() -> None:
    # benchmarks/bench_round.py: the per-hop breakdown quoted in docs/performance.md.
    out = subprocess.run(
        [sys.executable, str(ROUND), "--bidders", "2", "--rounds", "30"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("2 bidder(s): p50"))
    assert "median over 30 rounds" in lines[head]
    rows = [line.rsplit(None, 2) for line in lines[head + 2 : head + 18]]
    labels = [r[0].strip() for r in rows]
    assert labels[0] == "request() called" and labels[-1] == "request() returns"
    assert {"requester: award sent", "winner: handler starts", "cfp: last copy sent"} <= set(labels)
    ats = [float(r[1]) for r in rows]
    assert ats == sorted(ats) and ats[-1] > 0
    gaps = [float(r[2]) for r in rows]
    assert all(abs(g - (b - a)) <= 1.0 for g, a, b in zip(gaps[1:], ats[:-1], ats[1:], strict=True))
