"""Simulator checkers that no test held to their property.

Pinned after a mutation run (session 15): each test below failed to fail when the
check it names was removed from the code (at-most-once counting nodes rather than runs, a current commit judged by epoch alone); each one fails on that mutant and
passes on the code as it is."""

from __future__ import annotations

from mesh.events import TaskAssigned, TaskAwarded, TaskCompleted, TaskReassigned
from simulations.checkers import at_most_once, no_stale_commit
from simulations.history import History


def hist() -> History:
    h = History(4)
    h.ids = {"a": 0, "b": 1, "c": 2, "d": 3}
    return h


def test_at_most_once_catches_the_same_node_starting_twice():
    h = hist()
    h.submitted(0.0, 0, "t1", "at-most-once")
    h(0.1, 1, TaskAssigned("t1", "a", "cap", None, 1, 10.0, "at-most-once", "low"))
    h(0.2, 1, TaskAssigned("t1", "a", "cap", None, 2, 10.0, "at-most-once", "low"))
    assert at_most_once(h).status == "fail"


def test_no_stale_commit_catches_the_wrong_executor_at_the_current_epoch():
    h = hist()
    h.submitted(0.0, 0, "t1", "at-least-once")
    h(0.1, 0, TaskAwarded("t1", "b", 1, ("c",), 2))
    h(0.2, 0, TaskReassigned("t1", "b", "c", 2, "dead", False))
    h(0.3, 0, TaskCompleted("t1", "b", 2, "from the old holder"))
    assert no_stale_commit(h).status == "fail"
