"""People on the loop: tasks at or above a risk level wait for a person's decision."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from node import ApprovalDesk, LocalOrg, Node, Task
from node.supervision import RISK_LEVELS, Decision, risk_rank
from protocols.errors import ConfigError, ContractNetError, LocalProtocolError


def test_risk_levels_are_ordered_and_an_unknown_risk_counts_as_critical() -> None:
    assert [risk_rank(r) for r in RISK_LEVELS] == [0, 1, 2, 3]
    assert risk_rank("apocalyptic") == risk_rank("critical")
    with pytest.raises(ConfigError, match="approve_at"):
        ApprovalDesk().gate("severe")


async def _mesh(
    desk: ApprovalDesk, body: Callable[[Node, list[int]], Awaitable[None]], at: str = "high"
) -> None:
    org = LocalOrg("acme")
    executor = Node.from_org(org, "executor", preset="local")
    ran: list[int] = []

    @executor.capability("transfer", approve=desk.gate(at))
    async def transfer(task: Task) -> int:
        ran.append(int(task.input))
        return int(task.input)

    async with executor:
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            await body(requester, ran)


async def _waiting(desk: ApprovalDesk, n: int = 1) -> list[dict[str, object]]:
    for _ in range(500):
        if len(desk.pending()) >= n:
            return desk.pending()
        await asyncio.sleep(0.01)
    raise AssertionError("nothing waits for approval")


def test_low_risk_runs_at_once_and_high_risk_waits_for_approval() -> None:
    log: list[Decision] = []
    desk = ApprovalDesk(log.append)

    async def body(requester: Node, ran: list[int]) -> None:
        low = await requester.request("transfer", 1, timeout=10, risk="low")
        assert low.value == 1 and desk.pending() == []
        high = asyncio.ensure_future(requester.request("transfer", 2, timeout=10, risk="high"))
        (waiting,) = await _waiting(desk)
        assert waiting["risk"] == "high" and waiting["input"] == 2
        await asyncio.sleep(0.2)
        assert ran == [1]  # nothing runs before someone says yes
        desk.approve(str(waiting["task_id"])[:8], by="alice")  # a unique prefix will do
        assert (await high).value == 2
        assert ran == [1, 2]

    asyncio.run(asyncio.wait_for(_mesh(desk, body), 60))
    assert [(d.event, d.by) for d in log] == [("requested", ""), ("approved", "alice")]


def test_a_denied_task_fails_with_the_reason_and_is_never_run() -> None:
    desk = ApprovalDesk()

    async def body(requester: Node, ran: list[int]) -> None:
        call = asyncio.ensure_future(
            requester.request("transfer", 3, timeout=10, risk="critical", max_auctions=2)
        )
        (waiting,) = await _waiting(desk)
        desk.deny(str(waiting["task_id"]), reason="over the limit", by="bob")
        with pytest.raises(ContractNetError) as info:
            await call
        assert "not approved: over the limit" in str(info.value)
        assert all("not approved: over the limit" in a for a in info.value.attempts)
        assert ran == []
        assert desk.pending() == []  # the re-award was denied without asking again

    asyncio.run(asyncio.wait_for(_mesh(desk, body), 60))


def test_deciding_an_unknown_or_ambiguous_task_is_a_clear_error() -> None:
    desk = ApprovalDesk()
    with pytest.raises(LocalProtocolError, match="no task 'nope-nope' is waiting") as info:
        desk.approve("nope-nope")
    assert info.value.code == "not-found"
    with pytest.raises(LocalProtocolError, match="no task") as info:
        desk.deny("")
    assert info.value.code == "not-found"


@pytest.mark.parametrize("decide", ["approve", "deny"])
def test_an_unknown_task_id_is_not_found(decide: str) -> None:
    desk = ApprovalDesk()
    with pytest.raises(LocalProtocolError) as info:
        getattr(desk, decide)("deadbeef00")
    assert info.value.code == "not-found"
    assert str(info.value) == "no task 'deadbeef00' is waiting for approval"


def test_an_ambiguous_expired_or_decided_task_is_not_found() -> None:
    import time as _time

    desk = ApprovalDesk()
    gate = desk.gate("low")

    def task(task_id: str) -> Task:
        return Task(task_id, "pay", 1, _time.time() + 30, requester="r", risk="high")

    def not_found(decide: str, task_id: str, message: str) -> None:
        with pytest.raises(LocalProtocolError, match=message) as info:
            getattr(desk, decide)(task_id)
        assert info.value.code == "not-found" and "\n" not in str(info.value)

    async def body() -> None:
        one = asyncio.ensure_future(gate(task("abcdef111111")))
        two = asyncio.ensure_future(gate(task("abcdef222222")))
        await asyncio.sleep(0)
        for decide in ("approve", "deny"):
            not_found(decide, "abcdef", "matches 2 waiting tasks")
        one.cancel()  # its deadline passed: the desk hears of it a loop turn later
        not_found("approve", "abcdef111111", "expired before a decision")
        with pytest.raises(asyncio.CancelledError):
            await one
        not_found("approve", "abcdef111111", "no task 'abcdef111111' is waiting")
        desk.approve("abcdef2")  # unique again
        not_found("deny", "abcdef222222", "decided already")
        assert await two is True

    asyncio.run(body())


def test_a_denial_without_a_reason_says_denied_and_a_reason_is_one_line() -> None:
    import time as _time

    desk = ApprovalDesk()
    gate = desk.gate("low")

    async def body() -> None:
        for task_id, reason, told in [
            ("aaaaaa1", "   ", "denied"),
            ("bbbbbb1", "", "denied"),
            ("cccccc1", "over\nthe  limit\n", "over the limit"),
        ]:
            task = Task(task_id, "pay", 1, _time.time() + 30, requester="r", risk="high")
            waiting = asyncio.ensure_future(gate(task))
            await asyncio.sleep(0)
            assert desk.deny(task_id, reason) == task_id
            assert await waiting == told

    asyncio.run(body())


def test_approve_at_in_node_toml(tmp_path: Path) -> None:
    from node.config import load_config

    base = '[node]\nname = "a"\nidentity = "a.key"\ncertificate = "a.cert"\ntrust = "t.toml"\n'
    cap = '[[capability]]\nname = "pay"\npython = "m:f"\n'
    p = tmp_path / "node.toml"
    p.write_text(base + cap + 'approve_at = "medium"\n')
    assert load_config(p).capabilities[0].approve_at == "medium"
    p.write_text(base + cap)
    assert load_config(p).capabilities[0].approve_at is None
    p.write_text(base + cap + 'approve_at = "scary"\n')
    with pytest.raises(ConfigError, match=r"capability\[0\]\.approve_at: 'scary' is not one of"):
        load_config(p)


def test_a_short_prefix_is_refused_and_a_re_award_of_a_denied_task_is_denied_again() -> None:
    import time as _time

    log: list[Decision] = []
    desk = ApprovalDesk(log.append)
    gate = desk.gate("medium")

    async def body() -> None:
        task = Task("abcdef123456", "pay", 1, _time.time() + 30, requester="r", risk="high")
        waiting = asyncio.ensure_future(gate(task))
        await asyncio.sleep(0)
        with pytest.raises(LocalProtocolError, match="at least 6 characters"):
            desk.approve("abc")
        desk.deny("abcdef", reason="no")
        assert await waiting == "no"
        again = Task("abcdef123456", "pay", 1, _time.time() + 30, requester="r", risk="high")
        assert await gate(again) == "no"  # not asked twice
        assert desk.pending() == []
        low = Task("zz", "pay", 1, _time.time() + 30, requester="r", risk="low")
        assert await gate(low) is True

    asyncio.run(body())
    assert [d.event for d in log] == ["requested", "denied", "denied"]
    assert log[-1].by == "(denied before)"


def test_a_denial_is_of_one_requester_s_task_and_shared_ids_are_told_apart() -> None:
    """Task ids are the requesters' choice (``task_id=``): Bob's task with the id of
    Alice's denied one used to be denied at once with Alice's reason, no person asked."""
    log: list[Decision] = []
    desk = ApprovalDesk(log.append)

    async def main() -> None:
        org = LocalOrg("acme")
        bank = Node.from_org(org, "bank", preset="local")

        @bank.capability("pay", approve=desk.gate("high"), max_concurrency=4)
        async def pay(task: Task) -> int:
            return int(task.input)

        async with bank:
            a, b, c = (
                Node.from_org(org, name, seeds=[bank.endpoint], preset="local")
                for name in ("alice", "bob", "carol")
            )
            async with a, b, c:
                for n in (a, b, c):
                    assert await n.wait_for_peers(1, timeout=10)

                def ask(n: Node, amount: int) -> asyncio.Future[Any]:
                    return asyncio.ensure_future(
                        n.request(
                            "pay",
                            amount,
                            risk="high",
                            timeout=10,
                            task_id="order-7-1",
                            max_auctions=1,
                        )
                    )

                ta = ask(a, 10)
                await _waiting(desk)
                desk.deny("order-7-1", "alice over budget", by="op")
                with pytest.raises(ContractNetError, match="alice over budget"):
                    await ta
                tb = ask(b, 20)
                (waiting,) = await _waiting(desk)  # Bob's waits for a person
                assert waiting["requester"] == b.node_id
                desk.approve("order-7-1", by="op")
                assert (await tb).value == 20
                tc = ask(c, 30)
                await _waiting(desk)  # and so does Carol's
                desk.deny("order-7-1", "still over", by="op")
                with pytest.raises(ContractNetError, match="still over"):
                    await tc

    asyncio.run(asyncio.wait_for(main(), 60))
    events = [(d.event, d.by, d.reason) for d in log]
    assert events == [
        ("requested", "", ""),
        ("denied", "op", "alice over budget"),
        ("requested", "", ""),
        ("approved", "op", ""),
        ("requested", "", ""),
        ("denied", "op", "still over"),
    ]


def test_a_task_waiting_for_approval_goes_back_at_once_when_its_node_stops() -> None:
    """It used to wait out the grace period; approved meanwhile, its handler was then
    refused by the stop (\"executor shutting down\") while the approval said it would
    run, and the stop counted it finished."""
    log: list[Decision] = []
    desk = ApprovalDesk(log.append)

    async def main() -> None:
        org = LocalOrg("acme")
        ran: list[int] = []
        executor = Node.from_org(org, "executor", preset="local", grace=5.0)

        @executor.capability("transfer", approve=desk.gate("high"))
        async def transfer(task: Task) -> int:
            ran.append(int(task.input))
            return int(task.input)

        await executor.start()
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            call = asyncio.ensure_future(
                requester.request("transfer", 5, timeout=10, risk="high", max_auctions=1)
            )
            (waiting,) = await _waiting(desk)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            out = await executor.stop()
            assert loop.time() - t0 < 2.0  # not the 5 s grace
            assert out == {"finished": 0, "handed_back": 1}
            with pytest.raises(LocalProtocolError, match="no task"):
                desk.approve(str(waiting["task_id"]))  # nothing to approve any more
            with pytest.raises(ContractNetError):
                await call
            assert ran == []

    asyncio.run(asyncio.wait_for(main(), 60))
    assert [(d.event, d.reason) for d in log] == [("requested", ""), ("withdrawn", "node stopping")]


def test_tasks_handed_back_by_a_stop_say_so_in_the_executor_s_views() -> None:
    """A task handed back by ``Node.stop()`` (one waiting for approval, one whose
    handler outlived the grace) kept its view "awaiting-approval" or "running" in
    ``node.tasks()`` after the stop, with no reason and no end time."""
    from mesh.events import TaskRunEnded

    desk = ApprovalDesk()
    ended: list[TaskRunEnded] = []

    async def main() -> None:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local", grace=0.3)
        executor.on_event(lambda ev: ended.append(ev) if isinstance(ev, TaskRunEnded) else None)

        @executor.capability("transfer", approve=desk.gate("high"))
        async def transfer(task: Task) -> int:
            return int(task.input)

        @executor.capability("slow")
        async def slow(task: Task) -> int:
            await asyncio.sleep(30)
            return 0

        await executor.start()
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            calls = [
                asyncio.ensure_future(
                    requester.request("transfer", 5, timeout=20, risk="high", max_auctions=1)
                ),
                asyncio.ensure_future(requester.request("slow", 1, timeout=20, max_auctions=1)),
            ]
            await _waiting(desk)
            for _ in range(500):
                if any(t["capability"] == "slow" for t in executor.tasks()):
                    break
                await asyncio.sleep(0.01)
            assert await executor.stop() == {"finished": 0, "handed_back": 2}
            views = {t["capability"]: t for t in executor.tasks() if t["role"] == "executor"}
            for call in calls:
                with pytest.raises(ContractNetError):
                    await call
        assert {c: v["state"] for c, v in views.items()} == {
            "transfer": "handed-back",
            "slow": "handed-back",
        }
        assert views["transfer"]["reason"] == (
            "node stopping: handed back undecided (it waited for a person's approval)"
        )
        assert re.fullmatch(  # the grace left after stop's own steps: 0.3 s or a hair less
            r"node stopping: handed back unfinished after the 0\.[0-9]+ s grace period",
            views["slow"]["reason"],
        ), views["slow"]["reason"]
        assert all(v["finished_at"] is not None for v in views.values())
        # and each run has its end event (an audit log had no end line for them)
        assert sorted((e.capability, e.ok) for e in ended) == [
            ("slow", False),
            ("transfer", False),
        ]
        assert {e.capability: e.reason for e in ended} == {c: v["reason"] for c, v in views.items()}

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("decide", ["approve", "deny"])
def test_a_short_prefix_matching_nothing_is_called_too_short_not_unknown(decide: str) -> None:
    """``desk.approve("a519")`` with nothing waiting under it said "no task 'a519' is
    waiting", as if the id were wrong: the length was checked after the lookup."""
    import time as _time

    desk = ApprovalDesk()
    gate = desk.gate("low")

    async def body() -> None:
        task = Task("abcdef123456", "pay", 1, _time.time() + 30, requester="r", risk="high")
        waiting = asyncio.ensure_future(gate(task))
        await asyncio.sleep(0)
        for short in ("a519", "abc"):  # matching nothing, and matching the waiting task
            with pytest.raises(LocalProtocolError) as info:
                getattr(desk, decide)(short)
            assert str(info.value) == (
                f"task id prefix {short!r} is too short: give at least 6 characters of it"
            )
            assert info.value.code == "local-misuse"
        with pytest.raises(LocalProtocolError, match="no task 'zzzzzz' is waiting") as info:
            getattr(desk, decide)("zzzzzz")
        assert info.value.code == "not-found"
        desk.approve("abcdef")
        assert await waiting is True

    asyncio.run(body())


def test_a_task_its_requester_cancels_while_it_waits_is_withdrawn_not_expired() -> None:
    """The desk (and so the audit log) said ``expired`` for a task whose requester gave
    it up long before its deadline."""
    log: list[Decision] = []
    desk = ApprovalDesk(log.append)

    async def body(requester: Node, ran: list[int]) -> None:
        task_id, fut = requester.submit_nowait("transfer", 6, timeout=30, risk="high")
        await _waiting(desk)
        assert requester.cancel(task_id)
        with pytest.raises(ContractNetError):
            await fut
        for _ in range(500):
            if not desk.pending():
                break
            await asyncio.sleep(0.01)
        assert desk.pending() == [] and ran == []

    asyncio.run(asyncio.wait_for(_mesh(desk, body), 60))
    assert [(d.event, d.reason) for d in log] == [
        ("requested", ""),
        ("withdrawn", "cancelled by its requester"),
    ]


def test_the_executor_s_task_view_shows_the_wait_the_risk_and_why_it_failed() -> None:
    """``tasks()`` on the executor said ``running``, risk ``low``, for a critical task
    waiting for a person, and ``failed`` with no reason once denied."""
    desk = ApprovalDesk()

    async def main() -> None:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local")

        @executor.capability("transfer", approve=desk.gate("high"))
        async def transfer(task: Task) -> int:
            return int(task.input)

        async with executor:
            requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
            async with requester:
                assert await requester.wait_for_peers(1, timeout=10)
                call = asyncio.ensure_future(
                    requester.request("transfer", 7, timeout=10, risk="critical", max_auctions=1)
                )
                (waiting,) = await _waiting(desk)
                (view,) = executor.tasks()
                assert (view["state"], view["risk"]) == ("awaiting-approval", "critical")
                desk.deny(str(waiting["task_id"]), "too much")
                with pytest.raises(ContractNetError, match="not approved: too much"):
                    await call
                (view,) = executor.tasks()
                assert (view["state"], view["reason"]) == ("failed", "not approved: too much")

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_task_left_waiting_past_its_deadline_is_not_said_to_have_missed_it() -> None:
    """Its run ended "handler missed the deadline" (``TaskRunEnded``, the audit log),
    though no handler ran: nobody had decided."""
    from mesh.events import TaskRunEnded

    log: list[Decision] = []
    desk = ApprovalDesk(log.append)
    ended: list[TaskRunEnded] = []

    async def main() -> None:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local")
        executor.on_event(lambda ev: ended.append(ev) if isinstance(ev, TaskRunEnded) else None)
        ran: list[int] = []

        @executor.capability("transfer", approve=desk.gate("high"), eta=0.05)
        async def transfer(task: Task) -> int:
            ran.append(int(task.input))
            return int(task.input)

        async with executor:
            requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
            async with requester:
                assert await requester.wait_for_peers(1, timeout=10)
                with pytest.raises(ContractNetError):
                    await requester.request("transfer", 8, timeout=1.0, risk="high", max_auctions=1)
                for _ in range(1000):  # bounded: 10 s, for a loaded machine
                    if ended:
                        break
                    await asyncio.sleep(0.01)
                assert ran == []
                (view,) = executor.tasks()
                assert view["state"] == "failed"

    asyncio.run(asyncio.wait_for(main(), 60))
    assert [d.event for d in log] == ["requested", "expired"]
    (ev,) = ended
    assert ev.reason == "no approval before the deadline (the handler never ran)"


def test_a_plain_def_approver_runs_and_a_non_callable_one_is_refused() -> None:
    """A plain ``def`` approver failed every task with "TypeError: object bool can't be
    used in 'await' expression", blamed on the handler; ``approve="high"`` (meaning
    ``approve_at``) failed every task the same way instead of at once."""
    org = LocalOrg("acme")
    with pytest.raises(ConfigError, match=r"approve is a function such as .*not 'high'"):
        Node.from_org(org, "x").add_capability("pay", lambda t: 1, approve="high")  # type: ignore

    async def main() -> None:
        executor = Node.from_org(org, "executor", preset="local")

        def only_small(task: Task) -> bool | str:
            return True if int(task.input) < 100 else "too large"

        @executor.capability("pay", approve=only_small)
        async def pay(task: Task) -> int:
            return int(task.input)

        async with executor:
            requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
            async with requester:
                assert await requester.wait_for_peers(1, timeout=10)
                assert (await requester.request("pay", 5, timeout=10)).value == 5
                with pytest.raises(ContractNetError, match="not approved: too large"):
                    await requester.request("pay", 500, timeout=10, max_auctions=1)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_requester_learns_that_its_task_waits_for_a_person() -> None:
    """A request that timed out while its executor waited for a decision said only
    "timeout": the requester could not tell a held task from a lost one. The executor
    now reports the wait as progress, and the timeout names it."""
    desk = ApprovalDesk()

    async def body(requester: Node, ran: list[int]) -> None:
        pending = asyncio.ensure_future(
            requester.request("transfer", 3, timeout=1.5, risk="high", max_auctions=1)
        )
        await _waiting(desk)
        for _ in range(200):  # bounded: the progress frame is on its way
            views = [v for v in requester.tasks() if v["progress_message"]]
            if views:
                break
            await asyncio.sleep(0.01)
        assert views[0]["progress_message"] == "waiting for a person's approval (risk high)"
        with pytest.raises(ContractNetError) as caught:
            await pending
        assert caught.value.code == "timeout"
        assert "its executor was waiting for a person's approval" in caught.value.message
        assert ran == []

    asyncio.run(asyncio.wait_for(_mesh(desk, body), 60))
