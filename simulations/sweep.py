"""Run one scenario under many seeds, in parallel processes, and collect the verdicts.

A single seed proves little about a configuration under faults; TigerBeetle's VOPR
and FoundationDB run thousands. ``run_seeds`` runs the same scenario once per seed,
``jobs`` at a time, each in a fresh process (so each run's peak RSS is its own and
nothing leaks from one run into the next), and reports each seed as it finishes.
Each run is the same pure function of its seed as ``mesh-node simulate --seed S``:
the trace hash of a seed is the same here and there.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import re
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from simulations.scenario import Scenario

__all__ = [
    "MAX_SEEDS",
    "SeedCrashed",
    "SeedError",
    "SeedOutcome",
    "default_jobs",
    "parse_seeds",
    "run_seeds",
]

#: The most seeds one sweep takes (a bound on the work a typo can start).
MAX_SEEDS = 10_000

_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(spec: str) -> list[int]:
    """``"1-20"``, ``"3,5,7"`` or ``"1-5,9"`` as a sorted list of distinct seeds.

    Raises ``ValueError`` with a one-line message on anything else."""
    seeds: set[int] = set()
    for part in spec.split(","):
        m = _PART.match(part)
        if m is None:
            raise ValueError(f"bad seed list {spec!r}: use e.g. 1-20, 3,5,7 or 1-5,9")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"bad seed range {part.strip()!r}: the end is below the start")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS:,} seeds per sweep")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def default_jobs(seeds: int) -> int:
    """One process per core, never more than there are seeds."""
    return max(1, min(seeds, os.cpu_count() or 1))


@dataclass(frozen=True)
class SeedOutcome:
    """What one seed's run came to (``report`` is the full ``--json`` report)."""

    seed: int
    ok: bool
    trace_hash: str
    wall_seconds: float
    events: int
    peak_rss_mb: float
    failed: tuple[str, ...]
    reproduce: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def verdict(self) -> str:
        """``pass``, or ``FAIL`` and the failed checkers."""
        return "pass" if self.ok else "FAIL " + ",".join(self.failed)


class SeedError(RuntimeError):
    """A seed's run raised an error that is not the user's (a bug): its type, message
    and the seed on the first line, the worker's traceback after it."""


class SeedCrashed(SeedError):
    """A seed's process ended without a result (killed, e.g. by the kernel when out
    of memory)."""


#: In a worker process: where its run's progress goes (set by ``_init_worker``).
_PROGRESS: Any = None
#: A worker reports its progress at most this often (wall seconds).
PROGRESS_EVERY = 0.5


def _init_worker(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    if progress is not None:
        # A worker must never block at exit on reports nobody reads any more.
        progress.cancel_join_thread()


def _reporter(seed: int) -> Callable[[float, int], None] | None:
    """The run's progress callback in a worker: (seed, virtual time, events) to the
    parent's queue, the first report at once and then at most every PROGRESS_EVERY."""
    q = _PROGRESS
    if q is None:
        return None
    last = [float("-inf")]

    def report(now: float, events: int) -> None:
        t = time.monotonic()
        if t - last[0] >= PROGRESS_EVERY:
            last[0] = t
            q.put((seed, now, events))

    return report


def _one(sc: Scenario, source: str | None, flags: Sequence[str]) -> SeedOutcome:
    """Worker: run ``sc`` (its seed already set) to the end and summarize it."""
    from simulations.runner import run_scenario

    result = run_scenario(sc, source=source, flags=flags, progress=_reporter(sc.run.seed))
    r = result.report
    failed = tuple(sorted(name for name, verdict in r["checkers"].items() if verdict == "fail"))
    return SeedOutcome(
        seed=sc.run.seed,
        ok=result.ok,
        trace_hash=r["trace_hash"],
        wall_seconds=r["wall_seconds"],
        events=r["events"],
        peak_rss_mb=r["peak_rss_mb"],
        failed=failed,
        reproduce=r["reproduce"],
        problems={k: _brief(v) for k, v in r.get("problems", {}).items()},
        report=r,
    )


def _brief(problems: Sequence[str]) -> list[str]:
    """The first five problems, and any note on why (``note: ...``) after them."""
    first = list(problems[:5])
    return first + [p for p in problems[5:] if p.startswith("note:")]


#: The longest a worker is given to end once asked to (seconds), then it is killed.
STOP_GRACE = 5.0
#: How often the sweep wakes while it waits for a seed to end (seconds).
POLL = 1.0


@dataclass
class _Worker:
    """One seed's process and the read end of its result pipe."""

    seed: int
    process: BaseProcess
    conn: Connection

    def result(self) -> SeedOutcome:
        """The outcome the worker sent, or its error raised here."""
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(STOP_GRACE)
            code = self.process.exitcode
            raise SeedCrashed(
                f"seed {self.seed}: its process ended without a result (exit code {code}"
                + ("; killed: out of memory?)" if code == -signal.SIGKILL else ")")
            ) from None
        finally:
            self.conn.close()
        self.process.join(STOP_GRACE)
        if self.process.is_alive():
            self.stop()
        if kind == "ok":
            assert isinstance(value, SeedOutcome)
            return value
        assert isinstance(value, BaseException)
        raise value

    def stop(self) -> None:
        """End the worker now (bounded: terminate, then kill)."""
        self.conn.close()
        p = self.process
        if p.is_alive():
            p.terminate()
            p.join(STOP_GRACE)
        if p.is_alive():
            p.kill()
            p.join(STOP_GRACE)


def _portable(exc: BaseException, seed: int) -> BaseException:
    """``exc`` as the parent can receive it: the user's errors (``MeshError``: a
    ``ConfigError``...) as they are, any other as a ``SeedError`` naming the seed."""
    from protocols.errors import MeshError

    if isinstance(exc, MeshError):
        try:
            return pickle.loads(pickle.dumps(exc))  # type: ignore[no-any-return]
        except Exception:
            pass
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    trace = "".join(traceback.format_exception(exc))
    return SeedError(f"seed {seed}: {type(exc).__name__}: {first}\n{trace}")


def _child(
    conn: Connection, progress: Any, sc: Scenario, source: str | None, flags: Sequence[str]
) -> None:
    """A worker process: one seed's run, its outcome (or error) sent back on ``conn``."""
    # Ctrl-C reaches every process of the terminal's group: the parent handles it
    # and ends the workers (a worker that caught it would print a traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(progress)
    message: tuple[str, Any]
    try:
        message = ("ok", _one(sc, source, flags))
    except BaseException as exc:
        message = ("error", _portable(exc, sc.run.seed))
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the parent is gone, or ended the sweep
    finally:
        conn.close()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back in this thread while a worker starts: the worker starts with it
    ignored (it inherits the mask), and a Ctrl-C meanwhile is delivered right after."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    old = block(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, old)


def _start(
    ctx: Any, sc: Scenario, source: str | None, flags: Sequence[str], progress: Any
) -> _Worker:
    recv, send = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child,
        args=(send, progress, sc, source, list(flags)),
        name=f"sweep-seed-{sc.run.seed}",
        daemon=True,
    )
    try:
        with _sigint_blocked():
            process.start()
    finally:
        send.close()  # the worker's copy only: its end (or death) is then EOF here
    return _Worker(sc.run.seed, process, recv)


def run_seeds(
    sc: Scenario,
    seeds: Sequence[int],
    *,
    jobs: int,
    source: str | None = None,
    flags: Sequence[str] = (),
    on_done: Callable[[SeedOutcome], None] | None = None,
    on_progress: Callable[[int, float, int], None] | None = None,
) -> list[SeedOutcome]:
    """Run ``sc`` once per seed, ``jobs`` processes at a time; outcomes in seed order.

    ``on_done`` is called in this process as each seed finishes (in finishing
    order); ``on_progress(seed, virtual seconds, events)`` from a thread of this
    process while seeds run (a few times a second per seed; a report may come after
    its seed's ``on_done``). ``flags`` are the overrides the user gave, for the
    reproducing command. A seed's error (``ConfigError``, ``SeedError``), an error
    of ``on_done`` or a KeyboardInterrupt ends the sweep at once: the running workers
    are ended (within ``2 x STOP_GRACE`` seconds each), the seeds not yet started
    dropped, and the exception raised here; ``on_done`` has seen every seed that
    finished before it.
    """
    from simulations.scenario import apply_overrides

    if not seeds:
        return []
    jobs = max(1, min(jobs, len(seeds)))
    todo = deque(apply_overrides(sc, seed=seed) for seed in seeds)
    outcomes: list[SeedOutcome] = []
    # One fresh process per run ("spawn", one run per process): an accurate peak RSS
    # per seed, no state or memory carried from one run into the next.
    ctx = multiprocessing.get_context("spawn")
    progress = ctx.Queue() if on_progress is not None else None
    stop = threading.Event()
    drain = None
    if progress is not None and on_progress is not None:
        drain = threading.Thread(
            target=_drain, args=(progress, on_progress, stop), name="sweep-progress", daemon=True
        )
        drain.start()
    running: dict[Connection, _Worker] = {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                worker = _start(ctx, todo.popleft(), source, flags, progress)
                running[worker.conn] = worker
            # A worker's pipe (its result, or EOF) or its process's end wakes us.
            handles: list[Connection | int] = []
            by_handle: dict[object, _Worker] = {}
            for w in running.values():
                handles += [w.conn, w.process.sentinel]
                by_handle[w.conn] = by_handle[w.process.sentinel] = w
            for ready in wait(handles, timeout=POLL):
                w = by_handle[ready]
                if w.conn not in running:
                    continue  # its pipe and its sentinel both woke us
                del running[w.conn]
                outcome = w.result()
                outcomes.append(outcome)
                if on_done is not None:
                    on_done(outcome)
    finally:
        for w in running.values():
            w.stop()
        stop.set()
        if drain is not None:
            drain.join(timeout=5)
        if progress is not None:
            progress.close()
    return sorted(outcomes, key=lambda o: o.seed)


def _drain(
    progress: Any, on_progress: Callable[[int, float, int], None], stop: threading.Event
) -> None:
    """Hand the workers' progress reports to ``on_progress`` until the sweep ends."""
    while not stop.is_set():
        try:
            seed, now, events = progress.get(timeout=0.2)
        except queue.Empty:
            continue
        except (EOFError, OSError, ValueError):
            return
        try:
            on_progress(seed, now, events)
        except Exception:  # a display problem must not stop the draining (or the sweep)
            continue
