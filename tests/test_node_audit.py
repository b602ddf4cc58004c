"""The signed, hash-chained audit log: what it records survives restarts, and any
change to it is found at the line where it was made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.audit import AuditLog, verify_audit
from node.cli import main
from protocols.errors import ConfigError
from protocols.identity import NodeIdentity

ALICE = NodeIdentity.from_seed(bytes(range(32)))
MALLORY = NodeIdentity.from_seed(bytes(32))


def _log(path: Path, n: int, who: NodeIdentity = ALICE) -> None:
    log = AuditLog(path, who)
    for i in range(n):
        log.append("TaskCompleted", {"task_id": f"t{i}", "executor": "x", "n": i})
    log.close()


def test_a_log_verifies_and_continues_its_chain_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 3)
    _log(path, 2)  # a restart: the chain goes on
    report = verify_audit(path, ALICE.node_id)
    assert report.ok and report.lines == 5 and report.node_id == ALICE.node_id
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == [0, 1, 2, 3, 4]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("edit", "line 3: signature does not match"),
        ("remove", "line 3: sequence number 3, expected 2"),
        ("swap", "line 2: sequence number 2, expected 1"),
        ("resign", "line 4: does not follow the previous line"),
        ("truncate", "line 5: cut short"),
    ],
)
def test_any_change_is_found_at_its_line(tmp_path: Path, tamper: str, problem: str) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 5)
    lines = _lines(path)
    if tamper == "edit":
        row = json.loads(lines[2])
        row["data"]["executor"] = "someone else"
        lines[2] = json.dumps(row, sort_keys=True, separators=(",", ":"))
    elif tamper == "remove":
        del lines[2]
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "resign":
        # Someone with the key rewrites line 3 and signs it anew: line 3 verifies on
        # its own, but line 4's link to the line before it breaks.
        fork = tmp_path / "fork.jsonl"
        _write(fork, lines[:2])
        log = AuditLog(fork, ALICE)
        log.append("TaskCompleted", {"task_id": "t2", "executor": "mallory", "n": 2})
        log.close()
        lines[2] = _lines(fork)[2]
    path.write_text("".join(line + "\n" for line in lines))
    if tamper == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:-20])
    report = verify_audit(path)
    assert not report.ok
    assert problem in report.problem


def test_a_log_signed_by_another_node_is_caught_by_its_node_id(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 2, who=MALLORY)
    assert verify_audit(path).ok  # consistent on its own...
    report = verify_audit(path, ALICE.node_id)  # ...but not the node we expect
    assert not report.ok and "line 1: signed by" in report.problem


def test_a_daemon_refuses_to_extend_a_damaged_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 3)
    lines = _lines(path)
    del lines[1]
    _write(path, lines)
    with pytest.raises(ConfigError, match="move it aside"):
        AuditLog(path, ALICE)


def test_mesh_node_audit_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 4)
    ok = CliRunner().invoke(main, ["audit", "verify", str(path), "--node-id", ALICE.node_id])
    assert ok.exit_code == 0 and f"4 lines, all signed by {ALICE.node_id}" in ok.output
    lines = _lines(path)
    del lines[0]
    _write(path, lines)
    bad = CliRunner().invoke(main, ["audit", "verify", str(path), "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["problem"].startswith("line 1: sequence number 1")
    gone = CliRunner().invoke(main, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert gone.exit_code == 1
    assert gone.output.strip() == f"error: audit log {tmp_path / 'nope.jsonl'} not found"


def test_the_audit_table_of_node_toml(tmp_path: Path) -> None:
    from node.config import load_config

    base = '[node]\nname = "a"\nidentity = "a.key"\ncertificate = "a.cert"\ntrust = "t.toml"\n'
    p = tmp_path / "node.toml"
    p.write_text(base + '[audit]\npath = "logs/audit.jsonl"\n')
    assert load_config(p).audit == tmp_path / "logs" / "audit.jsonl"
    p.write_text(base)
    assert load_config(p).audit is None
    p.write_text(base + '[audit]\nfile = "x"\n')
    with pytest.raises(ConfigError, match="audit"):
        load_config(p)


def test_an_incomplete_last_line_is_cut_and_recorded_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 3)
    path.write_bytes(path.read_bytes() + b'{"seq":3,"ts":1')  # a crash mid-write
    log = AuditLog(path, ALICE)
    log.append("TaskCompleted", {"task_id": "t3"})
    log.close()
    report = verify_audit(path, ALICE.node_id)
    assert report.ok and report.lines == 5
    events = [json.loads(line) for line in _lines(path)]
    assert events[3]["event"] == "RecoveredTruncation" and events[3]["data"]["bytes_lost"] == 15


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, ALICE)
    with pytest.raises(ConfigError, match="in use by another process"):
        AuditLog(path, ALICE)
    first.close()


def test_a_failed_write_leaves_no_half_line_and_stops_the_log(tmp_path: Path) -> None:
    import os

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ALICE)
    log.append("TaskCompleted", {"task_id": "t0"})
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[:10])  # part of the line reaches the file, then ENOSPC
        raise OSError(28, "No space left on device")

    os.write = full_disk  # type: ignore[assignment]
    try:
        with pytest.raises(OSError):
            log.append("TaskCompleted", {"task_id": "t1"})
    finally:
        os.write = real_write
    with pytest.raises(OSError, match="stopped after a failed write"):
        log.append("TaskCompleted", {"task_id": "t2"})
    log.close()
    assert verify_audit(path).ok and verify_audit(path).lines == 1


def test_data_is_signed_as_it_reads_back(tmp_path: Path) -> None:
    # int keys, tuples, non-JSON values: signed in the form a verifier reloads.
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ALICE)
    log.append("Odd", {"by_id": {2: "b", 10: "a"}, "pair": (1, 2), "when": Path("/x")})
    log.close()
    assert verify_audit(path).ok
    with pytest.raises(ValueError):
        AuditLog.append(AuditLog(tmp_path / "b.jsonl", ALICE), "Bad", {"x": float("nan")})


def test_an_edited_line_in_another_form_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 2)
    lines = _lines(path)
    lines[1] = lines[1] + " "  # same JSON, other bytes
    _write(path, lines)
    assert "line 2: not in canonical form" in verify_audit(path).problem


@pytest.mark.parametrize(
    "content",
    [
        b"x" * 5000,  # no newline at all: not the start of an audit line
        b'[node]\nname = "a"\nidentity = "a.key"\n',  # a TOML file
        b'[node]\nname = "a"',  # a TOML file without a last newline
        b'{"name": "a"}',  # JSON, but not the start of an audit line
        b'{"name": "a"}\n{"seq":1',  # JSON lines, not audit lines
        b"\n",
    ],
    ids=["xs", "toml", "toml-no-newline", "json", "json-lines", "newline"],
)
def test_a_file_that_is_not_an_audit_log_is_refused_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        AuditLog(path, ALICE)
    assert str(info.value) == f"{path} is not a Parley audit log (refusing to change it)"
    assert path.read_bytes() == content  # byte for byte
    with pytest.raises(ConfigError, match="not a Parley audit log"):
        AuditLog(path, ALICE)  # the same again, not "in use": the file was let go of


@pytest.mark.parametrize("piece", [b"{", b'{"da', b'{"data":{"task_id":"t0"'])
def test_a_torn_first_line_is_cut_and_recorded(tmp_path: Path, piece: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(piece)  # a crash in the middle of the first write
    AuditLog(path, ALICE).close()
    report = verify_audit(path, ALICE.node_id)
    assert report.ok and report.lines == 1
    (line,) = [json.loads(line) for line in _lines(path)]
    assert line["event"] == "RecoveredTruncation"
    assert line["data"]["bytes_lost"] == len(piece)


def test_an_audit_log_signed_by_another_node_is_not_called_a_stranger(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 1, who=MALLORY)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"line 1: signed by .*move it aside"):
        AuditLog(path, ALICE)
    assert path.read_bytes() == before


def test_an_executor_s_audit_log_records_how_each_task_it_ran_ended(tmp_path: Path) -> None:
    """An executor's log held `TaskAssigned` and nothing after it: the handler's
    outcome was no core event (the requester's log had the completion)."""
    import asyncio

    from node import LocalOrg, Node, Task
    from node.daemon import _audit_events
    from node.handlers import HandlerFailed
    from protocols.errors import ContractNetError

    path = tmp_path / "executor.jsonl"

    async def main() -> None:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local")
        executor.on_event(_audit_events(AuditLog(path, executor.identity)))

        @executor.capability("pay")
        async def pay(task: Task) -> int:
            if task.input < 0:
                raise HandlerFailed("negative amount", retry=False)
            return int(task.input)

        async with executor:
            requester = Node.from_org(org, "r", seeds=[executor.endpoint], preset="local")
            async with requester:
                assert await requester.wait_for_peers(1, timeout=10)
                assert (await requester.request("pay", 5, timeout=10)).value == 5
                with pytest.raises(ContractNetError, match="negative amount"):
                    await requester.request("pay", -1, timeout=10)

    asyncio.run(asyncio.wait_for(main(), 60))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    ended = [x["data"] for x in lines if x["event"] == "TaskRunEnded"]
    assert [(e["capability"], e["ok"], e["reason"], e["final"]) for e in ended] == [
        ("pay", True, "", False),
        ("pay", False, "negative amount", True),
    ]
    assert [x["event"] for x in lines].count("TaskAssigned") == 2
    assert verify_audit(path).ok


def test_a_rotated_log_goes_on_in_a_new_file_linked_to_the_moved_one(tmp_path: Path) -> None:
    """logrotate moved the file and the daemon wrote on into the moved one; a restart
    then began a new chain at seq 0, so removing a rotated file went unnoticed."""
    from node.audit import CONTINUED, verify_audit_files

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ALICE)
    for i in range(3):
        log.append("TaskCompleted", {"n": i})
    assert log.reopen() is False  # not moved: nothing to do
    first = tmp_path / "audit.jsonl.2"
    path.rename(first)
    assert log.reopen() is True
    log.append("TaskCompleted", {"n": 3})
    second = tmp_path / "audit.jsonl.1"
    path.rename(second)
    assert log.reopen() is True
    log.append("TaskCompleted", {"n": 4})
    log.close()
    again = AuditLog(path, ALICE)  # a restart goes on in the current file
    again.append("TaskCompleted", {"n": 5})
    again.close()

    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["event"] == CONTINUED and lines[0]["seq"] == 5
    assert [x["seq"] for x in lines] == [5, 6, 7]
    alone = verify_audit(path, ALICE.node_id)  # each file holds on its own
    assert alone.ok and alone.first_seq == 5 and alone.lines == 3
    reports = verify_audit_files([first, second, path], ALICE.node_id)
    assert [r.ok for r in reports] == [True, True, True]
    assert sum(r.lines for r in reports) == 3 + 2 + 3
    gap = verify_audit_files([first, path], ALICE.node_id)  # the middle file removed
    assert not gap[-1].ok and "sequence number 5, expected 3" in gap[-1].problem
    out = CliRunner().invoke(main, ["audit", "verify", str(first), str(second), str(path)])
    assert out.exit_code == 0 and "8 lines in 3 files" in out.output, out.output
    out = CliRunner().invoke(main, ["audit", "verify", str(first), str(path)])
    assert out.exit_code == 1 and "expected 3" in out.output


def test_a_rotation_with_a_foreign_file_in_the_way_keeps_the_moved_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ALICE)
    log.append("A", {})
    path.rename(tmp_path / "old.jsonl")
    path.write_text("someone else's\n")
    with pytest.raises(ConfigError, match="not empty; still writing to the moved one"):
        log.reopen()
    log.append("B", {})  # into the moved file, chain intact
    log.close()
    report = verify_audit(tmp_path / "old.jsonl", ALICE.node_id)
    assert report.ok and report.lines == 2
    assert path.read_text() == "someone else's\n"


def test_reload_tells_of_a_rotation_it_could_not_do(tmp_path: Path) -> None:
    """A foreign file in the way of a rotation was only a line in the daemon's log:
    ``mesh-node reload`` said "no change" and exited 0, the lines still going to the
    moved file."""
    from node.daemon import reopen_audits

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, ALICE)
    log.append("A", {})
    path.rename(tmp_path / "old.jsonl")
    path.write_text("someone else's\n")
    out = reopen_audits([log])
    assert out["audit"] == []
    assert "not empty; still writing to the moved one" in out["warning"]
    path.unlink()
    assert reopen_audits([log]) == {"audit": [str(path)]}  # then it switches, no warning
    log.close()


def test_reload_says_the_audit_log_was_switched_when_the_rest_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation happens first: a reload refused for its certificate had still
    switched the audit log, which "error: ... (nothing reloaded)" left unsaid."""
    from node.control import ControlClient

    reply = {
        "ok": False,
        "error": "certificate not found: alpha.cert (nothing reloaded)",
        "code": "config",
        "audit": ["/var/lib/parley/audit.jsonl"],
        "warning": "audit log other.jsonl: in use by another process",
    }
    monkeypatch.setattr(ControlClient, "call", lambda self, req, timeout=5.0: reply)
    out = CliRunner().invoke(main, ["reload", "--control", str(tmp_path)])
    assert out.exit_code == 1
    assert "audit: /var/lib/parley/audit.jsonl" in out.output
    assert "warning: audit log other.jsonl: in use by another process" in out.output
    assert "error: certificate not found" in out.output


def test_verify_of_rotated_files_says_which_file_is_missing_or_out_of_order(
    tmp_path: Path,
) -> None:
    """A missing middle file, files out of order or given twice were all "line 1:
    sequence number 5, expected 3 (0 lines before it hold)": nothing said a file was
    missing, and the lines that held in the files before were not counted."""
    paths = [tmp_path / f"audit.jsonl.{i}" for i in range(3)]
    log = AuditLog(tmp_path / "audit.jsonl", ALICE)
    for path in paths:
        for i in range(2):
            log.append("TaskCompleted", {"n": i})
        (tmp_path / "audit.jsonl").rename(path)
        assert log.reopen() is True
    log.close()
    a, b, c = (str(p) for p in paths)

    def verify(*files: str) -> str:
        out = CliRunner().invoke(main, ["audit", "verify", *files])
        assert out.exit_code == (0 if "chain intact" in out.output else 1), out.output
        return out.output

    assert "6 lines in 2 files" in verify(b, c) and "from sequence number 2" in verify(b, c)
    assert "from sequence number" not in verify(a, b, c)
    gap = verify(a, c)
    assert "sequence numbers 2 to 4 are missing" in gap and "(2 lines before it hold)" in gap
    assert "not given oldest first" in verify(c, b)
    assert "not given oldest first" in verify(b, b)
    assert "begins a chain (the oldest file comes first)" in verify(a, a)


def test_an_embedded_node_s_audit_log_as_operations_md_shows_it(tmp_path: Path) -> None:
    """The embedding recipe of docs/operations.md: Task* events and the desk's
    decisions in one signed chain, verified after the node stops; an edited or a
    removed line is then found."""
    import asyncio
    from dataclasses import asdict

    from node import ApprovalDesk, LocalOrg, Node, Task
    from protocols.errors import ContractNetError

    path = tmp_path / "agent-audit.jsonl"
    node_id = ""

    async def main() -> None:
        nonlocal node_id
        org = LocalOrg("acme")
        node = Node.from_org(org, "executor", preset="local")
        node_id = node.node_id
        audit = AuditLog(path, node.identity)
        node.on_event(
            lambda ev: (
                audit.append(
                    type(ev).__name__,
                    {k: v for k, v in asdict(ev).items() if k not in ("input", "result")},
                )
                if type(ev).__name__.startswith("Task")
                else None
            )
        )
        desk = ApprovalDesk(lambda d: audit.append(f"Approval{d.event.capitalize()}", asdict(d)))

        @node.capability("pay", approve=desk.gate("high"))
        async def pay(task: Task) -> int:
            return int(task.input)

        async def decide(how: str) -> None:
            for _ in range(500):
                if desk.pending():
                    task_id = str(desk.pending()[0]["task_id"])
                    if how == "approve":
                        desk.approve(task_id, by="alice")
                    else:
                        desk.deny(task_id, "over the limit", by="bob")
                    return
                await asyncio.sleep(0.01)

        async with node:
            requester = Node.from_org(org, "r", seeds=[node.endpoint], preset="local")
            async with requester:
                assert await requester.wait_for_peers(1, timeout=10)
                ok = requester.request("pay", 5, timeout=10, risk="high")
                assert (await asyncio.gather(ok, decide("approve")))[0].value == 5
                no = requester.request("pay", 6, timeout=10, risk="high", max_auctions=1)
                with pytest.raises(ContractNetError, match="over the limit"):
                    await asyncio.gather(no, decide("deny"))
        audit.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    report = verify_audit(path, node_id)
    assert report.ok, report.problem
    events = [json.loads(line)["event"] for line in _lines(path)]
    for event in ("ApprovalRequested", "ApprovalApproved", "ApprovalDenied", "TaskRunEnded"):
        assert event in events
    lines = _lines(path)
    edited = json.loads(lines[1])
    edited["data"]["by"] = "mallory"
    _write(path, [lines[0], json.dumps(edited, sort_keys=True, separators=(",", ":")), *lines[2:]])
    assert not verify_audit(path, node_id).ok
    _write(path, [lines[0], *lines[2:]])
    report = verify_audit(path, node_id)
    assert not report.ok and report.problem.startswith("line 2:")
