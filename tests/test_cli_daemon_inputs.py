"""The control commands' input checks and --json output, against an in-process
control server (no mesh): submit --timeout/--strategy, approvals/approve/deny --json."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner, Result

from node.cli import main
from node.control import ControlServer
from node.daemon import _Control
from node.handlers import Task
from node.supervision import ApprovalDesk
from protocols.contract_net.strategies import STRATEGIES


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@contextmanager
def served(
    cdir: Path,
    handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    setup: Callable[[], Awaitable[None]] | None = None,
) -> Iterator[None]:
    """A ControlServer on ``cdir`` answering with ``handler``, on a thread's loop."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def main_() -> None:
        stop.append(asyncio.Event())
        if setup is not None:
            await setup()
        server = ControlServer(cdir, handler)
        server.start()
        started.set()
        try:
            await stop[0].wait()
        finally:
            await server.close()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main_(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf", "1e12"])
def test_submit_timeout_must_be_a_finite_number_of_seconds_above_0(
    tmp_path: Path, value: str
) -> None:
    """--timeout -5 --wait said 'daemon did not answer' (the client waited 0 s);
    --timeout nan said 'internal error (ValueError ...)'."""
    out = cli("submit", "echo", "--wait", "--timeout", value, "--control", str(tmp_path))
    assert out.exit_code == 2, out.output
    assert "--timeout" in out.output and "above 0" in out.output
    assert "internal error" not in out.output and "did not answer" not in out.output


def test_submit_with_an_unknown_strategy_is_a_usage_error_listing_them(tmp_path: Path) -> None:
    out = cli("submit", "echo", "--strategy", "bogus", "--control", str(tmp_path))
    assert out.exit_code == 2, out.output
    assert "--strategy" in out.output and "bogus" in out.output
    assert all(name in out.output for name in STRATEGIES)


def test_the_daemon_knows_no_strategies_but_the_built_in_ones() -> None:
    """submit checks --strategy against STRATEGIES: right only while a daemon's core is
    built without strategies of its own (give the CLI the daemon's list otherwise)."""
    from node.core_adapter import build_core

    assert "strategies" not in inspect.signature(build_core).parameters
    source = inspect.getsource(build_core)
    assert "strategies" not in source


def test_submit_sends_a_valid_timeout_and_strategy(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"ok": True, "task_id": "t" * 32}

    cdir = tmp_path / "ctl"
    with served(cdir, handler):
        args = ["--timeout", "2.5", "--strategy", "first_idle", "--control", str(cdir)]
        out = cli("submit", "echo", *args)
    assert out.exit_code == 0, out.output
    assert seen[0]["timeout"] == 2.5 and seen[0]["strategy"] == "first_idle"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A control dir whose server holds two tasks waiting for approval (as a daemon's)."""
    desk = ApprovalDesk()
    ids = ["61f30e8d" + "a" * 24, "7c0ffee0" + "b" * 24]
    waits: list[asyncio.Task[Any]] = []

    async def setup() -> None:
        for i, task_id in enumerate(ids):
            task = Task(
                task_id,
                "pay",
                {"amt": 100 * (i + 1), "to": "ünï"},
                time.time() + 60,
                requester="r" * 52,
                risk="high",
            )
            waits.append(asyncio.get_running_loop().create_task(desk.wait(task)))
        await asyncio.sleep(0)

    cdir = tmp_path / "ctl"
    # The daemon's own answers (approvals, approve and deny use its desk alone).
    with served(cdir, _Control(cast(Any, None), cast(Any, None), desk), setup):
        yield cdir, ids


def test_approvals_json_gives_each_input_as_json(gate: tuple[Path, list[str]]) -> None:
    """It gave "input": "{'amt': 100}", a Python repr in a string."""
    cdir, ids = gate
    out = cli("approvals", "--json", "--control", str(cdir))
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["task_id"] for r in rows] == ids
    assert rows[0]["input"] == {"amt": 100, "to": "ünï"}
    assert json.loads(rows[0]["input_preview"]) == {"amt": 100, "to": "ünï"}
    table = cli("approvals", "--control", str(cdir))
    assert table.exit_code == 0 and 'input {"amt": 100, "to": "ünï"}' in table.output


def test_approve_and_deny_json_print_json(gate: tuple[Path, list[str]]) -> None:
    """They printed '61f30e8d... denied' whatever --json said."""
    cdir, ids = gate
    out = cli("approve", ids[0][:10], "--json", "--control", str(cdir))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"ok": True, "task_id": ids[0], "decision": "approved"}
    out = cli("deny", ids[1][:10], "--reason", "too\n much", "--json", "--control", str(cdir))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {
        "ok": True,
        "task_id": ids[1],
        "decision": "denied",
        "reason": "too much",
    }
    assert json.loads(cli("approvals", "--json", "--control", str(cdir)).output) == []


def test_approve_without_json_still_prints_one_line(gate: tuple[Path, list[str]]) -> None:
    cdir, ids = gate
    out = cli("approve", ids[0][:10], "--control", str(cdir))
    assert out.exit_code == 0 and out.output == f"{ids[0]} approved\n"


def test_a_refused_approve_json_is_json_too(gate: tuple[Path, list[str]]) -> None:
    """It printed a plain-text error whatever --json said."""
    cdir, _ = gate
    out = cli("approve", "zzzzzzzz", "--json", "--control", str(cdir))
    assert out.exit_code == 1
    reply = json.loads(out.output)
    assert reply["ok"] is False and reply["code"] == "not-found"
    assert "no task 'zzzzzzzz' is waiting for approval" in reply["error"]


@pytest.mark.parametrize("decide", ["approve", "deny"])
@pytest.mark.parametrize("prefix", ["a519", "61f3", "61f30"])  # of no waiting task, of one
def test_a_task_id_prefix_too_short_is_said_to_be(
    gate: tuple[Path, list[str]], decide: str, prefix: str
) -> None:
    """`approve a519` said "no task 'a519' is waiting for approval (not-found)", as if
    the id were wrong, and `approve 61f3` said "give at least 6 characters" with the
    same code `not-found`."""
    cdir, ids = gate
    out = cli(decide, prefix, "--control", str(cdir))
    assert out.exit_code == 1
    assert out.output == (
        f"error: task id prefix {prefix!r} is too short: give at least 6 characters of it"
        " (local-misuse)\n"
    )
    out = cli(decide, prefix, "--json", "--control", str(cdir))
    assert out.exit_code == 1
    assert json.loads(out.output)["code"] == "local-misuse"
    listed = json.loads(cli("approvals", "--json", "--control", str(cdir)).output)
    assert [r["task_id"] for r in listed] == ids  # nothing decided


def test_a_whole_task_id_shorter_than_a_prefix_is_decided() -> None:
    """Requesters choose task ids (1 to 64 characters): a whole one is no prefix."""
    desk = ApprovalDesk()
    control = _Control(cast(Any, None), cast(Any, None), desk)

    async def body() -> dict[str, Any]:
        task = Task("a519", "pay", 1, time.time() + 60, requester="r" * 52, risk="high")
        wait = asyncio.get_running_loop().create_task(desk.wait(task))
        await asyncio.sleep(0)
        reply = await control({"cmd": "approve", "task_id": "a519", "by": "ada"})
        assert await wait is True
        return reply

    assert asyncio.run(body()) == {"ok": True, "task_id": "a519"}


def test_by_names_who_decides_and_a_requester_s_text_cannot_forge_a_row(
    tmp_path: Path,
) -> None:
    """The decider was always the login name; a requester's risk with a newline
    printed a forged second row in the approvals table."""
    seen: list[dict[str, Any]] = []
    forged = "low\n0a1b2c3d4e5f6a7b  pay            risk low"

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        if req["cmd"] == "approvals":
            row = {
                "task_id": "61f30e8d" + "a" * 24,
                "capability": "pay",
                "risk": forged,
                "requester": "r" * 52,
                "waiting_s": 1.0,
                "deadline": 0.0,
                "input": 1,
                "input_preview": "1",
            }
            return {"ok": True, "approvals": [row]}
        return {"ok": True, "task_id": req["task_id"]}

    cdir = tmp_path / "ctl"
    with served(cdir, handler):
        out = cli("approve", "61f30e8d", "--by", "Ada  Lovelace", "--control", str(cdir))
        assert out.exit_code == 0, out.output
        table = cli("approvals", "--control", str(cdir))
    assert seen[0]["by"] == "Ada Lovelace"
    assert table.exit_code == 0, table.output
    assert len(table.output.splitlines()) == 1, table.output
    assert "risk low\\n0a1b2c3d4e5f6a7b" in table.output


def test_a_decider_without_a_user_name_and_an_empty_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A uid with no user name (a container run with an arbitrary --user) made approve
    and deny fail with "internal error (KeyError: 'getpwuid(): uid not found')"; an
    empty --by recorded a decision with no decider."""
    import getpass
    import os

    seen: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"ok": True, "task_id": req["task_id"]}

    def nameless() -> str:
        raise KeyError(f"getpwuid(): uid not found: {os.getuid()}")

    monkeypatch.setattr(getpass, "getuser", nameless)
    cdir = tmp_path / "ctl"
    with served(cdir, handler):
        out = cli("approve", "61f30e8d", "--control", str(cdir))
        assert out.exit_code == 0, out.output
        for by in ("", "  "):
            out = cli("deny", "61f30e8d", "--by", by, "--control", str(cdir))
            assert out.exit_code == 2 and "--by" in out.output, out.output
    assert [r["by"] for r in seen] == [f"uid {os.getuid()}"]


#: Every control command that takes --json, with its arguments.
JSON_COMMANDS = [
    ["status"],
    ["peers"],
    ["tasks"],
    ["approvals"],
    ["reload"],
    ["submit", "echo"],
    ["submit", "echo", "--wait"],
    ["approve", "61f30e8d"],
    ["deny", "61f30e8d"],
]


@pytest.mark.parametrize("cmd", JSON_COMMANDS, ids=" ".join)
def test_a_refusal_under_json_is_json_on_stdout(tmp_path: Path, cmd: list[str]) -> None:
    """`reload --json` refused by the daemon (its certificate file missing, a trust
    file that does not parse) printed a line on stderr and nothing on stdout; only
    approve/deny printed the refusal as JSON."""
    refusal = {"ok": False, "error": "certificate not found: x.cert", "code": "config"}

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {**refusal, "audit": []} if req["cmd"] == "reload" else dict(refusal)

    cdir = tmp_path / "ctl"
    with served(cdir, handler):
        out = cli(*cmd, "--json", "--control", str(cdir))
    assert out.exit_code == 1, out.output
    assert out.stderr == ""
    reply = json.loads(out.stdout)
    assert (reply["ok"], reply["code"], reply["error"]) == (False, "config", refusal["error"])
    with served(cdir, handler):
        plain = cli(*cmd, "--control", str(cdir))  # without --json: one line, as before
    assert plain.exit_code == 1 and plain.stdout == ""
    assert plain.stderr.startswith(("error: certificate not found", "failed (config)"))


@pytest.mark.parametrize("cmd", JSON_COMMANDS, ids=" ".join)
def test_no_daemon_under_json_is_json_on_stdout(tmp_path: Path, cmd: list[str]) -> None:
    """No daemon listening: a line on stderr and nothing on stdout, whatever --json said."""
    cdir = tmp_path / "ctl"
    cdir.mkdir(mode=0o700)
    out = cli(*cmd, "--json", "--control", str(cdir))
    assert out.exit_code == 1, out.output
    assert out.stderr == ""
    reply = json.loads(out.stdout)
    assert (reply["ok"], reply["code"]) == (False, "no-daemon")
    assert reply["error"] == f"no daemon listening at {cdir / 'control.sock'}"
    plain = cli(*cmd, "--control", str(cdir))
    assert plain.exit_code == 1 and plain.stdout == ""
    assert plain.stderr == f"error: no daemon listening at {cdir / 'control.sock'}\n"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("{not json", "--input is not valid JSON"),
        ("@/nonexistent/task.json", "--input @/nonexistent/task.json: No such file"),
    ],
)
def test_a_bad_submit_input_under_json_is_a_json_refusal(given: str, says: str) -> None:
    """``submit --json`` with an input it cannot read printed a line on stderr and
    nothing on stdout, unlike every other refusal under ``--json``."""
    res = CliRunner().invoke(main, ["submit", "echo", "--input", given, "--json", "--control", "/nope"])
    assert res.exit_code == 1
    reply = json.loads(res.stdout)
    assert reply["ok"] is False and reply["code"] == "bad-input" and says in reply["error"]
