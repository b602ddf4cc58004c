"""The run report: JSON figures, a summary table, an optional plot."""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Collection, Sequence
from typing import Any

from simulations.checkers import CheckResult
from simulations.history import History

__all__ = ["build_report", "percentile", "plot_report", "summary_table"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(q / 100.0 * len(s)) - 1)
    return s[k]


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _learned(h: History, population: Collection[int]) -> list[float]:
    """When each node of ``population`` learned the marker record, in order. Nodes
    outside it (crashed since, or out of the marker's trust) are not counted."""
    return sorted(t for i, t in h.learned.items() if i in population)


def convergence(h: History, population: Collection[int], gossip_interval: float) -> dict[str, Any]:
    """When 99% / 100% of the ``population`` nodes (live at the end, mutually trusted
    with the marker's node) knew the marker record."""
    learned = _learned(h, population)
    out: dict[str, Any] = {
        "marker_at_s": h.marker_at,
        "population": len(population),
        "knew": len(learned),
        "rounds_to_99pct": None,
        "rounds_to_100pct": None,
        "seconds_to_99pct": None,
        "seconds_to_100pct": None,
    }
    if h.marker_at is None or not population:
        return out
    times = [t - h.marker_at for t in learned]
    for pct, key in ((0.99, "99pct"), (1.0, "100pct")):
        need = math.ceil(pct * len(population))
        if 0 < need <= len(times):
            secs = times[need - 1]
            out[f"seconds_to_{key}"] = round(secs, 4)
            out[f"rounds_to_{key}"] = math.ceil(secs / gossip_interval - 1e-9)
    return out


def dead_everywhere_observers(h: History, i: int, live: Collection[int]) -> list[int]:
    """The nodes that must declare crashed node ``i`` dead for it to be "dead
    everywhere": live at the end of the run, mutually trusted with ``i`` (only they
    can hold it as a member), and running without a break since ``i`` crashed. A node
    that (re)started after the crash is left out: it joined a mesh in which ``i`` was
    already silent, and may never have had a record of it to declare dead (in
    chaos-1000 at 40 nodes, seed 2, nodes 11 and 14 restarted so and never knew the
    node that crashed before)."""
    crash = h.crashes[i]
    return [
        j
        for j in live
        if j != i and h.up_since.get(j, 0.0) <= crash and (h.mutual is None or h.mutual(j, i))
    ]


def detection(h: History, probe_interval: float, live: Collection[int]) -> dict[str, Any]:
    """Failure-detection figures; ``live``: the nodes running at the end of the run."""
    firsts = [
        (h.first_suspicion[i] - t) / probe_interval
        for i, t in h.crashes.items()
        if i in h.first_suspicion
    ]
    everywhere = []
    for i, seen in h.dead_seen.items():
        if i not in h.crashes or i not in h.down:
            continue  # restarted since (or never crashed): not dead anywhere now
        observers = dead_everywhere_observers(h, i, live)
        if observers and all(j in seen for j in observers):
            everywhere.append(max(seen[j] for j in observers) - h.crashes[i])
    return {
        "crashed": len(h.crashes),
        "first_suspicion_median_periods": _r(percentile(firsts, 50)),
        "dead_everywhere_p99_s": _r(percentile(everywhere, 99)),
        "dead_everywhere_count": len(everywhere),
        "false_positive_deaths": h.false_deaths,
        "one_way_trust_deaths": h.one_way_deaths,
    }


def tasks(h: History) -> dict[str, Any]:
    recs = list(h.tasks.values())
    lat = [
        (r.epochs[0][0] - r.submitted_at) * 1000.0
        for r in recs
        if r.epochs and r.epochs[0][0] >= r.submitted_at
    ]
    return {
        "submitted": len(recs),
        "completed": sum(1 for r in recs if r.commits),
        "failed": sum(1 for r in recs if r.failed is not None and not r.commits),
        "reassigned": sum(1 for r in recs if r.reassigned),
        "outcome_unknown": sum(1 for r in recs if r.unknown is not None and not r.commits),
        "orphaned": sum(1 for r in recs if r.ended() is None and r.requester_crashed),
        "duplicate_commits": sum(len(r.commits) - 1 for r in recs if len(r.commits) > 1),
        "stale_results_rejected": sum(r.stale for r in recs),
        "award_latency_p50_ms": _r(percentile(lat, 50)),
        "award_latency_p99_ms": _r(percentile(lat, 99)),
    }


def build_report(
    *,
    h: History,
    meta: dict[str, Any],
    net: dict[str, int],
    checks: list[CheckResult],
    population: Collection[int],
    live: Collection[int],
    gossip_interval: float,
    probe_interval: float,
) -> dict[str, Any]:
    wall = meta["wall_seconds"]
    rejected = dict(sorted(h.rejected.items()))
    return {
        **meta,
        "events_per_second": round(meta["events"] / wall) if wall > 0 else None,
        "convergence": convergence(h, population, gossip_interval),
        "detection": detection(h, probe_interval, live),
        "tasks": tasks(h),
        "messages": {
            "sent": net["sent"],
            "delivered": net["delivered"],
            "dropped": net["dropped_loss"]
            + net["dropped_partition"]
            + net["dropped_down"]
            + net["dropped_unroutable"],
            "duplicated": net["duplicated"],
            "rejected_by_code": rejected,
            "injected": len(h.injections),
        },
        "checkers": {c.name: c.status for c in checks},
        "problems": {c.name: list(c.problems) for c in checks if c.problems},
        "peak_rss_mb": peak_rss_mb(),
    }


def summary_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"simulation {report.get('scenario', '')} seed={report['seed']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("nodes", report["nodes"]),
        ("virtual / wall s", f"{report['virtual_seconds']} / {report['wall_seconds']}"),
        ("events (per s)", f"{report['events']} ({report['events_per_second']})"),
        ("trace hash", report["trace_hash"][:16]),
    ]
    for group in ("convergence", "detection", "tasks"):
        rows += [(f"{group}.{k}", v) for k, v in report[group].items()]
    rows += [(f"messages.{k}", v) for k, v in report["messages"].items()]
    rows += [(f"check {k}", v) for k, v in report["checkers"].items()]
    rows.append(("peak RSS MB", report["peak_rss_mb"]))
    for name, value in rows:
        t.add_row(name, str(value))
    return t


def plot_report(h: History, population: Collection[int], end: float, path: str) -> None:
    """Fraction of nodes that know the marker record, and task outcomes, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7))
    if h.marker_at is not None and population:
        times = _learned(h, population)
        xs = [h.marker_at, *times]
        ys = [0.0, *[(k + 1) / len(population) for k in range(len(times))]]
        ax1.step(xs, ys, where="post")
    ax1.set_title("fraction of nodes that know the new record")
    ax1.set_xlabel("virtual time (s)")
    ax1.set_ylim(0, 1.05)
    for kind in ("completed", "failed", "outcome-unknown"):
        ts = sorted(t for t, k in h.outcomes if k == kind)
        ax2.step([0.0, *ts, end], [0, *range(1, len(ts) + 1), len(ts)], where="post", label=kind)
    subs = sorted(r.submitted_at for r in h.tasks.values())
    ax2.step(
        [0.0, *subs, end],
        [0, *range(1, len(subs) + 1), len(subs)],
        where="post",
        label="submitted",
        linestyle="--",
    )
    ax2.set_title("task outcomes (cumulative)")
    ax2.set_xlabel("virtual time (s)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
