"""Jepsen-style checkers over the recorded history of a run.

Each checker returns ``CheckResult(name, status, problems)`` where status is
``pass``, ``fail`` or ``skip`` (not measurable in this run). Safety checkers
look at the whole history; liveness ones at the state after the liveness
phase (every fault healed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from simulations.history import History

__all__ = ["CheckResult", "Snapshot", "run_checkers"]

_MAX_PROBLEMS = 10


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(slots=True)
class Snapshot:
    """The world at the end of the run, for the convergence checker."""

    #: index -> node id of every live node that all orgs trust
    live: Mapping[int, str] = field(default_factory=dict)
    #: index -> that node's member view (node id -> (incarnation, seq)); None: unsupported
    views: Mapping[int, Mapping[str, tuple[int, int]] | None] = field(default_factory=dict)
    #: node id -> which node ids may legitimately see it (same-org trust); None: everyone
    visible_to: Callable[[int, int], bool] | None = None
    #: node id -> the version of the record the node itself currently publishes
    own: dict[str, tuple[int, int]] = field(default_factory=dict)


def _result(name: str, problems: Sequence[str]) -> CheckResult:
    return CheckResult(name, "fail" if problems else "pass", tuple(problems[:_MAX_PROBLEMS]))


def single_commit(h: History) -> CheckResult:
    """At most one committed result per task."""
    bad = [f"{t}: {len(r.commits)} commits" for t, r in h.tasks.items() if len(r.commits) > 1]
    return _result("single-commit", bad)


def no_stale_commit(h: History) -> CheckResult:
    """A committed result comes from the current epoch's winner."""
    bad = [
        f"{t}: committed {c[1]}@{c[2]} but current was {r.epochs[-1][1:] if r.epochs else None}"
        for t, r in h.tasks.items()
        for c in r.commits
        if not c[3]
    ]
    return _result("no-stale-commit", bad)


def at_most_once(h: History) -> CheckResult:
    """An at-most-once task is started by at most one executor, once."""
    bad = [
        f"{t}: started {len(r.runs)} times {[(n, e) for _, n, e in r.runs]}"
        for t, r in h.tasks.items()
        if r.semantics == "at-most-once" and len(r.runs) > 1
    ]
    return _result("at-most-once", bad)


def every_task_ends(h: History) -> CheckResult:
    """Every task ends completed, failed with a reason, or outcome-unknown."""
    bad = []
    for t, r in h.tasks.items():
        if r.requester_crashed:
            continue
        if r.ended() is None:
            bad.append(f"{t}: no outcome (submitted at {r.submitted_at:.3f}s by {r.requester})")
        elif r.failed is not None and not r.failed[1] and not r.commits:
            bad.append(f"{t}: failed without a reason")
    return _result("every-task-ends", bad)


#: The most a task may take to leave a crashed holder, in seconds: its lease (6 s, the
#: workload's tasks keep TaskSpec's default) plus a reply window and skew to spare.
FAILOVER_BOUND = 6.0 + 3.0


def failover(h: History) -> CheckResult:
    """A task whose holder crashed moves on within its lease: a task that failed more
    than a lease after its holder crashed, with no re-award since and no word in its
    attempts that the requester let the holder go (``lease-expired``, ``peer-dead``:
    a new auction may then find no free executor before the deadline), was never
    handed on (``every-task-ends`` passes it all the same: it ends, by its deadline).
    Tasks whose requester crashed, and holders that crashed before their award, are
    not judged."""
    bad = []
    for t, r in h.tasks.items():
        if r.requester_crashed or r.commits or r.failed is None or not r.epochs:
            continue
        awarded, epoch, winner = r.epochs[-1]
        holder = h.ids.get(winner)
        crashed = h.crashes.get(holder) if holder is not None else None
        if crashed is None or crashed < awarded:
            continue
        let_go = {f"epoch {epoch} {winner}: lease-expired", f"epoch {epoch} {winner}: peer-dead"}
        if r.failed[0] - crashed > FAILOVER_BOUND and let_go.isdisjoint(r.attempts):
            bad.append(
                f"{t}: holder {holder} (epoch {epoch}) crashed at {crashed:.3f}s; the task "
                f"failed at {r.failed[0]:.3f}s ({r.failed[1]}) with no re-award"
            )
    return _result("failover", bad)


def bad_frames_rejected(h: History) -> CheckResult:
    """Every injected bad frame is rejected, under an expected code."""
    counted = [j for j in h.injections if not j.exempt]
    if not counted:
        return CheckResult("bad-frames-rejected", "skip")
    bad = [
        f"{j.attack} at {j.time:.3f}s to {j.dst}: expected {sorted(j.expected)}, got {list(j.got)}"
        for j in counted
        if not j.got or j.got[0] not in j.expected
    ]
    return _result("bad-frames-rejected", bad)


def untrusted_never_admitted(h: History) -> CheckResult:
    """Nobody admits a node whose org it does not trust."""
    if not h.untrusted_ids:
        return CheckResult("untrusted-never-admitted", "skip")
    bad = [f"{t:.3f}s: node {i} admitted {nid}" for t, i, nid in h.untrusted_admitted]
    return _result("untrusted-never-admitted", bad)


def membership_converged(snap: Snapshot) -> CheckResult:
    """After the last heal, every live node sees exactly the live nodes it trusts,
    and every record at the same version as everybody else."""
    if not snap.views or any(v is None for v in snap.views.values()):
        return CheckResult("membership-converged", "skip")
    newest: dict[str, tuple[int, int]] = dict(snap.own)
    for view in snap.views.values():
        assert view is not None
        for nid, ver in view.items():
            if nid not in snap.own and ver > newest.get(nid, (-1, -1)):
                newest[nid] = ver
    bad: list[str] = []
    for i, view in snap.views.items():
        assert view is not None
        expect = {
            nid
            for j, nid in snap.live.items()
            if j != i and (snap.visible_to is None or snap.visible_to(i, j))
        }
        seen = set(view)
        if seen != expect:
            missing, extra = sorted(expect - seen), sorted(seen - expect)
            bad.append(f"node {i}: missing {missing[:5]} ({len(missing)}), extra {extra[:5]}")
        stale = sorted(nid for nid in seen & expect if view[nid] != newest[nid])
        if stale:
            bad.append(f"node {i}: stale records of {stale[:5]} ({len(stale)})")
    return _result("membership-converged", bad)


def run_checkers(h: History, snap: Snapshot) -> list[CheckResult]:
    return [
        single_commit(h),
        no_stale_commit(h),
        at_most_once(h),
        every_task_ends(h),
        failover(h),
        bad_frames_rejected(h),
        untrusted_never_admitted(h),
        membership_converged(snap),
    ]
