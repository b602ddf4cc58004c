"""Whole simulated runs: determinism across PYTHONHASHSEED, chaos checkers, the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.cli_sim import simulate
from simulations.runner import run_scenario
from simulations.scenario import apply_overrides, load_scenario

ROOT = Path(__file__).resolve().parent.parent
HAVE_CORE = importlib.util.find_spec("simulations.core_factory") is not None and (
    importlib.util.find_spec("mesh.core") is not None
)
KINDS = ["toy", pytest.param("core", marks=pytest.mark.skipif(not HAVE_CORE, reason="no core"))]

REPORT_KEYS = {
    "seed",
    "nodes",
    "virtual_seconds",
    "wall_seconds",
    "events",
    "events_per_second",
    "trace_hash",
    "convergence",
    "detection",
    "tasks",
    "messages",
    "checkers",
    "peak_rss_mb",
}


def _hash_in_subprocess(hashseed: str, kind: str) -> str:
    code = (
        "from simulations.scenario import load_scenario, apply_overrides\n"
        "from simulations.runner import run_scenario\n"
        "sc = apply_overrides(load_scenario('chaos-1000.toml'), nodes=24, duration=8.0,\n"
        f"    liveness=4.0, seed=11, node={kind!r}, crypto='fast')\n"
        "print(run_scenario(sc).report['trace_hash'])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_trace_hash_whatever_pythonhashseed(kind: str) -> None:
    a = _hash_in_subprocess("1", kind)
    b = _hash_in_subprocess("4242", kind)
    assert len(a) == 64 and a == b


def _chaos(kind: str, seed: int, nodes: int = 60, strategy: str | None = None) -> dict[str, Any]:
    # The liveness phase is "auto" (the scenario's): as long as membership can take to
    # settle at this size (a node that missed a death's gossip learns it by push-pull
    # as a suspicion, which may run to Lifeguard's longest timeout).
    sc = apply_overrides(
        load_scenario("chaos-1000.toml"),
        nodes=nodes,
        seed=seed,
        duration=30.0,
        node=kind,
        crypto="fast",
        strategy=strategy,
    )
    flags = ["--nodes", str(nodes), "--duration", "30s", "--node", kind, "--crypto", "fast"]
    if strategy is not None:
        flags += ["--strategy", strategy]
    result = run_scenario(sc, source="chaos-1000.toml", flags=flags)
    assert result.ok, (result.report["problems"], result.report["reproduce"])
    return result.report


@pytest.mark.parametrize(
    ("kind", "seed"),
    [
        # core seed 3: one node kept a stale record after the heal while half of all
        # push-pulls went to dead members (fixed: a live push-pull every period).
        *[(k, s) for k in ("toy", "core") for s in (1, 2, 3, 4)],
    ],
)
def test_chaos_small_every_checker_passes(kind: str, seed: int) -> None:
    report = _chaos(kind, seed)
    # A failure's message must replay this very run (scenario, seed and overrides).
    assert report["reproduce"] == (
        f"mesh-node simulate chaos-1000.toml --seed {seed} --nodes 60 --duration 30s "
        f"--node {kind} --crypto fast"
    )
    checks = report["checkers"]
    assert isinstance(checks, dict)
    assert checks["bad-frames-rejected"] == "pass"
    assert checks["untrusted-never-admitted"] == "pass"
    assert checks["membership-converged"] == "pass"
    # Convergence counts the nodes live at the end: one that learned the record and
    # crashed later is not among them (it made "knew" exceed "population" and the
    # plotted fraction pass 1).
    conv = report["convergence"]
    assert 0 < conv["knew"] <= conv["population"]


@pytest.mark.skipif(not HAVE_CORE, reason="no core")
def test_chaos_small_first_idle_awards_sooner_and_passes_every_checker() -> None:
    # Under 10 % loss an auction that waits for every bid waits out the grace whenever
    # one is lost; first_idle closes on the first idle bid.
    waits = _chaos("core", 1)
    first = _chaos("core", 1, strategy="first_idle")
    assert first["reproduce"].endswith("--strategy first_idle")
    assert first["tasks"]["award_latency_p50_ms"] < waits["tasks"]["award_latency_p50_ms"] / 2
    assert first["tasks"]["duplicate_commits"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_three_orgs_small(kind: str) -> None:
    sc = apply_overrides(
        load_scenario("three-orgs.toml"),
        nodes=30,
        duration=15.0,
        liveness=15.0,
        node=kind,
        crypto="fast",
    )
    result = run_scenario(sc)
    assert result.ok, result.report["problems"]
    assert result.report["checkers"]["untrusted-never-admitted"] == "pass"
    assert result.report["messages"]["rejected_by_code"]["untrusted-org"] > 0
    # The marker record can reach only the nodes that trust node 0's org and that it
    # trusts back: initech trusts acme, acme does not trust initech.
    world, marker = result.world, result.world.seeds[0][0]
    reachable = sum(
        1
        for i in range(sc.run.nodes)
        if i != marker and world.trusted_by_all(i) and world.mutual(i, marker)
    )
    one_way = sum(
        1 for i in range(sc.run.nodes) if world.trusted_by_all(i) and not world.mutual(i, marker)
    )
    assert reachable > 0 and one_way > 0  # the scenario has both kinds (keeps this honest)
    conv = result.report["convergence"]
    assert conv["population"] == reachable and conv["knew"] == reachable
    assert conv["rounds_to_100pct"] is not None
    # initech nodes learn acme members from acme's join knocks on initech seeds, then
    # declare them dead (acme drops their probes): not a failure detector error.
    detection = result.report["detection"]
    assert detection["false_positive_deaths"] == 0
    if kind == "core":
        assert detection["one_way_trust_deaths"] > 0


@pytest.mark.skipif(not HAVE_CORE, reason="no core")
def test_three_orgs_marker_is_published_once_the_mesh_has_formed() -> None:
    # With one-way trust, an acme node never counts initech's nodes as members: the
    # mesh counted as formed only when each node counts the running nodes it shares
    # trust with, not all of them (the marker waited for its deadline, 0.6 x duration).
    sc = apply_overrides(
        load_scenario("three-orgs.toml"), nodes=30, duration=15.0, liveness=2.0, crypto="fast"
    )
    result = run_scenario(sc)
    marker_at = result.report["convergence"]["marker_at_s"]
    assert marker_at is not None and marker_at < sc.marker_deadline_s()
    assert result.report["convergence"]["knew"] == result.report["convergence"]["population"]


@pytest.mark.skipif(not HAVE_CORE, reason="no core")
def test_real_crypto_core_small() -> None:
    sc = apply_overrides(
        load_scenario("lan-1000.toml"),
        nodes=12,
        duration=14.0,
        liveness=4.0,
        crypto="real",
        node="core",
        tasks_per_s=2.0,
    )
    result = run_scenario(sc)
    assert result.ok, result.report["problems"]
    assert result.report["node_kind"] == "CoreFactory"
    assert result.report["crypto"] == "real"
    assert result.report["convergence"]["knew"] == 11
    assert result.report["tasks"]["completed"] > 0


@pytest.mark.parametrize("crypto", ["fast", "real", "auto"])
def test_a_toy_run_reports_no_crypto(crypto: str) -> None:
    """The toy node neither signs nor verifies: its report said ``fast`` or ``real``."""
    sc = apply_overrides(
        load_scenario("lan-1000.toml"),
        nodes=8,
        duration=3.0,
        liveness=1.0,
        crypto=crypto,
        node="toy",
        tasks_per_s=0.0,
    )
    report = run_scenario(sc).report
    assert (report["node_kind"], report["crypto"]) == ("ToyFactory", "none")


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("seed", range(1, 21))
def test_chaos_1000_twenty_seeds(seed: int) -> None:
    # PARLEY_SIM_SLOW_NODES lowers the size when the core is too slow for 1,000.
    _chaos("auto", seed, nodes=int(os.environ.get("PARLEY_SIM_SLOW_NODES", "1000")))


def test_cli_writes_report_and_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(
        simulate,
        [
            "--nodes",
            "20",
            "--duration",
            "8s",
            "--liveness",
            "4s",
            "--node",
            "toy",
            "--seed",
            "5",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--tasks-per-s",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report) >= REPORT_KEYS
    assert set(report["convergence"]) >= {"rounds_to_99pct", "rounds_to_100pct", "seconds_to_99pct"}
    assert set(report["detection"]) >= {
        "first_suspicion_median_periods",
        "dead_everywhere_p99_s",
        "false_positive_deaths",
    }
    assert set(report["tasks"]) >= {
        "submitted",
        "completed",
        "failed",
        "reassigned",
        "outcome_unknown",
        "duplicate_commits",
        "stale_results_rejected",
        "award_latency_p50_ms",
        "award_latency_p99_ms",
    }
    assert set(report["messages"]) >= {"sent", "delivered", "dropped", "rejected_by_code"}
    assert png.stat().st_size > 1000
    assert f"trace {report['trace_hash']}" in res.output


def test_cli_failing_run_prints_how_to_reproduce() -> None:
    # No liveness phase: tasks still in flight at the end fail `every-task-ends`.
    res = CliRunner().invoke(
        simulate,
        [
            "--nodes",
            "12",
            "--duration",
            "6s",
            "--liveness",
            "0s",
            "--node",
            "toy",
            "--tasks-per-s",
            "20",
            "--seed",
            "3",
            "--quiet",
        ],
    )
    assert res.exit_code == 1
    assert "FAIL every-task-ends" in res.output
    assert "reproduce with: mesh-node simulate --seed 3 --nodes 12" in res.output


@pytest.mark.skipif(not HAVE_CORE, reason="no core")
def test_a_liveness_phase_too_short_for_membership_says_so() -> None:
    # Crashed members are still suspected when the run stops: membership has not
    # settled, and the failure says that the liveness phase is what is short.
    args = ["--nodes", "30", "--duration", "10s", "--crash", "0.2", "--node", "core"]
    args += ["--tasks-per-s", "0", "--quiet"]
    short = CliRunner().invoke(simulate, [*args, "--liveness", "0s"])
    assert short.exit_code == 1
    assert "FAIL membership-converged" in short.output
    assert (
        "note: the liveness phase (0 s) is shorter than membership's settle time at 30 nodes"
        " (96 s: two push-pull periods of 30 s and the longest suspicion)" in short.output
    )
    settled = CliRunner().invoke(simulate, [*args, "--liveness", "auto"])
    assert settled.exit_code == 0, settled.output
    assert "note: the liveness phase" not in settled.output
    # A sweep says it too, under the failing seed's first problem.
    swept = CliRunner().invoke(simulate, [*args, "--liveness", "0s", "--seeds", "1", "--jobs", "1"])
    assert swept.exit_code == 1
    assert "FAIL seed 1 membership-converged: node " in swept.output
    assert "\n  note: the liveness phase (0 s) is shorter than membership's settle time" in (
        swept.output
    )


def test_the_reproduce_command_reproduces() -> None:
    args = ["--nodes", "12", "--duration", "6s", "--liveness", "0s", "--node", "toy"]
    args += ["--tasks-per-s", "20", "--seed", "4", "--quiet"]
    first = CliRunner().invoke(simulate, args)
    line = next(x for x in first.output.splitlines() if x.startswith("reproduce with: "))
    argv = shlex.split(line.removeprefix("reproduce with: "))
    assert argv[:2] == ["mesh-node", "simulate"]
    again = CliRunner().invoke(simulate, [*argv[2:], "--quiet"])
    trace = [x for x in first.output.splitlines() if x.startswith("seed ")]
    assert trace and trace == [x for x in again.output.splitlines() if x.startswith("seed ")]


def test_cli_config_errors_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nnodez = 3\n")
    res = CliRunner().invoke(simulate, [str(bad)])
    assert res.exit_code != 0 and "run.nodez" in str(res.exception or res.output)
    res = CliRunner().invoke(simulate, ["--duration", "soon"])
    assert res.exit_code == 2 and "--duration" in res.output


def test_nodes_restarted_at_new_addresses_rejoin_and_every_checker_passes() -> None:
    """``faults.moved_fraction``: a restart comes back at a new endpoint (a container
    rescheduled elsewhere). Before the seeds answered a push-pull at the endpoint the
    requester's own record names, such nodes stayed alone for good and this run failed
    ``membership-converged``."""
    sc = apply_overrides(
        load_scenario("chaos-1000.toml"), nodes=40, seed=5, duration=30.0, crypto="fast"
    )
    faults = sc.faults.model_copy(update={"restart_fraction": 1.0, "moved_fraction": 1.0})
    result = run_scenario(sc.model_copy(update={"faults": faults}))
    moved = [a for a in result.world.addresses if "." in a.removeprefix("sim://")]
    assert len(moved) >= 5, result.world.addresses
    assert result.ok, (result.report["problems"], result.report["reproduce"])
    for a in moved:  # every live node holds the moved node at its new endpoint
        i = int(a.removeprefix("sim://").partition(".")[0])
        if result.sim.alive[i]:
            node_id = result.sim.node_ids[i]
            for j, node in enumerate(result.sim.nodes):
                if node is not None and j != i and node_id in node.members:
                    assert node.endpoint_of(node_id) == a
