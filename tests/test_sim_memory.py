"""`mesh-node simulate` refuses at once a size that cannot fit in this machine's memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli_sim import simulate
from simulations import memory
from simulations.memory import check_memory, estimate_mb, largest_fitting

GB = 1024**3


def test_the_estimate_matches_the_measured_peaks_it_was_fitted_to() -> None:
    # Measured peak RSS (peak_rss_mb), fast crypto, LAN: 683 MB at 1,000 nodes, 4,770 at 3,000.
    assert estimate_mb(1_000) == pytest.approx(683, rel=0.05)
    assert estimate_mb(3_000) == pytest.approx(4_770, rel=0.05)
    # Memory grows with node pairs: ten times the nodes, about a hundred times the pairs.
    assert estimate_mb(10_000) > 40 * 1024


@pytest.mark.parametrize("budget_gb", [0.5, 4, 23, 64])
def test_largest_fitting_is_the_exact_boundary(budget_gb: float) -> None:
    budget = budget_gb * GB
    n = largest_fitting(budget)
    assert n > 0
    assert estimate_mb(n) * 1024**2 <= budget < estimate_mb(n + 1) * 1024**2


def test_no_size_fits_below_the_base() -> None:
    assert largest_fitting(100 * 1024**2) == 0


def test_a_size_that_fits_passes_and_one_that_does_not_is_refused() -> None:
    assert check_memory(1_000, 1, 23 * GB).ok
    verdict = check_memory(10_000, 1, 23 * GB)
    assert not verdict.ok
    assert verdict.max_nodes == largest_fitting(23 * GB)
    assert f"10,000 nodes need at least {estimate_mb(10_000) / 1024:,.1f} GB" in verdict.message
    assert f"use at most {verdict.max_nodes:,} nodes" in verdict.message
    assert "\n" not in verdict.message


def test_parallel_runs_share_the_memory() -> None:
    # Two 3,000-node runs fit in 23 GB; eight do not, and the message says --jobs.
    assert check_memory(3_000, 2, 23 * GB).ok
    verdict = check_memory(3_000, 8, 23 * GB)
    assert not verdict.ok
    assert "8 runs of 3,000 nodes" in verdict.message
    assert "fewer --jobs" in verdict.message
    assert verdict.max_nodes == largest_fitting(23 * GB / 8)


def test_unknown_memory_never_refuses() -> None:
    assert check_memory(1_000_000, 4, None).ok


def test_available_memory_is_read_on_linux() -> None:
    have = memory.available_bytes()
    assert have is not None and have > 0


def test_the_cli_refuses_a_size_that_cannot_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * GB)
    res = CliRunner().invoke(simulate, ["--nodes", "5000", "--duration", "1s"])
    assert res.exit_code == 2
    assert "5,000 nodes need at least" in res.output
    assert "2.0 GB available" in res.output
    assert "--no-memory-check" in res.output
    assert "Traceback" not in res.output


def test_the_cli_checks_a_sweep_for_all_its_parallel_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * GB)
    res = CliRunner().invoke(
        simulate, ["--nodes", "1500", "--duration", "1s", "--seeds", "1-4", "--jobs", "2"]
    )
    assert res.exit_code == 2
    assert "2 runs of 1,500 nodes" in res.output


def test_toy_nodes_and_the_override_skip_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine with no memory available at all: every core-node size is refused.
    monkeypatch.setattr(memory, "available_bytes", lambda: 0)
    small = ["--duration", "4s", "--liveness", "6s", "--tasks-per-s", "2", "--quiet"]
    # Toy nodes keep no member table: not checked.
    toy = CliRunner().invoke(simulate, ["--nodes", "12", "--node", "toy", *small])
    assert toy.exit_code == 0, toy.output
    # Core nodes are refused, unless the user says to try anyway.
    refused = CliRunner().invoke(simulate, ["--nodes", "40", "--node", "core", *small])
    assert refused.exit_code == 2
    forced = CliRunner().invoke(
        simulate, ["--nodes", "40", "--node", "core", *small, "--no-memory-check"]
    )
    assert forced.exit_code == 0, forced.output


def test_a_sweep_without_jobs_runs_as_many_at_a_time_as_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import node.cli_sim as cli_sim
    import simulations.sweep as sweep

    # Room for one 30-node run but not for two: the default (two, one per core) drops to one.
    room = estimate_mb(30) * 1024**2 * 1.5
    monkeypatch.setattr(memory, "available_bytes", lambda: int(room))
    monkeypatch.setattr(sweep, "default_jobs", lambda n: 2)
    seen: list[int] = []

    def fake_run_seeds(sc: object, seeds: list[int], *, jobs: int, **kw: object) -> list[object]:
        seen.append(jobs)
        return []

    monkeypatch.setattr(sweep, "run_seeds", fake_run_seeds)
    res = CliRunner().invoke(
        cli_sim.simulate, ["--nodes", "30", "--node", "core", "--seeds", "1-4", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert "2 runs at a time would not fit in available memory: 1 instead" in res.output
    assert "4 seed(s), 1 at a time" in res.output
    assert seen == [1]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_container_memory_limit_bounds_what_is_available(tmp_path: Path, version: str) -> None:
    from simulations.memory import cgroup_room

    proc = tmp_path / "cgroup"
    if version == "v2":
        proc.write_text("0::/box\n")
        d = tmp_path / "box"
        d.mkdir()
        (d / "memory.max").write_text("4294967296\n")
        (d / "memory.current").write_text("1073741824\n")
    else:
        proc.write_text("4:memory:/box\n3:cpu:/\n")
        d = tmp_path / "memory" / "box"
        d.mkdir(parents=True)
        (d / "memory.limit_in_bytes").write_text("4294967296\n")
        (d / "memory.usage_in_bytes").write_text("1073741824\n")
    assert cgroup_room(str(tmp_path), str(proc)) == 3 * GB
    # No limit ("max", or v1's huge number): nothing to bound.
    if version == "v2":
        (d / "memory.max").write_text("max\n")
    else:
        (d / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_room(str(tmp_path), str(proc)) is None


def test_a_formed_mesh_grows_with_the_nodes_not_the_pairs() -> None:
    # The same 10,000 nodes that a cold join cannot fit in 23 GB fit when they start
    # formed (one shared member table); the refusal for a formed run names its model.
    assert check_memory(10_000, 1, 23 * GB, formed=True).ok
    # A lower bound of the measured peaks: 388 MB at 3,000 nodes, 901 MB at 10,000.
    assert estimate_mb(3_000, formed=True) <= 388
    assert estimate_mb(10_000, formed=True) <= 901
    assert estimate_mb(10_000, formed=True) < estimate_mb(10_000) / 20
    verdict = check_memory(200_000, 1, 8 * GB, formed=True)
    assert not verdict.ok
    assert verdict.max_nodes == largest_fitting(8 * GB, formed=True)
    assert "per node over the shared formed table" in verdict.message
    n = largest_fitting(8 * GB, formed=True)
    assert (
        estimate_mb(n, formed=True) * 1024**2 <= 8 * GB < estimate_mb(n + 1, formed=True) * 1024**2
    )
