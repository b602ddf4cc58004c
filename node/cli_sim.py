"""``mesh-node simulate``: run the deterministic mesh simulator.

Registered lazily by ``node.cli``; this is the one module of ``node`` that
imports ``simulations`` (inside the command, so ``mesh-node --help`` stays fast).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from functools import partial
from typing import Any

import click

__all__ = ["simulate"]

_EXAMPLES = """
\b
Examples:
  mesh-node simulate                              # 100 nodes, 30 s + 20 s, default world
  mesh-node simulate lan-1000.toml --crypto fast --json out.json --plot out.png
  mesh-node simulate chaos-1000.toml --seed 7 --nodes 200 --duration 30s
  mesh-node simulate --partition symmetric:0.5@10s-20s --loss 0.01 --crash 0.05
  mesh-node simulate chaos-1000.toml --seeds 1-20 --jobs 2   # a sweep: one verdict per seed
  mesh-node simulate lan-1000.toml --nodes 10000 --start formed  # a formed mesh: ~1.1 GB
"""


#: Options that are not about the scenario (never passed to ``apply_overrides``).
_NOT_SCENARIO = ("seeds", "jobs", "json_out", "plot", "quiet", "no_memory_check")


def _flags(given: dict[str, Any]) -> list[str]:
    """The override flags the user gave, to print a reproducing command."""
    from simulations.runner import seconds_text

    out: list[str] = []
    for name, value in given.items():
        if value is None or value == () or name == "seed" or name in _NOT_SCENARIO:
            continue
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            # A duration as it reads back to the same float: the same run.
            text = seconds_text(v) if isinstance(v, float) and name in _DURATIONS else str(v)
            out += [flag, text]
    return out


#: Options that are durations (parsed before the overrides apply).
_DURATIONS = ("duration", "liveness")


class _FiniteFloat(click.FloatRange):
    """A ``FloatRange`` that refuses ``inf`` and ``nan`` (an infinite rate hangs a run;
    ``nan`` passes every comparison of a range)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def _check_output(path: str | None, flag: str) -> None:
    """Refuse at once an output file that could not be written after the run: its
    directory missing or not writable, or the path a directory."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a directory", param_hint=flag)
    if not os.path.isdir(parent):
        raise click.BadParameter(f"{path}: no such directory {parent}", param_hint=flag)
    if os.path.exists(path) and not os.path.islink(path):
        if not os.access(path, os.W_OK):
            raise click.BadParameter(f"{path}: not writable", param_hint=flag)
    elif not os.path.exists(path) and not os.access(parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{path}: directory {parent} is not writable", param_hint=flag)


def _check_plot(path: str | None) -> None:
    """``--plot``: matplotlib installed, and a file format it writes (png, pdf, svg...)."""
    if not path:
        return
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise click.BadParameter(
            "needs matplotlib (pip install matplotlib)", param_hint="--plot"
        ) from None
    formats = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext and ext not in formats:
        raise click.BadParameter(
            f"{path}: format {ext!r} is not supported; use one of {', '.join(sorted(formats))}",
            param_hint="--plot",
        )


@click.command("simulate", epilog=_EXAMPLES)
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--nodes", type=click.IntRange(min=2), help="Number of simulated nodes.")
@click.option("--seed", type=int, help="Master seed (the run is a pure function of it).")
@click.option(
    "--seeds",
    help="Run once per seed, e.g. 1-20 or 1-5,9, in parallel processes; exits 1 if any fails.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Processes for --seeds (default: one per core). A 1,000-node run takes ~1.6 GB.",
)
@click.option("--duration", help="Safety phase length, e.g. 60s (faults on).")
@click.option(
    "--liveness",
    help="Liveness phase length, e.g. 30s (faults healed); 'auto': as long as membership "
    "can take to settle at this size.",
)
@click.option(
    "--tasks-per-s",
    type=_FiniteFloat(min=0, max=10_000),
    help="Task arrivals per virtual second (0 to 10,000).",
)
@click.option(
    "--strategy",
    type=click.Choice(["least_loaded", "first_idle", "lowest_cost", "earliest_eta", "weighted"]),
    help="Award strategy of every task.",
)
@click.option(
    "--membership-from",
    type=click.Path(dir_okay=False),
    help="Simulate the [membership] settings of this node.toml (its preset and knobs).",
)
@click.option(
    "--start",
    type=click.Choice(["join", "formed"]),
    help="join: nodes join over the join window; formed: every node starts knowing every "
    "other, from one shared table (memory grows with nodes, not pairs: 10,000+ nodes).",
)
@click.option("--loss", type=_FiniteFloat(0, 1), help="Frame loss probability.")
@click.option(
    "--crash",
    type=_FiniteFloat(0, 1),
    help="Fraction of the honest non-seed nodes that crash (faults.crash_fraction).",
)
@click.option("--partition", multiple=True, help="KIND:FRACTIONS@START-END (repeatable).")
@click.option("--crypto", type=click.Choice(["real", "fast"]), help="Signer (default by size).")
@click.option("--node", type=click.Choice(["core", "toy", "auto"]), help="Node implementation.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw convergence and tasks.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
@click.option(
    "--no-memory-check",
    is_flag=True,
    help="Run even when the size needs more memory than this machine has available.",
)
def simulate(scenario: str | None, **opts: Any) -> None:
    """Run a simulated mesh and check it: safety phase, then liveness phase.

    Flags override the scenario file. Exits 1 if a checker fails, and prints the
    command that reproduces the run.
    """
    from simulations.scenario import Scenario, apply_overrides, load_scenario, parse_duration

    # Every check that needs no run comes first: a mistake costs no simulated minute.
    _check_output(opts["json_out"], "--json")
    _check_output(opts["plot"], "--plot")
    _check_plot(opts["plot"])
    # Each key on its own here; the checks across keys once the flags are applied.
    sc = load_scenario(scenario) if scenario else Scenario()
    for key in _DURATIONS:
        if opts[key] is not None and not (key == "liveness" and opts[key] == "auto"):
            try:
                opts[key] = parse_duration(opts[key])
                if not math.isfinite(opts[key]) or opts[key] < 0:
                    raise ValueError(
                        f"a finite duration of at least 0 was expected, not {opts[key]}"
                    )
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"--{key}") from None
    overrides = {k: v for k, v in opts.items() if k not in _NOT_SCENARIO}
    if overrides.pop("membership_from", None):
        overrides["membership"] = _membership_of(opts["membership_from"])
    sc = apply_overrides(sc, source=scenario, **overrides)
    from simulations.runner import scenario_warnings

    for line in scenario_warnings(sc):
        click.echo(f"warning: {line}", err=True)
    if opts["seeds"] is not None:
        _sweep(sc, scenario, opts)
        return
    if opts["jobs"] is not None:
        raise click.UsageError("--jobs goes with --seeds")
    _check_memory(sc, 1, opts)
    result = _run(sc, scenario, _flags(opts), quiet=opts["quiet"])
    _output(result, opts)


def _membership_of(path: str) -> dict[str, Any]:
    """The ``[membership]`` table (and preset) of a daemon's node.toml."""
    import tomllib

    from node.config import membership_table
    from protocols.errors import ConfigError
    from protocols.membership.config import tuned

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        table = membership_table(data)
        tuned(table)  # checked here, so that an error names the file
        return table
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: invalid TOML: {exc}"
        raise click.BadParameter(msg, param_hint="--membership-from") from None
    except UnicodeDecodeError as exc:
        msg = f"{path}: not a UTF-8 text file (byte {exc.start})"
        raise click.BadParameter(msg, param_hint="--membership-from") from None
    except (OSError, ConfigError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--membership-from") from None


def _check_memory(sc: Any, jobs: int, opts: dict[str, Any]) -> None:
    """Refuse at once a run that cannot fit in memory (see ``simulations.memory``)."""
    from simulations.memory import available_bytes, check_memory

    if opts["no_memory_check"] or sc.run.node == "toy":
        return
    formed = sc.topology.start == "formed"
    verdict = check_memory(sc.run.nodes, jobs, available_bytes(), formed=formed)
    if not verdict.ok:
        raise click.UsageError(verdict.message)


class _SeedBars:
    """One progress bar per running seed (virtual time reached, events per second)."""

    def __init__(self, total: float, on_stdout: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        # On the terminal of stdout when it is one (the seed lines are then printed
        # above the bars, through ``say``); else on stderr, the lines going to stdout.
        self.on_stdout = on_stdout
        self.total = total
        self.bar = Progress(
            TextColumn("[bold]seed {task.fields[seed]:>4}[/]"),
            TextColumn("{task.completed:>7.1f}/{task.total:.0f} virtual s"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(stderr=not on_stdout),
            transient=True,
        )
        self.tasks: dict[int, Any] = {}
        self.last: dict[int, tuple[float, int]] = {}
        self.ended: set[int] = set()
        # update() runs on the sweep's drain thread, finished() on the main thread.
        self.lock = threading.Lock()

    def __enter__(self) -> _SeedBars:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def say(self, line: str) -> None:
        self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def update(self, seed: int, now: float, events: int) -> None:
        with self.lock:
            self._update(seed, now, events)

    def _update(self, seed: int, now: float, events: int) -> None:
        if seed in self.ended:
            return  # a late report of a finished seed
        t = time.perf_counter()
        if seed not in self.tasks:
            self.tasks[seed] = self.bar.add_task("", total=self.total, seed=seed, rate="")
        before = self.last.get(seed)
        self.last[seed] = (t, events)
        rate = ""
        if before is not None and t > before[0]:
            rate = f"{(events - before[1]) / (t - before[0]):,.0f} events/s"
        self.bar.update(self.tasks[seed], completed=now, rate=rate)

    def wrap(self, done: Any) -> Any:
        def finished(o: Any) -> None:
            with self.lock:
                self.ended.add(o.seed)
                task = self.tasks.pop(o.seed, None)
                if task is not None:
                    self.bar.remove_task(task)
            done(o)

        return finished


def _replaceable(path: str) -> bool:
    """A plain file (or none yet) that may be replaced atomically; never a symbolic
    link (``/dev/stdout`` is one: replacing it would replace the link itself)."""
    return not os.path.islink(path) and (not os.path.exists(path) or os.path.isfile(path))


def _write_reports(path: str, outcomes: list[Any]) -> None:
    """The reports so far, in seed order, replacing ``path`` atomically."""
    reports = [o.report for o in sorted(outcomes, key=lambda o: o.seed)]
    if not _replaceable(path):
        return  # a pipe, a link such as /dev/stdout: written once, at the end (``_sweep``)
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(reports, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _keep_finished(finished: list[Any], opts: dict[str, Any]) -> None:
    """A sweep ended early: the reports of the seeds that finished go to ``--json``
    (again: a Ctrl-C may have cut the last writing short; a pipe or a link is written
    only at the end)."""
    path = opts["json_out"]
    if not path or not finished:
        return
    try:
        if _replaceable(path):
            _write_reports(path, finished)
        else:
            with open(path, "w", encoding="utf-8") as f:
                json.dump([o.report for o in finished], f, indent=2, sort_keys=True)
    except OSError:
        pass  # the error being raised says more


def _kept(finished: list[Any], total: int, opts: dict[str, Any]) -> str:
    """What an interrupted sweep kept (and saves it where it is not saved yet)."""
    _keep_finished(finished, opts)
    where = f", reports in {opts['json_out']}" if opts["json_out"] and finished else ""
    return f"{len(finished)} of {total} seed(s) finished{where}"


def _jobs_that_fit(sc: Any, jobs: int, opts: dict[str, Any]) -> int:
    """The default --jobs, lowered to as many runs as fit in available memory (>= 1)."""
    from simulations.memory import available_bytes, check_memory

    if opts["no_memory_check"] or sc.run.node == "toy":
        return jobs
    available = available_bytes()
    fit = jobs
    formed = sc.topology.start == "formed"
    while fit > 1 and not check_memory(sc.run.nodes, fit, available, formed=formed).ok:
        fit -= 1
    if fit < jobs:
        click.echo(f"{jobs} runs at a time would not fit in available memory: {fit} instead")
    return fit


def _sweep(sc: Any, source: str | None, opts: dict[str, Any]) -> None:
    """``--seeds``: the scenario once per seed; a line per seed as it ends, then a table."""
    from simulations.sweep import SeedCrashed, default_jobs, parse_seeds, run_seeds

    if opts["seed"] is not None:
        raise click.UsageError("give --seed or --seeds, not both")
    if opts["plot"]:
        raise click.UsageError("--plot draws one run: use --seed")
    try:
        seeds = parse_seeds(opts["seeds"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--seeds") from None
    jobs = opts["jobs"] or _jobs_that_fit(sc, default_jobs(len(seeds)), opts)
    _check_memory(sc, min(jobs, len(seeds)), opts)
    click.echo(f"{len(seeds)} seed(s), {min(jobs, len(seeds))} at a time")

    finished: list[Any] = []
    say: Any = click.echo

    def done(o: Any) -> None:
        # Written as each seed ends (before its line: a seed shown is a seed kept), so
        # an interrupted sweep of hours keeps what it found.
        finished.append(o)
        if opts["json_out"]:
            _write_reports(opts["json_out"], finished)
        say(
            f"seed {o.seed} {o.verdict}: trace {o.trace_hash[:16]}, {o.events:,} events, "
            f"{o.wall_seconds:,.1f} s wall, peak RSS {o.peak_rss_mb:,.0f} MB"
        )

    run = partial(run_seeds, sc, seeds, jobs=jobs, source=source, flags=_flags(opts))
    try:
        if opts["quiet"] or not sys.stderr.isatty():
            outcomes = run(on_done=done)
        else:
            with _SeedBars(sc.run.duration + sc.liveness_s(), sys.stdout.isatty()) as bars:
                say = bars.say if bars.on_stdout else click.echo
                outcomes = run(on_done=bars.wrap(done), on_progress=bars.update)
    except KeyboardInterrupt:
        # The workers are ended (run_seeds); the seeds that finished are kept.
        click.echo(f"error: interrupted; {_kept(finished, len(seeds), opts)}", err=True)
        raise SystemExit(130) from None
    except SeedCrashed as exc:
        raise click.ClickException(f"{exc}; {_kept(finished, len(seeds), opts)}") from None
    except BaseException:
        _keep_finished(finished, opts)
        raise
    if opts["json_out"] and not _replaceable(opts["json_out"]):
        with open(opts["json_out"], "w", encoding="utf-8") as f:
            json.dump([o.report for o in outcomes], f, indent=2, sort_keys=True)
    elif opts["json_out"]:
        _write_reports(opts["json_out"], outcomes)
    failed = [o for o in outcomes if not o.ok]
    if not opts["quiet"]:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(outcomes) - len(failed)} of {len(outcomes)} seeds pass")
        for col in ("seed", "verdict", "trace", "events", "wall s", "peak RSS MB"):
            table.add_column(col, justify="left" if col in ("verdict", "trace") else "right")
        for o in outcomes:
            table.add_row(
                str(o.seed),
                o.verdict,
                o.trace_hash[:16],
                f"{o.events:,}",
                f"{o.wall_seconds:,.1f}",
                f"{o.peak_rss_mb:,.0f}",
            )
        Console(stderr=False).print(table)
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} seeds pass")
    if failed:
        for o in failed:
            for name, problems in o.problems.items():
                click.echo(
                    f"FAIL seed {o.seed} {name}: {problems[0] if problems else ''}", err=True
                )
                for note in (p for p in problems[1:] if p.startswith("note:")):
                    click.echo(f"  {note}", err=True)
            click.echo(f"reproduce with: {o.reproduce}", err=True)
        raise SystemExit(1)


def _run(sc: Any, source: str | None, flags: list[str], *, quiet: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.runner import run_scenario

    total = sc.run.duration + sc.liveness_s()
    if quiet or not sys.stderr.isatty():
        return run_scenario(sc, source=source, flags=flags)
    columns = (
        TextColumn("[bold]simulating[/] {task.completed:>7.1f}/{task.total:.0f} virtual s"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("sim", total=total, rate="")
        state = {"events": 0}
        import time

        last = [time.perf_counter()]

        def progress(now: float, events: int) -> None:
            t = time.perf_counter()
            rate = (events - state["events"]) / max(t - last[0], 1e-9)
            state["events"], last[0] = events, t
            bar.update(task, completed=now, rate=f"{rate:,.0f} events/s")

        return run_scenario(sc, source=source, flags=flags, progress=progress)


def _output(result: Any, opts: dict[str, Any]) -> None:
    from rich.console import Console

    from simulations.report import plot_report, summary_table

    report = result.report
    if opts["json_out"]:
        with open(opts["json_out"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    if opts["plot"]:
        plot_report(result.history, result.population, result.sim.now, opts["plot"])
    console = Console(stderr=False)
    if not opts["quiet"]:
        console.print(summary_table(report))
    click.echo(f"seed {report['seed']} trace {report['trace_hash']}")
    if not result.ok:
        for name, problems in report["problems"].items():
            click.echo(f"FAIL {name}:", err=True)
            for p in problems:
                click.echo(f"  {p}", err=True)
        click.echo(f"reproduce with: {report['reproduce']}", err=True)
        raise SystemExit(1)
