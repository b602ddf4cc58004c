"""Checkers on synthetic histories: each one catches what it is for."""

from __future__ import annotations

from mesh.events import (
    CapabilitiesChanged,
    FrameRejected,
    PeerDead,
    PeerJoined,
    PeerSuspected,
    TaskAssigned,
    TaskAwarded,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskReassigned,
)
from simulations.checkers import (
    Snapshot,
    at_most_once,
    bad_frames_rejected,
    every_task_ends,
    failover,
    membership_converged,
    no_stale_commit,
    single_commit,
    untrusted_never_admitted,
)
from simulations.history import History
from simulations.report import convergence, detection, percentile, tasks


def hist() -> History:
    h = History(4)
    h.ids = {"a": 0, "b": 1, "c": 2, "d": 3}
    return h


def assign(tid: str, node: int, epoch: int, semantics: str = "at-least-once") -> TaskAssigned:
    return TaskAssigned(tid, "a", "cap", None, epoch, 10.0, semantics, "low")


def test_single_commit_catches_two_results() -> None:
    h = hist()
    h.submitted(0.0, 0, "t1", "at-least-once")
    h(0.1, 0, TaskAwarded("t1", "b", 1, (), 1))
    h(0.5, 0, TaskCompleted("t1", "b", 1, "ok"))
    assert single_commit(h).status == "pass"
    h(0.6, 0, TaskCompleted("t1", "b", 1, "ok"))
    r = single_commit(h)
    assert r.status == "fail" and "t1" in r.problems[0]


def test_no_stale_commit_catches_an_old_epoch() -> None:
    h = hist()
    h.submitted(0.0, 0, "t1", "at-least-once")
    h(0.1, 0, TaskAwarded("t1", "b", 1, ("c",), 2))
    h(0.2, 0, TaskReassigned("t1", "b", "c", 2, "dead", False))
    h(0.3, 0, TaskCompleted("t1", "b", 1, "late"))
    assert no_stale_commit(h).status == "fail"
    h2 = hist()
    h2.submitted(0.0, 0, "t1", "at-least-once")
    h2(0.1, 0, TaskAwarded("t1", "b", 1, ("c",), 2))
    h2(0.2, 0, TaskReassigned("t1", "b", "c", 2, "dead", False))
    h2(0.3, 0, TaskCompleted("t1", "c", 2, "ok"))
    assert no_stale_commit(h2).status == "pass"


def test_at_most_once_catches_a_second_start() -> None:
    h = hist()
    h.submitted(0.0, 0, "t1", "at-most-once")
    h.submitted(0.0, 0, "t2", "at-least-once")
    h(0.1, 1, assign("t1", 1, 1, "at-most-once"))
    h(0.1, 1, assign("t2", 1, 1))
    h(0.2, 2, assign("t2", 2, 2))
    assert at_most_once(h).status == "pass"
    h(0.3, 2, assign("t1", 2, 2, "at-most-once"))
    assert at_most_once(h).status == "fail"


def test_every_task_ends_but_orphans_are_excused() -> None:
    h = hist()
    h.submitted(0.0, 0, "t1", "at-least-once")
    h.submitted(0.0, 1, "t2", "at-least-once")
    h.submitted(0.0, 0, "t3", "at-most-once")
    h.submitted(0.0, 0, "t4", "at-least-once")
    h(1.0, 0, TaskFailed("t1", "no-bidders", ()))
    h(1.0, 0, TaskOutcomeUnknown("t3", "b", 1, "dead"))
    h.crashed(2.0, 1)  # t2's requester is gone: excused
    r = every_task_ends(h)
    assert r.status == "fail" and len(r.problems) == 1 and "t4" in r.problems[0]
    h(3.0, 0, TaskFailed("t4", "", ()))
    assert "without a reason" in every_task_ends(h).problems[0]


def test_bad_frames_rejected_needs_an_expected_code() -> None:
    h = hist()
    assert bad_frames_rejected(h).status == "skip"
    h.injected(1.0, 1, 3, "forge", frozenset({"bad-signature"}), ("bad-signature",), False)
    h.injected(1.0, 1, 3, "replay", frozenset({"replayed"}), (), True)  # exempt
    assert bad_frames_rejected(h).status == "pass"
    h.injected(2.0, 1, 3, "forge", frozenset({"bad-signature"}), ("malformed",), False)
    h.injected(2.0, 1, 3, "malformed", frozenset({"malformed"}), (), False)
    assert len(bad_frames_rejected(h).problems) == 2


def test_untrusted_never_admitted() -> None:
    h = hist()
    assert untrusted_never_admitted(h).status == "skip"
    h.untrusted_ids.add("d")
    h(1.0, 0, PeerJoined("b", "sim://1", "o"))
    assert untrusted_never_admitted(h).status == "pass"
    h(1.0, 0, PeerJoined("d", "sim://3", "mallory"))
    assert untrusted_never_admitted(h).status == "fail"


def test_membership_converged() -> None:
    live = {0: "a", 1: "b", 2: "c"}
    good = {0: {"b": (0, 1), "c": (1, 0)}, 1: {"a": (0, 0), "c": (1, 0)}}
    assert membership_converged(Snapshot(live, dict(good))).status == "pass"
    missing = {**good, 1: {"a": (0, 0)}}
    assert "missing ['c']" in membership_converged(Snapshot(live, missing)).problems[0]
    stale = {**good, 1: {"a": (0, 0), "c": (0, 5)}}
    assert "stale" in membership_converged(Snapshot(live, stale)).problems[0]
    own = Snapshot(live, dict(good), own={"c": (2, 0)})
    assert membership_converged(own).status == "fail"
    assert membership_converged(Snapshot(live, {0: None})).status == "skip"
    hidden = Snapshot(live, {0: {"b": (0, 0)}}, visible_to=lambda i, j: j != 2)
    assert membership_converged(hidden).status == "pass"


def test_dead_everywhere_needs_every_live_observer_up_since_the_crash() -> None:
    # Seven nodes; node 4 is of an org the others do not trust.
    h = History(7, mutual=lambda i, j: (i == 4) == (j == 4))
    h.ids = {c: i for i, c in enumerate("abcdefg")}
    for i in range(7):
        h.started(0.0, i)
    h.crashed(20.0, 3)
    h(21.0, 0, PeerDead("d", 0))  # node 0 (the marker node) is an observer like any
    h(22.0, 1, PeerDead("d", 0))
    h(26.0, 6, PeerDead("d", 0))  # node 6 crashes later: no observer, not counted
    h.crashed(27.0, 6)
    h.crashed(23.0, 5)
    h.restarted(24.0, 5)  # up again after the crash: no observer; nor is 4 (no trust)
    live = {0, 1, 2, 4, 5}
    # node 2, live and up since before the crash, never declared it dead; three nodes
    # did (0, 1 and 6), as many as the live nodes trusted by node 0 but itself (1, 2
    # and 5): that used to count as dead everywhere
    d = detection(h, 1.0, live)
    assert d["dead_everywhere_count"] == 0 and d["dead_everywhere_p99_s"] is None
    h(25.0, 2, PeerDead("d", 0))
    d = detection(h, 1.0, live)
    # crash to the last observer's PeerDead (node 2 at 25), not node 6's at 26
    assert d["dead_everywhere_count"] == 1 and d["dead_everywhere_p99_s"] == 5.0


def test_convergence_detection_and_task_figures() -> None:
    h = hist()
    h.watch_marker("a")
    h(0.5, 1, CapabilitiesChanged("a", 0, 0))  # the old record: the base
    h.publish_marker(10.0)
    h(10.1, 1, CapabilitiesChanged("a", 0, 0))  # still old: not counted
    h(10.3, 1, CapabilitiesChanged("a", 0, 1))
    h(10.5, 2, CapabilitiesChanged("a", 0, 1))
    h(10.9, 3, CapabilitiesChanged("a", 0, 1))
    c = convergence(h, {1, 2, 3}, 0.2)
    assert c["seconds_to_100pct"] == 0.9 and c["rounds_to_100pct"] == 5
    assert c["rounds_to_99pct"] == 5 and c["knew"] == 3 and c["population"] == 3
    # node 3 crashed since: the population live at the end is 1 and 2 (it used to count
    # all three learners against it, and "knew" passed "population")
    c = convergence(h, {1, 2}, 0.2)
    assert c["knew"] == 2 and c["seconds_to_100pct"] == 0.5 and c["rounds_to_100pct"] == 3
    h.crashed(20.0, 3)
    h(21.0, 1, PeerSuspected("d", 0))
    h(22.0, 1, PeerDead("d", 0))
    h(23.0, 2, PeerDead("d", 0))
    h(23.0, 2, PeerDead("b", 0))  # b is alive: a false positive
    d = detection(h, 1.0, {1, 2})
    assert d["first_suspicion_median_periods"] == 1.0
    assert d["dead_everywhere_p99_s"] == 3.0 and d["false_positive_deaths"] == 1
    h.submitted(0.0, 0, "t1", "at-least-once")
    h(0.02, 0, TaskAwarded("t1", "b", 1, (), 1))
    h(0.5, 0, FrameRejected("stale-epoch", "x", "sim://1"))
    t = tasks(h)
    assert t["submitted"] == 1 and t["award_latency_p50_ms"] == 20.0
    assert h.rejected == {"stale-epoch": 1}
    assert percentile([], 50) is None and percentile([1.0, 2.0, 3.0], 99) == 3.0


def test_failover_catches_a_task_never_handed_on_from_a_crashed_holder() -> None:
    """A requester that never re-awarded (its holder died, its lease ran out) still
    ended every task, by the deadline: every checker passed (a planted bug, found by
    a review by mutation). ``failover`` wants a re-award within a lease and a margin."""
    h = hist()
    for tid in ("lost", "moved", "late"):
        h.submitted(0.0, 0, tid, "at-least-once")
        h(0.1, 0, TaskAwarded(tid, "b", 1, ("c",), 2))
    h.crashed(1.0, 1)  # b holds all three
    h(7.5, 0, TaskReassigned("moved", "b", "c", 2, "lease-expired", False))
    h(8.0, 0, TaskCompleted("moved", "c", 2, "ok", ()))
    h(10.1, 0, TaskFailed("lost", "timeout", ("epoch 1 b: timeout",)))
    h(9.5, 0, TaskFailed("late", "timeout", ()))  # within the bound: no verdict
    result = failover(h)
    assert result.status == "fail"
    assert len(result.problems) == 1 and result.problems[0].startswith("lost: holder 1")
    # let go in time, but no executor free for a new auction before the deadline
    h.submitted(0.0, 0, "busy", "at-least-once")
    h(0.1, 0, TaskAwarded("busy", "b", 1, (), 1))
    h(12.0, 0, TaskFailed("busy", "timeout", ("epoch 1 b: lease-expired", "round 2: full")))
    assert len(failover(h).problems) == 1
    assert failover(hist()).status == "pass"
