"""`mesh-node simulate --seeds`: one scenario under many seeds, in parallel processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli_sim import simulate
from simulations.sweep import MAX_SEEDS, parse_seeds

SMALL = ["--nodes", "12", "--duration", "6s", "--node", "toy", "--tasks-per-s", "5"]


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [("7", [7]), ("1-3", [1, 2, 3]), ("5,1-2", [1, 2, 5]), (" 2 - 4 , 3", [2, 3, 4])],
)
def test_seed_lists(spec: str, seeds: list[int]) -> None:
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "a", "3-1", "1-", "-2", "1;2", f"0-{MAX_SEEDS}"])
def test_bad_seed_lists_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_seeds(spec)


def test_each_seed_of_a_sweep_is_the_same_run_as_alone(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    res = CliRunner().invoke(
        simulate, [*SMALL, "--liveness", "10s", "--seeds", "1-3", "--jobs", "2", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "3 of 3 seeds pass" in res.output
    reports = json.loads(out.read_text())
    assert [r["seed"] for r in reports] == [1, 2, 3]
    for r in reports:
        alone = CliRunner().invoke(
            simulate, [*SMALL, "--liveness", "10s", "--seed", str(r["seed"]), "--quiet"]
        )
        assert f"seed {r['seed']} trace {r['trace_hash']}" in alone.output
        assert f"seed {r['seed']} pass: trace {r['trace_hash'][:16]}" in res.output
    assert len({r["trace_hash"] for r in reports}) == 3


def test_a_failing_seed_fails_the_sweep_and_says_how_to_reproduce_it() -> None:
    # No liveness phase: tasks still in flight at the end fail `every-task-ends`.
    args = ["--nodes", "12", "--duration", "6s", "--liveness", "0s", "--node", "toy"]
    res = CliRunner().invoke(simulate, [*args, "--tasks-per-s", "20", "--seeds", "3,4", "--quiet"])
    assert res.exit_code == 1
    assert "0 of 2 seeds pass" in res.output
    assert "seed 3 FAIL every-task-ends" in res.output
    assert "reproduce with: mesh-node simulate --seed 3 --nodes 12" in res.output
    assert "reproduce with: mesh-node simulate --seed 4 --nodes 12" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1-2", "--seed", "1"], "not both"),
        (["--jobs", "2"], "--jobs goes with --seeds"),
        (["--seeds", "2-1"], "the end is below the start"),
        (["--seeds", "1-2", "--plot", "x.png"], "--plot draws one run"),
    ],
)
def test_sweep_usage_errors(args: list[str], message: str) -> None:
    res = CliRunner().invoke(simulate, [*SMALL, *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_the_json_of_a_sweep_is_written_as_each_seed_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep of hours that is interrupted keeps the reports of the seeds that ended.
    import simulations.sweep as sweep

    out = tmp_path / "sweep.json"
    real = sweep.run_seeds
    on_disk: list[list[int]] = []

    def spy(*args: object, on_done: object, **kw: object) -> object:
        def done(o: object) -> None:
            on_done(o)  # type: ignore[operator]
            on_disk.append([r["seed"] for r in json.loads(out.read_text())])

        return real(*args, on_done=done, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sweep, "run_seeds", spy)
    res = CliRunner().invoke(
        simulate,
        [*SMALL, "--liveness", "10s", "--seeds", "3,1,2", "--jobs", "1", "--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert on_disk == [[1], [1, 2], [1, 2, 3]]
    assert [r["seed"] for r in json.loads(out.read_text())] == [1, 2, 3]
    assert not (tmp_path / "sweep.json.part").exists()


def test_running_seeds_report_their_progress() -> None:
    from simulations.scenario import apply_overrides, load_scenario
    from simulations.sweep import run_seeds

    sc = apply_overrides(
        load_scenario("lan-1000.toml"),
        nodes=12,
        duration=6.0,
        liveness=4.0,
        node="toy",
        tasks_per_s=5.0,
    )
    seen: dict[int, list[float]] = {}
    outcomes = run_seeds(
        sc, [1, 2], jobs=2, on_progress=lambda s, t, e: seen.setdefault(s, []).append(t)
    )
    assert [o.seed for o in outcomes] == [1, 2]
    assert set(seen) == {1, 2}  # the first report of each run goes at once
    for times in seen.values():
        assert times == sorted(times) and 0 < times[-1] <= 10.0


def test_seed_bars_follow_running_seeds_and_drop_finished_ones() -> None:
    from node.cli_sim import _SeedBars

    lines: list[str] = []
    with _SeedBars(10.0, on_stdout=False) as bars:
        bars.update(4, 1.0, 100)
        bars.update(4, 2.0, 300)
        bars.update(5, 1.0, 50)
        assert set(bars.tasks) == {4, 5}
        done = bars.wrap(lambda o: lines.append(f"seed {o.seed} done"))

        class Outcome:
            seed = 4

        done(Outcome())
        bars.update(4, 3.0, 400)  # a late report of a finished seed
        assert set(bars.tasks) == {5}
    assert lines == ["seed 4 done"]


def test_a_sweeps_json_through_a_symbolic_link_keeps_the_link(tmp_path: Path) -> None:
    # /dev/stdout is a link: an atomic replace would replace the link itself.
    target = tmp_path / "target.json"
    target.write_text("")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    res = CliRunner().invoke(
        simulate, [*SMALL, "--liveness", "4s", "--seeds", "1-2", "--jobs", "1", "--json", str(link)]
    )
    assert res.exit_code == 0, res.output
    assert link.is_symlink()
    assert [r["seed"] for r in json.loads(target.read_text())] == [1, 2]
