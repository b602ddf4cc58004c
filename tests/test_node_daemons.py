"""Real processes: three daemons on loopback joined by seeds, the CLI against
them, an executor SIGKILLed mid-task, a clean SIGTERM leave, bad configs.

The tests of the three-daemon mesh share one module fixture and run in order.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_procs import MESH_NODE, Daemon, Org, env_for, free_port, write_config

from node import files
from protocols.identity import NodeIdentity
from protocols.trust import issue_certificate


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Daemon]]:
    base = tmp_path_factory.mktemp("mesh")
    org = Org("acme")
    ports = [free_port() for _ in range(3)]
    seed = f"tcp://127.0.0.1:{ports[0]}"
    # n0 tunes membership the way a scenario would ([membership] over the preset).
    tuned = "[membership]\nmax_piggyback = 6\nfanout = 4\n"
    gated = (
        '[[capability]]\nname = "pay"\npython = "node_test_handlers:echo"\napprove_at = "high"\n'
        '[audit]\npath = "audit-n2.jsonl"\n'
    )
    daemons = [
        Daemon(write_config(base, "n0", org, [org], port=ports[0], caps=(), extra=tuned), base),
        Daemon(write_config(base, "n1", org, [org], port=ports[1], seeds=[seed]), base),
        # n2 also serves "pay", whose high-risk tasks wait for a person (approve_at).
        Daemon(
            write_config(base, "n2", org, [org], port=ports[2], seeds=[seed], extra=gated), base
        ),
    ]
    try:
        for d in daemons:
            d.wait_ready()
        yield daemons
    finally:
        for d in daemons:
            d.stop()


def test_peers_see_each_other(mesh: list[Daemon]) -> None:
    ids = [d.json("status")["node_id"] for d in mesh]
    for i, d in enumerate(mesh):
        peers = d.wait_peers(2)
        assert {p["node_id"] for p in peers} == set(ids) - {ids[i]}
    text = mesh[0].cli("peers")
    assert text.returncode == 0 and ids[1][:16] in text.stdout


def test_status_shows_the_membership_settings_in_effect(mesh: list[Daemon]) -> None:
    from dataclasses import asdict

    from protocols.membership.config import local

    tuned = mesh[0].json("status")["membership"]
    assert tuned == {**asdict(local()), "max_piggyback": 6, "gossip_nodes": 4}
    assert mesh[1].json("status")["membership"] == asdict(local())


def test_a_gated_task_waits_for_a_persons_approval(mesh: list[Daemon]) -> None:
    gate = mesh[2]
    mesh[0].wait_peers(2)
    low = mesh[0].json("submit", "pay", "--input", '"5 EUR"', "--wait", "--timeout", "20")
    assert low["ok"] and low["result"] == {"echo": "5 EUR"}  # low risk: no one is asked
    assert gate.json("approvals") == []
    sub = _submit_bg(mesh[0], "pay", '"5000 EUR"', "--risk", "high")
    waiting: list[dict[str, object]] = []
    for _ in range(200):
        waiting = gate.json("approvals")
        if waiting:
            break
        time.sleep(0.05)
    assert len(waiting) == 1 and waiting[0]["risk"] == "high"
    task_id = str(waiting[0]["task_id"])
    out = gate.cli("approve", task_id[:10])
    assert out.returncode == 0 and f"{task_id} approved" in out.stdout
    stdout, _ = sub.communicate(timeout=30)
    assert sub.returncode == 0, stdout
    assert "5000 EUR" in stdout
    # The decision is in the daemon's log, and in its signed audit log.
    assert f"task {task_id[:10]} approved by" in gate.log.read_text()
    audit = gate.base / "audit-n2.jsonl"
    node_id = gate.json("status")["node_id"]
    check = subprocess.run(
        [MESH_NODE, "audit", "verify", str(audit), "--node-id", node_id, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env_for(gate.base),
    )
    assert check.returncode == 0, check.stdout + check.stderr
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events[0] == "NodeStarted"
    assert {"ApprovalRequested", "ApprovalApproved", "TaskAssigned"} <= set(events)
    missing = gate.cli("approve", "nope-nope")
    assert missing.returncode == 1 and "no task 'nope-nope' is waiting" in missing.stderr
    short = gate.cli("approve", "nope")  # under 6 characters: too short to be a prefix
    assert short.returncode == 1 and "too short" in short.stderr


def test_submit_completes_on_another_node(mesh: list[Daemon]) -> None:
    out = mesh[0].json("submit", "echo", "--input", '{"x": 1}', "--wait", "--timeout", "20")
    assert out["ok"], out
    assert out["result"] == {"echo": {"x": 1}}
    executors = {mesh[1].json("status")["node_id"], mesh[2].json("status")["node_id"]}
    assert out["executor"] in executors
    tasks = mesh[0].json("tasks")
    assert any(t["task_id"] == out["task_id"] and t["state"] == "completed" for t in tasks)


def test_a_lone_daemon_runs_a_task_of_its_own_capability(tmp_path: Path) -> None:
    """No peer offers echo, so the daemon that offers it runs its own request (the
    local fallback; it failed with 'no bids' after three auctions before)."""
    org = Org("acme")
    lone = Daemon(write_config(tmp_path, "lone", org, [org], port=free_port()), tmp_path)
    try:
        lone.wait_ready()
        out = lone.json("submit", "echo", "--input", '{"x": 2}', "--wait", "--timeout", "20")
        assert out["ok"], out
        assert out["result"] == {"echo": {"x": 2}}
        assert out["executor"] == lone.json("status")["node_id"]
    finally:
        lone.stop()


def test_a_restarted_seed_without_seeds_rejoins_the_peers_it_had(tmp_path: Path) -> None:
    """The first node of a mesh has no seeds; the others use it as theirs. Its peers
    mark it left when it stops, and it used to come back alone for good (a new node
    joining through it then split the mesh). It now knocks on the peers it kept."""
    org = Org("acme")
    ports = free_port(), free_port()
    first = write_config(tmp_path, "first", org, [org], port=ports[0])
    seed = f"tcp://127.0.0.1:{ports[0]}"
    a = Daemon(first, tmp_path)
    b = Daemon(write_config(tmp_path, "other", org, [org], port=ports[1], seeds=[seed]), tmp_path)
    try:
        a.wait_ready()
        b.wait_ready()
        a.wait_peers(1)
        assert a.stop() == 0, a.tail()
        kept = json.loads((tmp_path / "ctl-first" / "peers.json").read_text())
        assert kept == {"peers": [f"tcp://127.0.0.1:{ports[1]}"]}
        a = Daemon(first, tmp_path)  # the same config: no seeds
        a.wait_ready()
        (peer,) = a.wait_peers(1)
        assert peer["endpoint"] == f"tcp://127.0.0.1:{ports[1]}"
        assert "knocking on 1 peer(s) known from the last run" in a.tail()
    finally:
        a.stop()
        b.stop()


def test_reload_takes_a_new_revocation_list_and_a_bad_trust_file_changes_nothing(
    tmp_path: Path,
) -> None:
    """A revoked node used to need every daemon restarted; `mesh-node reload` (or
    SIGHUP) re-reads the trust file into the running daemon."""
    from protocols.trust import issue_revocation

    org = Org("acme")
    ports = free_port(), free_port()
    a = Daemon(write_config(tmp_path, "ra", org, [org], port=ports[0]), tmp_path)
    seed = f"tcp://127.0.0.1:{ports[0]}"
    b = Daemon(write_config(tmp_path, "rb", org, [org], port=ports[1], seeds=[seed]), tmp_path)
    try:
        a.wait_ready()
        b.wait_ready()
        a.wait_peers(1)
        b_id = b.json("status")["node_id"]
        rev = issue_revocation(org.signer, "acme", 1, [b_id], now=time.time())
        files.write_bytes(tmp_path / "acme.rev", rev)
        trust_path = tmp_path / "ra-trust.toml"
        trust = files.read_trust_file(trust_path)
        entry = dataclasses.replace(trust.entries[0], revocations=(str(tmp_path / "acme.rev"),))
        files.write_trust_file(files.TrustFile(trust_path, [entry]))
        out = a.json("reload")
        assert out["ok"] and out["revocations"] == ["acme v1"], out
        for _ in range(100):  # bounded: b's frames are refused, so it is dropped
            if a.json("status")["statistics"].get("rejected.revoked", 0):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(a.tail())
        trust_path.write_text("")  # truncated: under it this node itself is refused
        empty = a.cli("reload")
        assert empty.returncode == 1 and "not reloaded" in empty.stderr, empty.stderr
        assert a.json("status")["ok"]
        trust_path.write_text("[[org]]\nname = 3\n")
        bad = a.cli("reload")
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert a.json("status")["ok"]  # still running, and still refusing b
        a.signal(signal.SIGHUP)  # the same reload; its error is logged, nothing changes
        time.sleep(0.5)
        assert a.proc.poll() is None and "not reloaded" in a.tail()
    finally:
        a.stop()
        b.stop()


def test_reload_takes_a_renewed_certificate_and_refuses_one_for_another_key(
    tmp_path: Path,
) -> None:
    """A renewed certificate used to need a restart (in-flight work handed back)."""
    org = Org("acme")
    a = Daemon(write_config(tmp_path, "ca", org, [org], port=free_port()), tmp_path)
    try:
        a.wait_ready()
        key = files.load_identity(tmp_path / "ca.key").public_key
        end = time.time() + 30 * 86400
        renewed = issue_certificate(
            org.signer, "acme", key, "ca", not_before=time.time() - 60, not_after=end
        )
        files.write_bytes(tmp_path / "ca.cert", renewed)
        out = a.json("reload")
        day = time.strftime("%Y-%m-%d", time.gmtime(end))
        assert out["ok"] and out["certificate"][0].startswith(f"valid until {day}"), out
        stranger = NodeIdentity.from_seed(bytes(32)).public_key
        files.write_bytes(
            tmp_path / "ca.cert",
            issue_certificate(
                org.signer, "acme", stranger, "x", not_before=time.time(), not_after=end
            ),
        )
        bad = a.cli("reload")
        assert bad.returncode == 1, bad
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "ca.cert not reloaded: the new certificate is for another node key" in bad.stderr
        files.write_bytes(tmp_path / "ca.cert", renewed)  # the one in use: no change
        assert a.json("reload")["certificate"] == []
        assert a.json("status")["ok"]
    finally:
        a.stop()


def test_submit_reads_a_large_input_from_a_file_and_refuses_one_over_a_frame(
    mesh: list[Daemon], tmp_path: Path
) -> None:
    """An input too long for a command line comes from @FILE; one that no frame could
    carry is refused at once (it used to go out as a cfp every bidder dropped as too
    large, and fail three auctions later as 'no bids')."""
    text = "y" * 150_000  # over a shell argument's 128 KiB, under a frame's 256 KiB
    (tmp_path / "task.json").write_text(json.dumps({"text": text}))
    out = mesh[0].json("submit", "echo", "--input", f"@{tmp_path / 'task.json'}", "--wait")
    assert out["ok"], out
    assert out["result"] == {"echo": {"text": text}}
    (tmp_path / "big.json").write_text(json.dumps("y" * 300_000))
    big = mesh[0].cli("submit", "echo", "--input", f"@{tmp_path / 'big.json'}", "--wait")
    assert big.returncode == 1
    assert "input of 300,005 bytes is over the 258,048-byte limit of a frame" in big.stderr
    missing = mesh[0].cli("submit", "echo", "--input", f"@{tmp_path / 'nope.json'}")
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr


def _running_on(daemons: list[Daemon], task_id: str, polls: int = 150) -> Daemon:
    for _ in range(polls):
        for d in daemons:
            for t in d.json("tasks"):
                if t["task_id"] == task_id and t["role"] == "executor" and t["state"] == "running":
                    return d
        time.sleep(0.05)
    raise AssertionError("the task never started on an executor")


def _submit_bg(d: Daemon, capability: str, value: str, *more: str) -> subprocess.Popen[str]:
    args = [MESH_NODE, "submit", capability, "--input", value, "--wait", "--json", *more]
    args += ["--timeout", "60", "--config", str(d.config)]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(d.base)
    )


def _task_id_of(d: Daemon, capability: str, polls: int = 100) -> str:
    for _ in range(polls):
        mine = [t for t in d.json("tasks") if t["capability"] == capability]
        live = [t for t in mine if t["state"] not in ("completed",) and t["role"] == "requester"]
        if live:
            return str(live[-1]["task_id"])
        time.sleep(0.05)
    raise AssertionError("submitted task not visible")


def test_sigkill_executor_task_completes_on_backup(mesh: list[Daemon]) -> None:
    sub = _submit_bg(mesh[0], "slow", "3")
    task_id = _task_id_of(mesh[0], "slow")
    victim = _running_on(mesh[1:], task_id)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    out, err = sub.communicate(timeout=90)
    reply = json.loads(out)
    assert reply["ok"], (reply, err)
    survivor = next(d for d in mesh[1:] if d is not victim)
    assert reply["executor"] == survivor.json("status")["node_id"]
    assert len(reply["attempts"]) >= 1


def test_sigterm_clean_leave_no_task_lost(mesh: list[Daemon]) -> None:
    alive = [d for d in mesh[1:] if d.proc.poll() is None]
    assert len(alive) == 1
    executor = alive[0]
    executor_id = executor.json("status")["node_id"]
    sub = _submit_bg(mesh[0], "slow", "1.5")
    task_id = _task_id_of(mesh[0], "slow")
    _running_on([executor], task_id)
    executor.signal(signal.SIGTERM)
    assert executor.proc.wait(40) == 0, executor.tail()
    out, err = sub.communicate(timeout=60)
    reply = json.loads(out)
    assert reply["ok"], (reply, err)
    assert reply["executor"] == executor_id
    assert "left the mesh" in executor.tail()
    for _ in range(100):
        if executor_id not in {p["node_id"] for p in mesh[0].json("peers")}:
            break
        time.sleep(0.1)
    assert executor_id not in {p["node_id"] for p in mesh[0].json("peers")}


# -- bad configurations: one line, non-zero, no traceback ----------------------


def _run(config: Path, base: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESH_NODE, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(base),
    )


def _one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert needle in lines[0], lines[0]


def test_bad_configs(tmp_path: Path) -> None:
    org, other = Org("acme"), Org("globex")
    cfg = write_config(tmp_path, "a", org, [org], port=free_port())
    (tmp_path / "a.key").unlink()
    _one_line_error(_run(cfg, tmp_path), "a.key")

    cfg = write_config(tmp_path, "b", org, [other], port=free_port())
    _one_line_error(_run(cfg, tmp_path), "acme")

    blocker = Daemon(write_config(tmp_path, "c", org, [org], port=free_port()), tmp_path)
    try:
        blocker.wait_ready()
        port = blocker.json("status")["endpoint"].rsplit(":", 1)[1]
        cfg = write_config(tmp_path, "d", org, [org], port=int(port))
        _one_line_error(_run(cfg, tmp_path), "cannot listen")
    finally:
        blocker.stop()

    cfg = write_config(tmp_path, "e", org, [org], port=free_port(), caps=("nosuch",))
    _one_line_error(_run(cfg, tmp_path), "unknown handler")
    # the handler's own error: it used to end "(certificate .../e.cert)", a false lead
    assert "certificate" not in _run(cfg, tmp_path).stderr

    _one_line_error(_run(tmp_path / "missing.toml", tmp_path), "not found")

    # A certificate in the name of a trusted org but from another root key (peers drop
    # every frame as untrusted-org), and one whose offers leave out a capability.
    impostor = Org("acme")
    cfg = write_config(tmp_path, "f", impostor, [org], port=free_port())
    _one_line_error(_run(cfg, tmp_path), "signed by another key than that org's root")
    cfg = write_config(tmp_path, "g", org, [org], port=free_port())
    ident = files.read_private_key(tmp_path / "g.key")
    narrow = issue_certificate(
        org.signer,
        "acme",
        NodeIdentity.from_seed(ident).public_key,
        "g",
        not_before=time.time() - 60,
        not_after=time.time() + 3600,
        offers=("echo",),
    )
    files.write_bytes(tmp_path / "g.cert", narrow)
    _one_line_error(_run(cfg, tmp_path), "'slow': this node's certificate does not allow")


@pytest.mark.slow
def test_daemon_started_long_before_its_seed_joins_it(tmp_path: Path) -> None:
    """A daemon's only seed comes up 65 s after it: longer than a frame lives (30 s
    ttl plus 30 s of allowed skew), so the join queued at start is refused as
    expired. A node alone knocks on its seeds again every push-pull period, so
    the two meet once the seed is up, with no mDNS and no restart."""
    org = Org("acme")
    port_a, port_b = free_port(), free_port()
    cfg_a = write_config(
        tmp_path, "a", org, [org], port=port_a, seeds=[f"tcp://127.0.0.1:{port_b}"]
    )
    a = Daemon(cfg_a, tmp_path)
    b: Daemon | None = None
    try:
        a.wait_ready()
        time.sleep(65)
        assert a.json("peers") == []
        b = Daemon(write_config(tmp_path, "b", org, [org], port=port_b), tmp_path)
        b.wait_ready()
        assert [p["endpoint"] for p in a.wait_peers(1)] == [f"tcp://127.0.0.1:{port_b}"]
        assert [p["endpoint"] for p in b.wait_peers(1)] == [f"tcp://127.0.0.1:{port_a}"]
        assert a.json("status")["statistics"].get("join_retried", 0) >= 1
    finally:
        if b is not None:
            b.stop()
        a.stop()


def test_the_control_socket_answers_junk_with_a_typed_error_and_keeps_serving(
    mesh: list[Daemon],
) -> None:
    """Requests that nest deep enough to blow Python's recursion limit used to get no
    reply (a RecursionError traceback in the daemon's log), and a submit whose
    timeout is not a number answered with code "internal"."""
    import zmq

    from node.config import load_config
    from node.control import socket_path

    path = socket_path(load_config(mesh[0].config).control_dir)
    ctx = zmq.Context.instance()
    for body, code in (
        (b"[" * 100_000, "malformed"),
        (json.dumps({"cmd": "submit", "capability": "echo", "timeout": "abc"}).encode(), None),
    ):
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        try:
            sock.connect(f"ipc://{path}")
            sock.send(body)
            reply = json.loads(sock.recv())
        finally:
            sock.close(linger=0)
        assert reply["ok"] is False
        assert reply["code"] == (code or "local-misuse"), reply
    assert mesh[0].json("status")["name"]


STUBBORN = """
import asyncio, time

async def stubborn(task):
    for _ in range(10_000):  # ignores cancellation (a handler bug)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass

def stuck(task):  # a plain function: runs in a thread, which nothing can stop
    time.sleep(120)
"""


@pytest.mark.parametrize("capability", ["stubborn", "stuck"])
def test_sigterm_ends_the_daemon_even_when_a_handler_will_not_stop(
    tmp_path: Path, capability: str
) -> None:
    """The daemon used to log 'left the mesh' and then stay alive: asyncio.run waits
    without end for cancelled tasks and for executor threads."""
    org = Org("acme")
    ports = free_port(), free_port()
    (tmp_path / "stub_handlers.py").write_text(STUBBORN)
    caps = f'\n[[capability]]\nname = "{capability}"\npython = "stub_handlers:{capability}"\n'
    config = write_config(tmp_path, "ex", org, [org], port=ports[0], caps=(), extra=caps)
    config.write_text(config.read_text().replace("grace_seconds = 15", "grace_seconds = 1"))
    executor = Daemon(config, tmp_path)
    seed = f"tcp://127.0.0.1:{ports[0]}"
    requester = Daemon(
        write_config(tmp_path, "rq", org, [org], port=ports[1], seeds=[seed]), tmp_path
    )
    try:
        executor.wait_ready()
        requester.wait_ready()
        requester.wait_peers(1)
        sub = requester.json("submit", capability, "--input", "1")
        assert sub["ok"], sub
        for _ in range(100):  # bounded: the handler starts
            tasks = executor.json("tasks")
            if any(t["state"] == "running" for t in tasks):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(executor.tail())
        executor.signal(signal.SIGTERM)
        code = executor.proc.wait(30)  # grace (1 s) + teardown (3 s), generously
        assert code == 0, executor.tail()
        assert "exiting with handler work still running" in executor.tail()
    finally:
        executor.stop()
        requester.stop()
