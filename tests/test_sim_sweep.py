"""`mesh-node simulate --seeds`: one scenario under many seeds, in parallel processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


# --- a sweep ends at once on an error or Ctrl-C (it used to hang) ------------------


def _mesh_node(
    args: list[str], cwd: Path
) -> subprocess.Popen[str]:  # in its own process group, as a terminal runs it
    exe = Path(sys.executable).parent / "mesh-node"
    return subprocess.Popen(
        [str(exe), "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=cwd,
    )


def _finish(p: subprocess.Popen[str], within: float) -> tuple[str, str]:
    try:
        return p.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"the sweep was still running {within} s later")


def test_an_error_in_a_seed_ends_the_sweep_at_once_in_one_line(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text("[adversaries]\nforge = 1000\n")  # raised by the run, in the worker
    out = tmp_path / "sweep.json"
    seeds = ["--seeds", "1-3", "--jobs", "1", "--json", str(out)]
    p = _mesh_node([str(scenario), *SMALL, "--liveness", "4s", *seeds], tmp_path)
    stdout, stderr = _finish(p, 60)
    assert p.returncode == 2, stdout + stderr
    assert stderr.strip().splitlines() == [
        "error: adversaries: 1000 for 12 nodes; at most half the nodes may misbehave"
    ]
    assert "Traceback" not in stdout + stderr and "Exception in thread" not in stderr


def test_ctrl_c_ends_a_sweep_at_once_and_keeps_the_seeds_that_finished(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    p = _mesh_node(
        [*SMALL, "--liveness", "4s", "--seeds", "1-40", "--jobs", "1", "--json", str(out)],
        tmp_path,
    )
    assert p.stdout is not None
    line = "start"
    while line and not line.startswith("seed 1 "):
        line = p.stdout.readline()
    assert line.startswith("seed 1 pass"), line
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    stdout, stderr = _finish(p, 30)
    assert p.returncode == 130, stdout + stderr
    assert "error: interrupted; " in stderr and "Traceback" not in stderr
    seeds = [r["seed"] for r in json.loads(out.read_text())]
    assert seeds[0] == 1 and len(seeds) < 40


def test_an_error_in_on_done_ends_the_sweep_and_its_workers() -> None:
    import multiprocessing
    import time

    from simulations.scenario import apply_overrides, load_scenario
    from simulations.sweep import run_seeds

    sc = apply_overrides(
        load_scenario("lan-1000.toml"), nodes=12, duration=6.0, liveness=4.0, node="toy"
    )

    def full(o: object) -> None:
        raise OSError(28, "No space left on device")

    t0 = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        run_seeds(sc, [1, 2, 3, 4], jobs=2, on_done=full)
    assert time.monotonic() - t0 < 60
    assert multiprocessing.active_children() == []


def test_a_seed_whose_process_dies_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations import sweep
    from simulations.scenario import apply_overrides, load_scenario

    sc = apply_overrides(
        load_scenario("lan-1000.toml"), nodes=12, duration=6.0, liveness=4.0, node="toy"
    )
    real = sweep._start

    def killed(*args: object, **kw: object) -> object:
        worker = real(*args, **kw)  # type: ignore[arg-type]
        worker.process.kill()  # as the kernel's out-of-memory killer would
        return worker

    monkeypatch.setattr(sweep, "_start", killed)
    with pytest.raises(sweep.SeedCrashed, match=r"seed 1: its process ended without a result"):
        sweep.run_seeds(sc, [1, 2], jobs=1)
