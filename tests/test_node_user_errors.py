"""Mistakes a user makes first get answers in the user's terms: a request nobody
could be invited to says why, and an endpoint that peers could not dial is refused
when the node is made. (A lone node asking for a capability it offers runs the task
itself: the local fallback.)"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from node import Node, Task
from node.api import LocalOrg
from node.handlers import HandlerFailed
from protocols.errors import ConfigError, ContractNetError, LocalProtocolError


async def _lone_node_requests(capability: str) -> tuple[ContractNetError, str]:
    node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

    @node.capability("upper")
    async def upper(task: Task) -> str:
        return str(task.input).upper()

    async with node:
        with pytest.raises(ContractNetError) as caught:
            await node.request(capability, "hi", timeout=10)
        (view,) = [t for t in node.tasks() if t["capability"] == capability]
        return caught.value, view["reason"]


def test_a_lone_node_asking_for_its_own_capability_runs_it_itself() -> None:
    async def main() -> tuple[Any, list[dict[str, Any]]]:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("upper")
        async def upper(task: Task) -> str:
            return str(task.input).upper()

        async with node:
            result = await node.request("upper", "hi", timeout=10)
            assert result.executor == node.node_id
            return result, node.tasks()

    result, tasks = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.value == "HI"
    # Both views of the task: as requested here (with its award) and as run here.
    views = {t["role"]: t for t in tasks if t["capability"] == "upper"}
    assert views["requester"]["state"] == "completed" and views["requester"]["decisions"]
    assert views["executor"]["state"] == "done"


def test_a_lone_node_whose_own_run_failed_reports_the_failure() -> None:
    async def main() -> ContractNetError:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("upper")
        async def upper(task: Task) -> str:
            raise HandlerFailed("the model is down")

        async with node:
            with pytest.raises(ContractNetError) as caught:
                await node.request("upper", "hi", timeout=10)
            return caught.value

    err = asyncio.run(asyncio.wait_for(main(), 30))
    assert err.message == "attempts exhausted: failure: the model is down"
    assert err.attempts and all("failure: the model is down" in a for a in err.attempts)


def test_a_lone_node_that_cannot_run_its_own_request_says_why() -> None:
    async def main() -> ContractNetError:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("upper", version="1.0")
        async def upper(task: Task) -> str:
            return "never"

        async with node:
            with pytest.raises(ContractNetError) as caught:
                await node.request("upper", "hi", timeout=10, version_spec=">=2")
            return caught.value

    err = asyncio.run(asyncio.wait_for(main(), 30))
    assert "no other node offers 'upper' (0 peer(s) known)" in err.message
    assert "could not run it itself" in err.message
    assert err.attempts and all("0 invited" in a for a in err.attempts)


def test_a_capability_no_known_peer_offers_is_named() -> None:
    err, _ = asyncio.run(asyncio.wait_for(_lone_node_requests("translate"), 30))
    assert "no known peer offers 'translate' in a matching version (0 peer(s) known)" in (
        err.message
    )
    assert "itself" not in err.message


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"seeds": ["127.0.0.1:7001"]}, "127.0.0.1:7001"),
        ({"advertise": "tcp://*:7001"}, "not an address peers can dial"),
        ({"advertise": "tcp://0.0.0.0:7001"}, "not an address peers can dial"),
        ({"listen": "tcp://0.0.0.0:*"}, "binds every interface: give advertise"),
        ({"listen": "tcp://127.0.0.1:99999"}, "is not tcp://host:port"),
    ],
)
def test_an_endpoint_peers_could_not_dial_is_refused_when_the_node_is_made(
    kwargs: dict[str, object], bad: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Node.from_org(LocalOrg("acme"), "n", **kwargs)
    assert bad in caught.value.message


async def _ask(handler: object) -> Any:
    """One request from a second node to a node serving ``handler`` as "x": the
    Result, or the ContractNetError it raised."""
    org = LocalOrg("acme")
    executor = Node.from_org(org, "executor", preset="local")
    executor.add_capability("x", handler)  # type: ignore[arg-type]
    async with executor:
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            try:
                return await requester.request("x", 1, timeout=20)
            except ContractNetError as exc:
                return exc


async def _a_set(task: Task) -> object:
    return {1, 2}


async def _too_big(task: Task) -> object:
    return "x" * 300_000


async def _long_failure(task: Task) -> object:
    raise HandlerFailed("cannot start /nonexistent/tool: No such file or directory " + "x" * 150)


async def _int_keys(task: Task) -> object:
    return {3: "three", 5: "words"}


async def _too_deep(task: Task) -> object:
    deep: list[object] = []
    for _ in range(40):
        deep = [deep]
    return deep


async def _bad_progress(task: Task) -> object:
    task.progress(150)
    return 1


@pytest.mark.parametrize(
    ("handler", "says"),
    [
        (_a_set, "result cannot be encoded: can not serialize 'set' object"),
        (_too_big, "result of 300,005 bytes is over the 258,048-byte limit of a frame"),
        (_long_failure, "cannot start /nonexistent/tool: No such file or directory xxx"),
        (_bad_progress, "LocalProtocolError: progress percent must be 0 to 100, not 150"),
        (_int_keys, "result would be refused by the receiver (not valid msgpack: ValueError)"),
        (_too_deep, "result would be refused by the receiver (nested deeper than 32 levels)"),
    ],
)
def test_a_handler_mistake_fails_the_request_at_once_saying_what_it_was(
    handler: object, says: str
) -> None:
    """Each of these used to leave the requester waiting for the lease to run out,
    award after award, and end in 'timeout' or 'lease-expired' with no word of why."""
    err = asyncio.run(asyncio.wait_for(_ask(handler), 60))
    assert isinstance(err, ContractNetError), err
    assert says in err.message
    if says.startswith("result"):  # no retry can carry it: a final failure, tried once
        assert err.code == "task-failed" and len(err.attempts) == 1, err
    else:
        assert err.code == "attempts-exhausted" and len(err.attempts) == 3, err
    assert not any("lease-expired" in a or "timeout" in a for a in err.attempts)
    assert "\n" not in err.message


def test_a_long_progress_message_is_cut_not_an_error() -> None:
    async def chatty(task: Task) -> int:
        task.progress(50, "m" * 1000)
        return 7

    result = asyncio.run(asyncio.wait_for(_ask(chatty), 60))
    assert not isinstance(result, ContractNetError), result
    assert result.value == 7


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("y" * 300_000, "input of 300,005 bytes is over the 258,048-byte limit of a frame"),
        ({1, 2}, "input cannot be encoded: can not serialize 'set' object"),
        ({1: "x"}, "input would be refused by the receiver (not valid msgpack: ValueError)"),
    ],
)
def test_an_input_no_cfp_could_carry_is_refused_at_once(value: object, says: str) -> None:
    async def run() -> LocalProtocolError:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")
        async with node:
            with pytest.raises(LocalProtocolError) as caught:
                await node.request("x", value, timeout=10)
            assert not node.tasks()  # nothing was started
            return caught.value

    err = asyncio.run(asyncio.wait_for(run(), 30))
    assert err.code == "bad-input" and says in err.message


def test_a_stopped_node_says_so_when_started_again() -> None:
    async def run() -> str:
        node = Node.from_org(LocalOrg("acme"), "once", preset="local")
        async with node:
            with pytest.raises(LocalProtocolError, match="node already started"):
                await node.start()
        with pytest.raises(LocalProtocolError) as caught:
            await node.start()
        return caught.value.message

    said = asyncio.run(asyncio.wait_for(run(), 30))
    assert said == "this node was stopped and cannot start again: make a new Node"


def test_a_handler_calling_sys_exit_fails_its_task_not_the_node() -> None:
    async def run() -> tuple[ContractNetError, object]:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local")

        @executor.capability("quit")
        async def quit_(task: Task) -> object:
            sys.exit(3)

        @executor.capability("echo")
        async def echo(task: Task) -> object:
            return task.input

        async with executor:
            req = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
            async with req:
                assert await req.wait_for_peers(1, timeout=10)
                with pytest.raises(ContractNetError) as caught:
                    await req.request("quit", 1, timeout=20)
                still = await req.request("echo", "still here", timeout=20)
                return caught.value, still.value

    err, still = asyncio.run(asyncio.wait_for(run(), 60))
    assert "SystemExit: 3" in err.message
    assert still == "still here"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_concurrency": 0}, "max_concurrency 1 to 10000, not 0"),
        ({"bid": float("nan")}, "bid must be a finite number >= 0, not nan"),
        ({"bid": -5.0}, "bid must be a finite number >= 0, not -5.0"),
        ({"version": "banana"}, "version 'banana' is not like 1, 1.2 or 1.2.3"),
    ],
)
def test_a_capability_no_record_could_carry_is_refused_when_declared(
    options: dict[str, object], says: str
) -> None:
    node = Node.from_org(LocalOrg("acme"), "n", preset="local")
    with pytest.raises(ConfigError) as caught:
        node.add_capability("x", _a_set, **options)  # type: ignore[arg-type]
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"risk": 5}, "TaskSpec.risk"),
        ({"task_id": "t" * 65}, "TaskSpec.task_id: 1 to 64 characters"),
        ({"version_spec": "1" * 65}, "TaskSpec.version_spec"),
    ],
)
def test_a_request_option_no_cfp_could_carry_is_refused_and_leaves_nothing_behind(
    options: dict[str, object], says: str
) -> None:
    """These used to raise a pydantic error from deep in the core after the task was
    registered: retrying with the same task id said 'already submitted'."""

    async def run() -> tuple[str, int]:
        node = Node.from_org(LocalOrg("acme"), "n", preset="local")
        async with node:
            with pytest.raises(LocalProtocolError) as caught:
                await node.request("x", 1, timeout=5, **options)  # type: ignore[arg-type]
            assert node.runtime is not None
            return caught.value.message, node.runtime.core.contracts.live_tasks()

    message, live = asyncio.run(asyncio.wait_for(run(), 30))
    assert says in message and live == 0


def _node_with(
    cert_kw: dict[str, Any], trust_org: LocalOrg | None = None, org: LocalOrg | None = None
) -> Node:
    import os
    import time

    from protocols.identity import NodeIdentity
    from protocols.trust import TrustStore, issue_certificate

    org = org or LocalOrg("acme")
    ident = NodeIdentity.from_seed(os.urandom(32))
    now = time.time()
    fields: dict[str, Any] = {"not_before": now - 60, "not_after": now + 86400, **cert_kw}
    cert = issue_certificate(org.signer, "acme", ident.public_key, "n1", **fields)
    trust = TrustStore([(trust_org or org).policy()])
    return Node(ident, cert, trust, preset="local")


def test_a_certificate_peers_would_refuse_stops_the_node_at_start() -> None:
    """A node whose certificate is past its date, or signed by another root than the
    trust store's for its org name, used to start and then be dropped by every peer."""
    import time

    async def start(node: Node) -> None:
        await node.start()

    expired = _node_with({"not_before": time.time() - 7200, "not_after": time.time() - 3600})
    with pytest.raises(ConfigError, match=r"the certificate expired at .*: issue a new one"):
        asyncio.run(start(expired))
    impostor = _node_with({}, trust_org=LocalOrg("acme"))  # same name, another root key
    with pytest.raises(ConfigError, match="signed by another key than that org's root"):
        asyncio.run(start(impostor))
    from protocols.crypto import Ed25519Verifier
    from protocols.trust import issue_revocation, parse_revocation

    org = LocalOrg("acme")
    revoked = _node_with({}, org=org)
    rev = issue_revocation(org.signer, "acme", 1, [revoked.node_id], now=time.time())
    revoked.trust.apply_revocation(parse_revocation(rev, Ed25519Verifier()))
    with pytest.raises(ConfigError, match="on org 'acme''s revocation list"):
        asyncio.run(start(revoked))


def test_a_capability_or_request_the_certificate_does_not_allow_is_refused_here() -> None:
    """Peers ignore an offer the certificate does not allow and refuse such a request;
    the node says so itself, at once, naming what the certificate allows."""
    node = _node_with({"offers": ("upper",), "requests": ("echo",)})
    with pytest.raises(
        ConfigError, match=r"'slow': .*does not allow offering it \(its offers: upper\)"
    ):
        node.add_capability("slow", lambda task: None)
    node.add_capability("upper", lambda task: None)

    async def main() -> None:
        async with node:
            with pytest.raises(LocalProtocolError) as caught:
                node.submit_nowait("pay", 1)
            assert caught.value.code == "not-permitted"
            assert "does not allow requesting 'pay' (its requests: echo)" in caught.value.message

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_no_bidder_hint_survives_a_short_timeout_and_bad_option_types_are_named() -> None:
    """With a timeout shorter than its auctions, the failure said only 'timeout'; an
    option of the wrong type said "'<' not supported between 'int' and 'str'"."""

    async def main() -> tuple[ContractNetError, list[str]]:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")
        async with node:
            with pytest.raises(ContractNetError) as caught:
                await node.request("nope", 1, timeout=1.5)
            said = []
            for bad in ({"timeout": "5"}, {"lease": None}, {"max_auctions": "3"}):
                with pytest.raises(LocalProtocolError) as wrong:
                    await node.request("nope", 1, **bad)
                said.append(wrong.value.message)
            return caught.value, said

    err, said = asyncio.run(asyncio.wait_for(main(), 30))
    assert "no known peer offers 'nope' in a matching version" in err.message
    assert said == [
        "TaskSpec.timeout must be a number, not '5'",
        "TaskSpec.lease must be a number, not None",
        "TaskSpec.max_auctions must be an integer, not '3'",
    ]


def test_a_timeout_shorter_than_the_expected_run_time_says_so() -> None:
    """Every bidder refused "deadline" and the error said only "attempts exhausted:
    no-bidders": a user with timeout=1 had nothing to go on."""

    async def main() -> ContractNetError:
        org = LocalOrg("acme")
        worker = Node.from_org(org, "worker", preset="local")

        @worker.capability("upper")
        async def upper(task: Task) -> str:
            return str(task.input).upper()

        async with worker:
            req = Node.from_org(org, "requester", seeds=[worker.endpoint], preset="local")
            async with req:
                assert await req.wait_for_peers(1, timeout=10)
                with pytest.raises(ContractNetError) as caught:
                    await req.request("upper", "a", timeout=0.8)
                assert (await req.request("upper", "a", timeout=3)).value == "A"
                return caught.value

    err = asyncio.run(asyncio.wait_for(main(), 30))
    assert err.code == "attempts-exhausted"
    assert "1 invited, 1 refused: deadline" in err.message
    assert "give a longer timeout" in err.message


def test_a_capability_declaring_a_small_eta_takes_requests_with_short_timeouts() -> None:
    async def main() -> Any:
        org = LocalOrg("acme")
        worker = Node.from_org(org, "worker", preset="local")

        @worker.capability("upper", eta=0.05)
        async def upper(task: Task) -> str:
            return str(task.input).upper()

        with pytest.raises(ConfigError, match="eta"):
            worker.add_capability("bad", upper, eta=0)
        async with worker:
            req = Node.from_org(org, "requester", seeds=[worker.endpoint], preset="local")
            async with req:
                assert await req.wait_for_peers(1, timeout=10)
                return (await req.request("upper", "a", timeout=0.5)).value

    assert asyncio.run(asyncio.wait_for(main(), 30)) == "A"


def test_eta_in_node_toml(tmp_path: Any) -> None:
    from node.config import load_config

    base = '[node]\nname = "a"\nidentity = "a.key"\ncertificate = "a.cert"\ntrust = "t.toml"\n'
    cap = '[[capability]]\nname = "pay"\npython = "m:f"\n'
    p = tmp_path / "node.toml"
    p.write_text(base + cap + "eta = 0.2\n")
    assert load_config(p).capabilities[0].eta == 0.2
    p.write_text(base + cap)
    assert load_config(p).capabilities[0].eta is None
    p.write_text(base + cap + "eta = 0\n")
    with pytest.raises(ConfigError, match=r"capability\[0\]\.eta: a number above 0"):
        load_config(p)


def test_what_request_raises_before_anything_is_sent_is_as_its_docstring_says() -> None:
    """``Node.request`` documented ``ContractNetError`` alone; these are
    ``LocalProtocolError`` with the codes its docstring now names, and no task is made."""

    async def run() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []

        async def attempt(node: Node, capability: str, value: Any = 1, **opts: Any) -> None:
            with pytest.raises(LocalProtocolError) as info:
                await node.request(capability, value, **opts)
            assert not isinstance(info.value, ContractNetError)
            seen.append((info.value.code, info.value.message))

        node = _node_with({"requests": ["echo", "x" * 129]})
        await attempt(node, "echo")  # not started
        async with node:
            await attempt(node, "echo", bogus=1)
            await attempt(node, "echo", strategy="bogus")
            await attempt(node, "echo", semantics="bogus")
            await attempt(node, "echo", timeout=-1)
            await attempt(node, "x" * 129)
            await attempt(node, "echo", risk="HIGH")  # a typo: executors would hold it
            await attempt(node, "echo", {1: "x"})
            await attempt(node, "echo", "x" * 300_000)
            await attempt(node, "other")
            assert node.tasks() == []
        await attempt(node, "echo")  # stopped
        return seen

    codes = [code for code, _ in asyncio.run(asyncio.wait_for(run(), 30))]
    assert codes == [
        "local-misuse",
        *["local-misuse"] * 6,
        "bad-input",
        "bad-input",
        "not-permitted",
        "closed",
    ]
