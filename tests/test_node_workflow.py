"""Workflows on real nodes: fan a job out and compose it back; a saga across agents
that is undone, newest step first, when a later step fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node import HandlerFailed, LocalOrg, Node, Saga, SagaFailed, Task, fan_out
from protocols.errors import LocalProtocolError


async def _mesh(body: Callable[[Node, dict[str, Any]], Awaitable[None]]) -> None:
    org = LocalOrg("acme")
    ledger: dict[str, Any] = {"rooms": set(), "charged": [], "log": [], "undo_ids": []}
    hotel = Node.from_org(org, "hotel", preset="local")
    bank = Node.from_org(org, "bank", preset="local")

    @hotel.capability("reserve_room", max_concurrency=4)
    async def reserve(task: Task) -> dict[str, str]:
        room = f"room-{task.input['guest']}"
        ledger["rooms"].add(room)
        ledger["log"].append(f"reserve {room}")
        return {"room": room}

    @hotel.capability("cancel_room", max_concurrency=4)
    async def cancel(task: Task) -> bool:
        ledger["undo_ids"].append(task.task_id)
        ledger["rooms"].discard(task.input["room"])
        ledger["log"].append(f"cancel {task.input['room']}")
        return True

    @hotel.capability("cancel_room_slowly", max_concurrency=4)
    async def cancel_slowly(task: Task) -> bool:
        await asyncio.sleep(0.5)
        ledger["rooms"].discard(task.input["room"])
        ledger["log"].append(f"cancel {task.input['room']}")
        return True

    @hotel.capability("slow_reserve", max_concurrency=4)
    async def slow_reserve(task: Task) -> dict[str, str]:
        room = f"room-{task.input['guest']}"
        ledger["rooms"].add(room)
        ledger["log"].append(f"reserve {room}")
        await asyncio.sleep(task.input["sleep"])
        return {"room": room}

    @hotel.capability("cancel_broken", max_concurrency=4)
    async def cancel_broken(task: Task) -> bool:
        ledger["undo_ids"].append(task.task_id)
        raise HandlerFailed("hotel system down", retry=False)

    @bank.capability("refund", max_concurrency=4)
    async def refund(task: Task) -> bool:
        ledger["charged"].remove(task.input)
        ledger["log"].append(f"refund {task.input}")
        return True

    @bank.capability("slow", max_concurrency=4)
    async def slow(task: Task) -> str:
        await asyncio.sleep(task.input)
        return "slow"

    @bank.capability("charge", max_concurrency=4)
    async def charge(task: Task) -> int:
        if task.input > 100:
            raise HandlerFailed("card declined")
        ledger["charged"].append(task.input)
        return int(task.input)

    @bank.capability("words", max_concurrency=4)
    async def words(task: Task) -> int:
        await asyncio.sleep(0.01)
        return len(str(task.input).split())

    async with hotel, bank:
        client = Node.from_org(org, "client", seeds=[hotel.endpoint, bank.endpoint], preset="local")
        async with client:
            assert await client.wait_for_peers(2, timeout=10)
            await body(client, ledger)


def test_fan_out_runs_every_input_and_composes_the_results_in_order() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        chunks = [" ".join(["w"] * n) for n in range(1, 13)]
        results = await fan_out(client, "words", chunks, concurrency=4, timeout=10)
        assert [r.value for r in results] == list(range(1, 13))
        assert sum(r.value for r in results) == 78  # composed back

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_saga_that_completes_keeps_every_step() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        async with Saga(client) as saga:
            room = await saga.step("reserve_room", {"guest": "ada"}, compensate="cancel_room")
            paid = await saga.step("charge", 80)
        assert room == {"room": "room-ada"} and paid == 80
        assert ledger["rooms"] == {"room-ada"} and ledger["charged"] == [80]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_failed_step_undoes_the_steps_before_it() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "bob"}, compensate="cancel_room")
                await saga.step("charge", 500)  # declined
        err = info.value
        assert err.failed_step == "2:charge" and err.compensated == ("1:reserve_room",)
        assert err.unrecovered == () and "card declined" in err.message
        assert ledger["rooms"] == set() and ledger["charged"] == []
        assert ledger["log"] == ["reserve room-bob", "cancel room-bob"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_nested_saga_that_fails_undoes_the_outer_sagas_steps_too() -> None:
    """An inner saga's SagaFailed passed through the outer block as the outer saga's
    own failure, so the outer saga's completed steps were never undone."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as outer:
                await outer.step("reserve_room", {"guest": "eve"}, compensate="cancel_room")
                async with Saga(client) as inner:
                    await inner.step("charge", 500, max_auctions=1)  # declined
        err = info.value
        assert err.saga_id == outer.saga_id and err.compensated == ("1:reserve_room",)
        assert "card declined" in err.message
        assert ledger["rooms"] == set()
        assert ledger["log"] == ["reserve room-eve", "cancel room-eve"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_an_error_in_the_block_between_steps_undoes_them_too() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "cy"}, compensate="cancel_room")
                raise RuntimeError("the price changed")
        assert "the price changed" in info.value.message
        assert info.value.compensated == ("1:reserve_room",)
        assert ledger["rooms"] == set()

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_compensation_that_fails_is_reported_as_not_undone() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client, timeout=10) as saga:
                await saga.step("reserve_room", {"guest": "dee"}, compensate="cancel_room")
                await saga.step("charge", 10, compensate="void_charge")  # nobody offers it
                await saga.step("charge", 999)
        err = info.value
        assert err.compensated == ("1:reserve_room",) and err.unrecovered == ("2:charge",)
        assert "NOT undone: 2:charge" in err.message
        assert ledger["rooms"] == set() and ledger["charged"] == [10]  # a person must refund

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_cancelled_saga_still_undoes_its_steps() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        async def trip() -> None:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "eve"}, compensate="cancel_room")
                await asyncio.sleep(30)  # waiting for something that never comes

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await trip()
        for _ in range(200):  # the compensation runs in a task of its own
            if ledger["rooms"] == set():
                break
            await asyncio.sleep(0.02)
        assert ledger["log"] == ["reserve room-eve", "cancel room-eve"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_saga_cancelled_while_it_undoes_its_steps_still_undoes_them_all() -> None:
    """The caller's timeout fires during the compensations (each takes 0.5 s): it
    used to stop them, leaving the older reservations in place with no report."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        async def trip() -> None:
            async with Saga(client) as saga:
                for guest in ("eve", "bob"):
                    room = {"guest": guest}
                    await saga.step("reserve_room", room, compensate="cancel_room_slowly")
                await saga.step("charge", 500)  # declined: undo both rooms

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await trip()
        for _ in range(200):  # bounded: the compensations go on in a task of their own
            if ledger["rooms"] == set():
                break
            await asyncio.sleep(0.02)
        assert ledger["log"] == [
            "reserve room-eve",
            "reserve room-bob",
            "cancel room-bob",
            "cancel room-eve",
        ]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_step_whose_undo_cannot_be_built_is_reported_not_undone() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "fay"}, compensate="cancel_room")
                await saga.step("charge", 20, compensate="refund", compensate_input=lambda v: 1 / 0)
        err = info.value
        assert err.failed_step == "2:charge" and "ZeroDivisionError" in err.message
        assert err.compensated == ("1:reserve_room",) and err.unrecovered == ("2:charge",)

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)


def test_a_node_stopping_after_a_timeout_around_a_saga_undoes_its_steps_first() -> None:
    """The program catches the timeout and leaves `async with node`: the compensations
    running in their own task used to be dropped by the stop, with nothing logged."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                async with Saga(client) as saga:
                    await saga.step(
                        "reserve_room", {"guest": "mo"}, compensate="cancel_room_slowly"
                    )
                    await saga.step("slow", 30)
        await client.stop()  # the client leaves at once
        assert ledger["rooms"] == set()
        assert ledger["log"] == ["reserve room-mo", "cancel room-mo"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_node_stopping_before_its_compensations_end_logs_what_is_not_undone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                async with Saga(client, saga_id="trip-mo") as saga:
                    await saga.step(
                        "reserve_room", {"guest": "mo"}, compensate="cancel_room_slowly"
                    )
                    await saga.step("slow", 30)
        await client.stop(grace=0)  # no time to wait for the compensation
        await _until(lambda: "1:reserve_room" in saga.unrecovered)

    with caplog.at_level(logging.ERROR, logger="parley.workflow"):
        asyncio.run(asyncio.wait_for(_mesh(body), 60))
    lines = [r.getMessage() for r in caplog.records if r.name == "parley.workflow"]
    assert any("trip-mo" in ln and "NOT undone yet: 1:reserve_room" in ln for ln in lines), lines


def test_a_compensation_failing_after_a_timeout_is_logged_and_kept_on_the_saga(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        saga = Saga(client, saga_id="trip-ivy", timeout=10)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0), saga:
                await saga.step("reserve_room", {"guest": "ivy"}, compensate="cancel_broken")
                await saga.step("slow", 30)
        await _until(lambda: saga.unrecovered != ())
        assert saga.unrecovered == ("1:reserve_room",) and saga.compensated == ()
        assert ledger["rooms"] == {"room-ivy"}  # a person must cancel it: they are told

    with caplog.at_level(logging.ERROR, logger="parley.workflow"):
        asyncio.run(asyncio.wait_for(_mesh(body), 60))
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "parley.workflow" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 1 and "trip-ivy" in errors[0] and "1:reserve_room" in errors[0]


def test_a_parallel_step_that_completes_after_another_failed_is_undone_and_reported() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client, timeout=10) as saga:
                await asyncio.gather(
                    saga.step(
                        "slow_reserve", {"guest": "nia", "sleep": 0.5}, compensate="cancel_room"
                    ),
                    saga.step("charge", 500, max_auctions=1),  # declined at once
                )
        err = info.value
        assert err.failed_step == "2:charge" and err.compensated == ("1:slow_reserve",)
        assert ledger["rooms"] == set()
        assert ledger["log"] == ["reserve room-nia", "cancel room-nia"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_step_completing_after_its_failed_saga_gave_up_waiting_undoes_itself() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        saga = Saga(client, timeout=2.0)  # the failure waits that long for running steps
        with pytest.raises(SagaFailed) as info:
            async with saga:
                slow = asyncio.ensure_future(
                    saga.step(
                        "slow_reserve",
                        {"guest": "liv", "sleep": 3.0},
                        compensate="cancel_room",
                        timeout=10,
                    )
                )
                await asyncio.sleep(0)  # it is step 1
                await saga.step("charge", 500, max_auctions=1)
        assert info.value.failed_step == "2:charge" and info.value.compensated == ()
        with pytest.raises(SagaFailed) as late:
            await asyncio.wait_for(slow, 10)
        assert late.value.compensated == ("1:slow_reserve",) and late.value.unrecovered == ()
        assert saga.compensated == ("1:slow_reserve",)
        assert ledger["rooms"] == set()

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_nested_saga_that_completed_is_undone_when_the_outer_saga_fails() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as outer:
                await outer.step("reserve_room", {"guest": "kai"}, compensate="cancel_room")
                async with Saga(client) as inner:
                    await inner.step("charge", 20, compensate="refund")
                await outer.step("charge", 500, max_auctions=1)  # declined
        err = info.value
        assert err.failed_step == "2:charge"
        assert err.compensated == (f"{inner.saga_id}/1:charge", "1:reserve_room")
        assert ledger["rooms"] == set() and ledger["charged"] == []
        assert ledger["log"] == ["reserve room-kai", "refund 20", "cancel room-kai"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_nested_saga_given_the_outer_sagas_id_is_refused_and_the_outer_undone() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client, saga_id="order-7") as outer:
                await outer.step("reserve_room", {"guest": "quin"}, compensate="cancel_room")
                async with Saga(client, saga_id="order-7") as inner:
                    await inner.step("charge", 10, compensate="refund")
        err = info.value
        assert err.saga_id == "order-7" and "in use" in err.message
        assert err.compensated == ("1:reserve_room",)
        assert ledger["rooms"] == set() and ledger["charged"] == []
        async with Saga(client, saga_id="dup"):
            with pytest.raises(LocalProtocolError, match="'dup' is in use"):
                await Saga(client, saga_id="dup").__aenter__()
        async with Saga(client, saga_id="dup"):  # free again once the first one ended
            pass

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_step_failing_locally_is_named_as_the_failed_step() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "dot"}, compensate="cancel_room")
                await saga.step("charge", {1, 2})  # a set cannot be encoded
        err = info.value
        assert err.failed_step == "2:charge" and "cannot be encoded" in err.message
        assert err.compensated == ("1:reserve_room",) and ledger["rooms"] == set()

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_failed_nested_saga_names_its_failed_step_and_what_it_undid() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client) as outer:
                await outer.step("reserve_room", {"guest": "jo"}, compensate="cancel_room")
                async with Saga(client) as inner:
                    await inner.step("charge", 10, compensate="refund")
                    await inner.step("charge", 500, max_auctions=1)  # declined
        err = info.value
        assert err.saga_id == outer.saga_id
        assert err.failed_step == f"{inner.saga_id}/2:charge"
        assert err.compensated == (f"{inner.saga_id}/1:charge", "1:reserve_room")
        assert ledger["rooms"] == set() and ledger["charged"] == []

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_undo_task_ids_carry_the_number_of_the_step_they_undo() -> None:
    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(SagaFailed) as info:
            async with Saga(client, saga_id="trip-pia") as saga:
                await saga.step("reserve_room", {"guest": "p1"}, compensate="cancel_room")
                await saga.step("charge", 5)  # nothing to undo
                await saga.step("reserve_room", {"guest": "p3"}, compensate="cancel_broken")
                await saga.step("charge", 500, max_auctions=1)
        assert info.value.unrecovered == ("3:reserve_room",)
        assert "NOT undone: 3:reserve_room" in info.value.message
        assert ledger["undo_ids"] == ["trip-pia-undo-3", "trip-pia-undo-1"]
        assert saga.unrecovered == ("3:reserve_room",)

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_saga_id_too_long_for_its_compensations_task_ids_is_refused() -> None:
    """A 58-character id ran its steps (``<id>-1`` fits a 64-character task id) and no
    compensation (``<id>-undo-1`` does not): a failed saga undid nothing."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(LocalProtocolError, match="saga id"):
            Saga(client, saga_id="x" * 58)
        with pytest.raises(SagaFailed) as info:
            async with Saga(client, saga_id="y" * 48) as saga:
                await saga.step("reserve_room", {"guest": "lu"}, compensate="cancel_room")
                await saga.step("charge", 500, max_auctions=1)  # declined
        assert info.value.compensated == ("1:reserve_room",)
        assert ledger["rooms"] == set()

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_a_node_stopped_while_a_saga_step_runs_undoes_the_completed_steps() -> None:
    """The stop failed the step in flight as it closed the node, and every
    compensation with it ("node is stopped"): the room stayed reserved."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        async def trip() -> None:
            async with Saga(client) as saga:
                await saga.step("reserve_room", {"guest": "zo"}, compensate="cancel_room")
                await saga.step("slow", 30)

        running = asyncio.ensure_future(trip())
        await _until(lambda: ledger["rooms"] == {"room-zo"})
        await client.stop()
        with pytest.raises(SagaFailed) as info:
            await asyncio.wait_for(running, 10)
        assert info.value.failed_step == "2:slow" and "node is stopping" in info.value.message
        assert info.value.compensated == ("1:reserve_room",) and info.value.unrecovered == ()
        assert ledger["rooms"] == set()
        assert ledger["log"] == ["reserve room-zo", "cancel room-zo"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))


def test_parallel_steps_in_a_task_group_fail_with_an_exception_group_of_saga_failed() -> None:
    """As the docs say: under ``asyncio.gather`` the failure arrives as ``SagaFailed``,
    under ``asyncio.TaskGroup`` as an ``ExceptionGroup`` of it (``except* SagaFailed``);
    either way the completed parallel step is undone."""

    async def body(client: Node, ledger: dict[str, Any]) -> None:
        with pytest.raises(ExceptionGroup) as info:
            async with Saga(client, timeout=10) as saga, asyncio.TaskGroup() as group:
                group.create_task(
                    saga.step(
                        "slow_reserve", {"guest": "ola", "sleep": 0.5}, compensate="cancel_room"
                    )
                )
                group.create_task(saga.step("charge", 500, max_auctions=1))  # declined
        failed, rest = info.value.split(SagaFailed)
        assert rest is None and failed is not None
        assert all(isinstance(e, SagaFailed) for e in failed.exceptions)
        assert any(e.failed_step == "2:charge" for e in failed.exceptions)  # type: ignore[attr-defined]
        await _until(lambda: ledger["rooms"] == set())
        assert ledger["log"] == ["reserve room-ola", "cancel room-ola"]

    asyncio.run(asyncio.wait_for(_mesh(body), 60))
