"""`mesh-node bench --quick --json` runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys


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
