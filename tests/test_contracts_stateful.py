"""RuleBasedStateMachine over a FakeNet: adversarial delivery of contract-net messages.

Rules submit tasks, deliver queued messages in any order, drop, duplicate and
replay old ones (late and stale-epoch messages), advance time (leases, reply-by,
heartbeats), crash executors, and let executors complete or fail what they hold.

Invariants: at most one committed result per task; a committed result comes from
the holder of the task's latest epoch; an at-most-once task is handed to a
handler at most once and completes at most once; nothing happens to a task after
its terminal event. Teardown (liveness): with delivery restored and time run past
every deadline, every task ends.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_contracts_fakes import CAP, FakeNet, Packet, offer

from mesh.events import (
    TaskAssigned,
    TaskAwarded,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskReassigned,
)
from protocols.contract_net import ExecState, ReqState, TaskSpec
from protocols.contract_net._state import REQUESTER_TERMINAL

EXECUTORS = ("x0", "x1", "x2")
_ENDS = (TaskCompleted, TaskFailed, TaskOutcomeUnknown)


class ContractNetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = FakeNet(seed=3, auto_work=False, detect_delay=1.5)
        self.net.add("req")
        for x in EXECUTORS:
            self.net.add(x, offer(max_concurrency=2))
        self.history: list[Packet] = []
        self.semantics: dict[str, str] = {}
        self.done_calls: Counter[str] = Counter()

    # --- rules -------------------------------------------------------------------

    @precondition(lambda self: len(self.semantics) < 4)
    @rule(amo=st.booleans(), lease=st.sampled_from([1.0, 3.0, 30.0]))
    def submit(self, amo: bool, lease: float) -> None:
        sem = "at-most-once" if amo else "at-least-once"
        spec = TaskSpec(
            CAP, input="in", semantics=sem, lease=lease, reply_timeout=2.0, timeout=60.0
        )
        task_id = self.net.agents["req"].submit(spec, self.net.now)
        self.semantics[task_id] = sem

    @precondition(lambda self: bool(self.net.queue))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.net.queue) - 1), label="index")
        self.history.append(self.net.queue[i])
        self.net.deliver_one(i)

    @precondition(lambda self: bool(self.net.queue))
    @rule(n=st.integers(1, 12))
    def deliver_in_order(self, n: int) -> None:
        for _ in range(min(n, len(self.net.queue))):
            self.history.append(self.net.queue[0])
            self.net.deliver_one(0)

    @precondition(lambda self: bool(self.net.queue))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.net.queue.pop(data.draw(st.integers(0, len(self.net.queue) - 1), label="index"))

    @precondition(lambda self: bool(self.net.queue))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.net.queue) - 1), label="index")
        self.net.queue.append(self.net.queue[i])

    @precondition(lambda self: bool(self.history))
    @rule(data=st.data())
    def replay_old(self, data: st.DataObject) -> None:
        """A late copy of something delivered long ago (stale epochs, late bids)."""
        self.net.queue.append(data.draw(st.sampled_from(self.history), label="old"))

    @rule(dt=st.sampled_from([0.2, 0.6, 1.1, 2.5]))
    def advance(self, dt: float) -> None:
        self.net.now += dt
        self.net._fire(self.net.now)

    @precondition(lambda self: len(self.net.crashed) < 2)
    @rule(node=st.sampled_from(EXECUTORS))
    def crash(self, node: str) -> None:
        self.net.crash(node)

    @rule(data=st.data(), ok=st.booleans())
    def executor_reports(self, data: st.DataObject, ok: bool) -> None:
        held = [
            (node, task_id)
            for node in EXECUTORS
            if node not in self.net.crashed
            for task_id in self.semantics
            if self.net.agents[node].executor.job_state(task_id) is not None
        ]
        if held:
            node, task_id = data.draw(st.sampled_from(held), label="job")
            self._report(node, task_id, ok)

    def _report(self, node: str, task_id: str, ok: bool) -> None:
        agent = self.net.agents[node]
        if agent.executor.job_state(task_id) is not ExecState.RUNNING:
            return
        if ok:
            if agent.complete(task_id, f"{node}:{task_id}", self.net.now):
                self.done_calls[task_id] += 1
        else:
            agent.fail(task_id, "boom", self.net.now)

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def at_most_one_commit_from_the_current_holder(self) -> None:
        latest: dict[str, tuple[str, int]] = {}
        commits: Counter[str] = Counter()
        for _, ev in self.net.log:
            if isinstance(ev, TaskAwarded | TaskReassigned):
                # epochs only grow (a new auction's award repeats its TaskReassigned)
                assert (ev.winner, ev.epoch) == latest.get(ev.task_id) or ev.epoch > latest.get(
                    ev.task_id, ("", 0)
                )[1]
                latest[ev.task_id] = (ev.winner, ev.epoch)
            elif isinstance(ev, TaskCompleted):
                commits[ev.task_id] += 1
                assert latest[ev.task_id] == (ev.executor, ev.epoch)
        assert all(v == 1 for v in commits.values()), commits

    @invariant()
    def at_most_once_never_runs_twice(self) -> None:
        assigned = Counter(ev.task_id for _, ev in self.net.log if isinstance(ev, TaskAssigned))
        for task_id, sem in self.semantics.items():
            if sem == "at-most-once":
                assert assigned[task_id] <= 1
                assert self.done_calls[task_id] <= 1

    @invariant()
    def nothing_after_a_terminal_event(self) -> None:
        ended: set[str] = set()
        for node, ev in self.net.log:
            if node != "req":
                continue
            task_id = getattr(ev, "task_id", None)
            if isinstance(ev, (TaskAwarded, TaskReassigned, *_ENDS)):
                assert task_id not in ended, ev
            if isinstance(ev, _ENDS):
                ended.add(str(task_id))
        req = self.net.agents["req"]
        for task_id in ended:
            assert req.task_state(task_id) in REQUESTER_TERMINAL

    def _all_invariants(self) -> None:
        self.at_most_one_commit_from_the_current_holder()
        self.at_most_once_never_runs_twice()
        self.nothing_after_a_terminal_event()

    def teardown(self) -> None:
        """Liveness: with delivery restored and handlers finishing, every task ends."""
        net = self.net
        for _ in range(400):
            net.pump()
            for node in EXECUTORS:
                if node not in net.crashed:
                    for task_id in self.semantics:
                        self._report(node, task_id, ok=True)
            net.pump()
            net.now += 0.5
            net._fire(net.now)
        self._all_invariants()
        req = self.net.agents["req"]
        for task_id in self.semantics:
            state = req.task_state(task_id)
            assert state in REQUESTER_TERMINAL, (task_id, state)
            if state is ReqState.UNKNOWN:
                assert self.semantics[task_id] == "at-most-once"


ContractNetMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestContractNet = ContractNetMachine.TestCase
