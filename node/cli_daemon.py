"""Click commands of the daemon side: run, status, peers, tasks, submit, demo, bench.

The lead's ``node/cli.py`` registers them on the ``mesh-node`` group with
``register(group)``. Every ``MeshError`` becomes one line on stderr and exit
status 1 (click's usage errors exit 2); never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import math
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from node.config import load_config
from node.control import ControlClient
from protocols.contract_net.strategies import STRATEGIES
from protocols.errors import ConfigError, LocalProtocolError, MeshError

__all__ = ["COMMANDS", "register"]

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _fail_on(exc: MeshError) -> NoReturn:
    _fail(exc.message, 2 if isinstance(exc, ConfigError | LocalProtocolError) else 1)


def _control_dir(config: str | None, control: str | None) -> Path:
    if control:
        return Path(control)
    if config:
        return load_config(config).control_dir
    raise ConfigError("give --config node.toml or --control DIR")


def _where(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    fn = click.option("--control", type=click.Path(), help="The daemon's control directory.")(fn)
    fn = click.option(
        "--config", "-c", type=click.Path(), help="The daemon's node.toml (finds its control dir)."
    )(fn)
    return fn


def _call_json(
    config: str | None,
    control: str | None,
    req: dict[str, Any],
    timeout: float = 5.0,
    *,
    as_json: bool = False,
) -> Any:
    """The daemon's reply as it is, refusals included (``{"ok": false, "error", "code"}``).
    With ``as_json``, no daemon answering (``no-daemon``, ``timeout``: exit 1) is told
    in that shape on stdout too; a configuration problem (exit 2: no --config, an
    unsafe control socket) stays one line on stderr, as click's usage errors do."""
    try:
        return ControlClient(_control_dir(config, control)).call(req, timeout=timeout)
    except MeshError as exc:
        if as_json and not isinstance(exc, ConfigError | LocalProtocolError):
            _refused_json({"ok": False, "error": exc.message, "code": exc.code})
        _fail_on(exc)


def _refused_json(reply: dict[str, Any]) -> NoReturn:
    """A refusal under ``--json``: the reply as JSON on stdout, exit 1 (approve/deny
    did so alone; the other commands printed a line on stderr and nothing on stdout)."""
    click.echo(json.dumps(reply, indent=2))
    sys.exit(1)


def _call(
    config: str | None,
    control: str | None,
    req: dict[str, Any],
    timeout: float = 5.0,
    *,
    as_json: bool = False,
) -> Any:
    reply = _call_json(config, control, req, timeout, as_json=as_json)
    if not reply.get("ok") and req["cmd"] != "submit":
        if as_json:
            _refused_json(reply)
        _fail(f"{reply.get('error')} ({reply.get('code')})")
    return reply


@click.command()
@click.option("--config", "-c", required=True, type=click.Path(), help="node.toml")
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logs.")
def run(config: str, log_json: bool, verbose: bool) -> None:
    """Run a node until SIGTERM or SIGINT.

    \b
    Example:
      mesh-node run --config node.toml
    """
    import logging

    from node.daemon import run_daemon, setup_logging

    setup_logging(json_logs=log_json, level=logging.DEBUG if verbose else logging.INFO)
    try:
        cfg = load_config(config)
        code = _run_bounded(run_daemon(cfg))
    except MeshError as exc:
        _fail_on(exc)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


#: Seconds the daemon waits, after it has left the mesh, for handlers it cancelled
#: (and handler threads) before it exits anyway.
TEARDOWN_SECONDS = 3.0


def _run_bounded(main: Coroutine[Any, Any, int], teardown: float = TEARDOWN_SECONDS) -> int:
    """``asyncio.run`` with a bounded teardown. ``asyncio.run`` waits without end for
    every task it cancels and every executor thread: a handler that ignores
    cancellation, or a sync handler stuck in a thread, kept a daemon alive long after
    SIGTERM ("left the mesh" logged, the process still there). After the node has left,
    leftovers get ``teardown`` seconds; then the process exits all the same."""
    import logging
    import os

    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        try:
            code = loop.run_until_complete(main)
        except BaseException:
            # A start-up error (a config mistake found on start): close the loop, or
            # its __del__ prints a traceback after the one-line error.
            _close_quietly(loop)
            raise
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=teardown))
        stuck = sum(1 for t in leftovers if not t.done())
        # Not loop.shutdown_default_executor(): it joins the executor's threads with no
        # bound (Python 3.11). Ask them to end, then wait for each within the teardown.
        executor = getattr(loop, "_default_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            end = time.monotonic() + teardown
            for thread in list(getattr(executor, "_threads", ())):
                thread.join(max(0.0, end - time.monotonic()))
                stuck += thread.is_alive()
    finally:
        asyncio.set_event_loop(None)
    if stuck:
        logging.getLogger("parley.daemon").warning(
            "exiting with handler work still running (it ignored cancellation or is a "
            "thread that cannot be stopped) %.0f s after leaving the mesh",
            teardown,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # threads and tasks that will not end must not hold the process
    loop.close()
    return code


def _close_quietly(loop: asyncio.AbstractEventLoop) -> None:
    for t in asyncio.all_tasks(loop):
        t.cancel()
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.sleep(0))
    with contextlib.suppress(Exception):
        loop.close()


@click.command()
@_where
def status(config: str | None, control: str | None, as_json: bool) -> None:
    """Show this node's identity, endpoint, peers and load."""
    reply = _call(config, control, {"cmd": "status"}, as_json=as_json)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"{reply['name']}  {reply['node_id']}  org {reply['org']}")
    click.echo(f"  endpoint {reply['endpoint']}   up {reply['uptime_s']}s")
    click.echo(f"  peers {reply['peers']}   running tasks {reply['running']}")
    caps = ", ".join(f"{c['name']}@{c['version']}" for c in reply["capabilities"]) or "-"
    click.echo(f"  capabilities {caps}")


@click.command()
@_where
def reload(config: str | None, control: str | None, as_json: bool) -> None:
    """Re-read the trust file (orgs, policies, revocations) and the certificate (a
    renewal) into the running daemon."""
    reply = _call_json(config, control, {"cmd": "reload"}, as_json=as_json)
    if reply.get("warning"):  # an audit log that could not be switched, say
        click.echo(f"warning: {reply['warning']}", err=True)
    if not reply.get("ok"):
        if as_json:  # "audit" in it says what was rotated all the same
            _refused_json(reply)
        if reply.get("audit"):  # rotated all the same: the trust file is another matter
            click.echo(f"audit: {', '.join(reply['audit'])}")
        _fail(f"{reply.get('error')} ({reply.get('code')})")
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    lines = [f"{k}: {', '.join(v)}" for k, v in reply.items() if isinstance(v, list) and v]
    click.echo("; ".join(lines) or "trust file and certificate reloaded: no change")


@click.command()
@_where
def peers(config: str | None, control: str | None, as_json: bool) -> None:
    """List the peers this node knows."""
    _list(
        _call(config, control, {"cmd": "peers"}, as_json=as_json)["peers"],
        as_json,
        lambda p: [f"{p['node_id'][:16]}  {p['org']:<12} {p['state']:<8} {p['endpoint']}"],
        "(no peers)",
    )


def _list(
    rows: list[dict[str, Any]],
    as_json: bool,
    lines: Callable[[dict[str, Any]], list[str]],
    empty: str,
) -> None:
    """A control command's list: JSON, or lines per row, or what to say when empty."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        for line in lines(row):
            click.echo(line)
    if not rows:
        click.echo(empty)


@click.command()
@click.option(
    "--why", is_flag=True, help="Each requested task's decisions: awards, moves, outcome."
)
@_where
def tasks(config: str | None, control: str | None, as_json: bool, why: bool) -> None:
    """List recent tasks (requested here or run here)."""

    def lines(t: dict[str, Any]) -> list[str]:
        head = (
            f"{t['task_id'][:16]}  {t['role']:<9} {t['capability']:<14} {t['state']:<17} "
            f"{t['winner'][:12]}"
        )
        return [head, *(f"    {d}" for d in (t.get("decisions", []) if why else []))]

    reply = _call(config, control, {"cmd": "tasks"}, as_json=as_json)
    _list(reply["tasks"], as_json, lines, "(no tasks)")


@click.command()
@_where
def approvals(config: str | None, control: str | None, as_json: bool) -> None:
    """List the tasks waiting for a person's approval (capabilities with approve_at)."""
    _list(
        _call(config, control, {"cmd": "approvals"}, as_json=as_json)["approvals"],
        as_json,
        lambda a: [
            f"{_shown(a['task_id'])[:16]}  {_shown(a['capability']):<14} "
            f"risk {_shown(a['risk']):<8} waiting {a['waiting_s']:>6.1f}s  "
            f"from {a['requester'][:12]}  input {_shown(a.get('input_preview', a['input']))}"
        ],
        "(nothing waits for approval)",
    )


def _decide(
    cmd: str,
    task_id: str,
    by: str | None,
    config: str | None,
    control: str | None,
    as_json: bool,
    **extra: str,
) -> None:
    who = " ".join((by if by is not None else _login_name()).split())
    if not who:  # a decision recorded without a decider
        raise click.BadParameter("a name, not an empty one", param_hint="--by")
    req = {"cmd": cmd, "task_id": task_id, "by": who, **extra}
    reply = _call(config, control, req, as_json=as_json)  # a refusal: JSON under --json
    decision = "approved" if cmd == "approve" else "denied"
    if as_json:
        # {"ok": true, "task_id": <full id>, "decision": "approved"|"denied"[, "reason"]}
        # (the reason as the daemon records it: on one line, "denied" if empty)
        told = {k: " ".join(v.split()) or "denied" for k, v in extra.items()}
        click.echo(json.dumps({**reply, "decision": decision, **told}, indent=2))
        return
    click.echo(f"{reply['task_id']} {decision}")


def _login_name() -> str:
    """Whoever runs approve/deny; ``uid N`` for a uid with no user name (a container
    run with an arbitrary ``--user``), where ``getpass`` fails with KeyError or OSError
    and the command ended in "internal error"."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _shown(value: Any) -> str:
    """A requester's text (risk, task id, input preview) as one printable line: a
    risk of "low\n0a1b… pay risk low" printed a forged second row in the table."""
    text = str(value)
    if text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)[1:-1]  # escapes, without the quotes


_BY = click.option(
    "--by",
    default=None,
    help="Who decides, as recorded in the log and the audit (default: your login name).",
)


@click.command()
@click.argument("task_id")
@_BY
@_where
def approve(
    task_id: str, by: str | None, config: str | None, control: str | None, as_json: bool
) -> None:
    """Let a waiting task run (TASK_ID or a unique prefix of it, 6 characters or more)."""
    _decide("approve", task_id, by, config, control, as_json)


@click.command()
@click.argument("task_id")
@click.option("--reason", default="denied", show_default=True, help="Told to the requester.")
@_BY
@_where
def deny(
    task_id: str,
    reason: str,
    by: str | None,
    config: str | None,
    control: str | None,
    as_json: bool,
) -> None:
    """Fail a waiting task with 'not approved: REASON' (it never runs here)."""
    _decide("deny", task_id, by, config, control, as_json, reason=reason)


#: The longest ``submit --timeout``: 20 days (the client's wait is int32 milliseconds).
TIMEOUT_MAX = 20 * 86400.0


def _positive_seconds(value: float) -> float:
    """A --timeout: finite, above 0 and at most TIMEOUT_MAX (a negative one left
    ``--wait`` no time to wait, a NaN failed deep inside with "internal error")."""
    if not (math.isfinite(value) and 0 < value <= TIMEOUT_MAX):
        raise click.BadParameter(
            f"{value:g} is not a number of seconds above 0 (at most {TIMEOUT_MAX:.0f}: 20 days)"
        )
    return value


@click.command()
@click.argument("capability")
@click.option(
    "--input",
    "input_json",
    default="null",
    help="The task input, as JSON; @FILE reads it from FILE, - from stdin.",
)
@click.option("--wait", is_flag=True, help="Wait for the result.")
@click.option(
    "--strategy",
    # The daemon's strategies are these (node.core_adapter.build_core adds none).
    type=click.Choice(list(STRATEGIES)),
    default=None,
    help="Award strategy (default least_loaded).",
)
@click.option(
    "--risk",
    type=click.Choice(["low", "medium", "high", "critical"]),
    default=None,
    help="Default low; capabilities gated at this risk or below ask a person first.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    callback=lambda _ctx, _param, value: _positive_seconds(value),
    help="Seconds (above 0).",
)
@_where
def submit(
    capability: str,
    input_json: str,
    wait: bool,
    strategy: str | None,
    risk: str | None,
    timeout: float,
    config: str | None,
    control: str | None,
    as_json: bool,
) -> None:
    """Submit a task through this node.

    \b
    Example:
      mesh-node submit echo --input '{"text": "hi"}' --wait -c node.toml
      mesh-node submit echo --input @task.json --wait -c node.toml
    """

    def bad_input(why: str) -> NoReturn:
        # exit 1 either way; under --json the refusal is JSON on stdout, as the others
        if as_json:
            _refused_json({"ok": False, "error": why, "code": "bad-input"})
        _fail(why)

    source = "--input"
    if input_json == "-":
        input_json, source = sys.stdin.read(), "the input on stdin"
    elif input_json.startswith("@"):
        path = input_json[1:]
        try:
            with open(path, encoding="utf-8") as f:
                input_json = f.read()
        except OSError as exc:
            bad_input(f"--input @{path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            bad_input(f"--input @{path}: not UTF-8 text")
        source = path
    try:
        value = json.loads(input_json)
    except ValueError:
        bad_input(f"{source} is not valid JSON")
    req = {"cmd": "submit", "capability": capability, "input": value, "wait": wait}
    req["timeout"] = timeout
    if strategy:
        req["strategy"] = strategy
    if risk:
        req["risk"] = risk
    reply = _call(config, control, req, timeout=timeout + 5.0 if wait else 5.0, as_json=as_json)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        click.echo(f"failed ({reply.get('code')}): {reply.get('error')}", err=True)
        for a in reply.get("attempts", []):
            click.echo(f"  tried {a}", err=True)
    elif wait:
        click.echo(json.dumps(reply["result"]))
        click.echo(f"(task {reply['task_id'][:16]} ran on {reply['executor'][:16]})", err=True)
    else:
        click.echo(reply["task_id"])
    if not reply.get("ok"):
        sys.exit(1)


@click.group()
def audit() -> None:
    """A daemon's signed audit log ([audit] path in node.toml)."""


@audit.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--node-id", default=None, help="The node that must have signed every line.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_verify(paths: tuple[str, ...], node_id: str | None, as_json: bool) -> None:
    """Check every line's signature and chain link; exit 1 at the first that fails.

    Give a rotated log's files oldest first: each must go on from the one before it.

    \b
    Example:
      mesh-node audit verify /var/lib/parley/alpha-audit.jsonl --node-id 7kq3...
      mesh-node audit verify alpha-audit.jsonl.2 alpha-audit.jsonl.1 alpha-audit.jsonl
    """
    from node.audit import verify_audit_files

    for path in paths:
        if not Path(path).is_file():
            _fail(f"audit log {path} not found")
    reports = verify_audit_files([Path(p) for p in paths], node_id)
    report, path = reports[-1], paths[len(reports) - 1]
    ok = report.ok and len(reports) == len(paths)
    total = sum(r.lines for r in reports)
    if as_json:
        out = {
            "ok": ok,
            "lines": total,
            "node_id": report.node_id,
            "head": report.last_hash,
            "problem": report.problem,
        }
        if len(paths) > 1:
            out["files"] = [
                {"path": p, "lines": r.lines, "first_seq": r.first_seq, "ok": r.ok}
                for p, r in zip(paths, reports, strict=False)
            ]
        click.echo(json.dumps(out))
    elif ok:
        who = report.node_id or "(empty log)"
        files = f" in {len(paths)} files" if len(paths) > 1 else ""
        start = reports[0].first_seq
        # A rotated file alone holds, but the lines before it are not checked here.
        earlier = f" (from sequence number {start}: the earlier files not given)" if start else ""
        click.echo(f"{total} lines{files}, all signed by {who}, chain intact{earlier}")
    else:
        click.echo(f"error: {path}: {report.problem} ({total} lines before it hold)", err=True)
    if not ok:
        sys.exit(1)


@click.command()
@click.option("--tasks", "n_tasks", default=24, show_default=True, help="Tasks in the batch.")
@click.option("--quiet", is_flag=True, help="No live table (for tests).")
def demo(n_tasks: int, quiet: bool) -> None:
    """A five-node, two-organization mesh on loopback, bidding live (under a minute)."""
    from node.demo import run_demo

    try:
        sys.exit(asyncio.run(run_demo(n_tasks=n_tasks, live=not quiet)))
    except MeshError as exc:
        _fail_on(exc)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quick", is_flag=True, help="Shorter runs (less precise).")
def bench(as_json: bool, quick: bool) -> None:
    """Measure verify rate, ingest rate and contract-net latency on loopback."""
    from node.bench import run_bench

    try:
        out = run_bench(quick=quick, progress=not as_json)
    except MeshError as exc:
        _fail_on(exc)
    if as_json:
        click.echo(json.dumps(out, indent=2))


COMMANDS = [run, status, peers, reload, tasks, submit, approvals, approve, deny, audit, demo, bench]


def register(group: click.Group) -> None:
    for cmd in COMMANDS:
        group.add_command(cmd)
