"""Workflows on real nodes: fan a job out and compose it back; a saga across agents
that is undone, newest step first, when a later step fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node import LocalOrg, Node, Saga, SagaFailed, Task, fan_out


async def _mesh(body: Callable[[Node, dict[str, Any]], Awaitable[None]]) -> None:
    org = LocalOrg("acme")
    ledger: dict[str, Any] = {"rooms": set(), "charged": [], "log": []}
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
        ledger["rooms"].discard(task.input["room"])
        ledger["log"].append(f"cancel {task.input['room']}")
        return True

    @hotel.capability("cancel_room_slowly", max_concurrency=4)
    async def cancel_slowly(task: Task) -> bool:
        await asyncio.sleep(0.5)
        ledger["rooms"].discard(task.input["room"])
        ledger["log"].append(f"cancel {task.input['room']}")
        return True

    @bank.capability("charge", max_concurrency=4)
    async def charge(task: Task) -> int:
        if task.input > 100:
            from node import HandlerFailed

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
                await saga.step("charge", 10, compensate="refund")  # nobody offers refund
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
