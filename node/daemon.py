"""``mesh-node run``: one node as a long-running process.

Loads the config and the identity, certificate and trust files, starts the
node and its control socket, logs what happens, and on SIGTERM or SIGINT
stops bidding, finishes or hands back in-flight work within the grace period,
announces its leave and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mesh.events import (
    Event,
    FrameRejected,
    IdentityConflict,
    PeerDead,
    PeerJoined,
    PeerLeft,
    TaskAssigned,
    TaskAwarded,
    TaskCompleted,
    TaskFailed,
    TaskReassigned,
    TaskRunEnded,
)
from node.api import Node, certificate_problem
from node.audit import AuditLog
from node.config import DaemonConfig
from node.control import ControlServer, check_control_dir_free
from node.handlers import make_handler
from node.health import CertificateClock, Loneliness, Rejections
from node.peers_file import EVERY as PEERS_EVERY
from node.peers_file import read_peers, write_peers
from node.supervision import MIN_PREFIX, ApprovalDesk, Decision, NotWaiting
from node.transport import TransportLimits
from protocols.crypto import Ed25519Verifier
from protocols.errors import ConfigError, ContractNetError, LocalProtocolError, MeshError
from protocols.identity import NodeIdentity
from protocols.membership.config import tuned
from protocols.trust import TrustStore

__all__ = ["build_node", "load_files", "run_daemon", "setup_logging"]

log = logging.getLogger("parley.daemon")
#: Seconds between two looks at the node's health (refused frames, no peer).
HEALTH_EVERY = 5.0


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        return json.dumps(out, default=str)


def setup_logging(*, json_logs: bool = False, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger("parley")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def load_files(cfg: DaemonConfig) -> tuple[NodeIdentity, bytes, TrustStore]:
    """Identity, certificate and trust store (file formats: ``node/files.py``)."""
    from node import files

    for what, path in (
        ("identity key", cfg.identity),
        ("certificate", cfg.certificate),
        ("trust file", cfg.trust),
    ):
        if not path.exists():
            raise ConfigError(f"{what} not found: {path}")
    identity = files.load_identity(cfg.identity)
    cert = files.read_certificate(cfg.certificate).raw
    trust = files.load_trust_store(cfg.trust, Ed25519Verifier())
    return identity, cert, trust


def build_node(cfg: DaemonConfig, desk: ApprovalDesk, known: Sequence[str] = ()) -> Node:
    """The daemon's node; ``desk`` holds its tasks waiting for approval (the same desk
    must answer the control socket's approvals/approve/deny). ``known``: peers kept by
    the last run, knocked on with the seeds."""
    identity, cert, trust = load_files(cfg)
    seeds = [*cfg.seeds, *(ep for ep in known if ep not in cfg.seeds)]
    try:
        node = Node(
            identity,
            cert,
            trust,
            listen=cfg.listen,
            advertise=cfg.advertise,
            seeds=seeds,
            mdns=cfg.mdns.enabled,
            mdns_interfaces=cfg.mdns.interfaces,
            preset=cfg.preset,
            membership=cfg.membership,
            limits=TransportLimits(max_frame=cfg.limits.max_frame, max_peers=cfg.limits.max_peers),
            grace=cfg.limits.grace_seconds,
        )
    except LocalProtocolError as exc:
        raise ConfigError(f"{cfg.certificate}: {exc.message}") from None
    except MeshError as exc:
        raise ConfigError(f"{cfg.certificate}: {exc.message}") from None
    if trust.get(node.certificate.org) is None:
        raise ConfigError(
            f"certificate of org {node.certificate.org!r} is not in the trust file {cfg.trust}"
        )
    problem = certificate_problem(node.certificate, trust, time.time())
    if problem is not None:
        raise ConfigError(f"{cfg.certificate}: {problem} (trust file {cfg.trust})")
    for cap in cfg.capabilities:
        gate = None
        if cap.approve_at is not None:
            gate = desk.gate(cap.approve_at)
        handler = make_handler(cap)  # its errors name the handler, not the certificate
        try:
            node.add_capability(
                cap.name,
                handler,
                version=cap.version,
                max_concurrency=cap.max_concurrency,
                bid=cap.bid,
                approve=gate,
                eta=cap.eta,
            )
        except ConfigError as exc:
            raise ConfigError(f"{exc.message} (certificate {cfg.certificate})") from None
    return node


def _log_decision(d: Decision) -> None:
    """The audit line of every approval request and decision."""
    fields = {**dataclasses.asdict(d), "event": f"Approval{d.event.capitalize()}"}
    extra = {"fields": fields}
    who = f" by {d.by}" if d.by else ""
    why = f": {d.reason}" if d.reason else ""
    if d.event == "requested":
        log.warning(
            "task %s (%s, risk %s) waits for approval: mesh-node approve %s",
            d.task_id[:10],
            d.capability,
            d.risk,
            d.task_id[:12],
            extra=extra,
        )
    else:
        log.info("task %s %s%s%s", d.task_id[:10], d.event, who, why, extra=extra)


class _Control:
    """Answers control-socket requests for one node."""

    def __init__(
        self, node: Node, cfg: DaemonConfig, desk: ApprovalDesk, audits: Sequence[AuditLog] = ()
    ) -> None:
        self.node = node
        self.cfg = cfg
        self.desk = desk
        self.audits = audits
        self.started = time.time()

    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        node = self.node
        if cmd == "status":
            rt = node._rt()
            return {
                "ok": True,
                "name": self.cfg.name,
                "node_id": node.node_id,
                "org": node.certificate.org,
                "endpoint": node.endpoint,
                "uptime_s": round(time.time() - self.started, 1),
                "peers": len(rt.peers),
                "running": len(rt.running),
                "accepting": rt.accepting,
                "capabilities": node.capabilities(),
                "statistics": node.statistics(),
                # The settings in effect: [membership] of node.toml over its preset.
                "membership": dataclasses.asdict(
                    self.cfg.membership or tuned({"preset": self.cfg.preset})
                ),
            }
        if cmd == "peers":
            return {"ok": True, "peers": node.peers()}
        if cmd == "tasks":
            return {"ok": True, "tasks": node.tasks()}
        if cmd == "submit":
            return await self._submit(req)
        if cmd == "approvals":
            return {"ok": True, "approvals": self.desk.pending()}
        if cmd == "reload":
            reopened = reopen_audits(self.audits)
            try:
                changes = reload_trust(node, self.cfg)
                told = [w for w in (changes.get("warning"), reopened.get("warning")) if w]
                return {"ok": True, **changes, **reopened, **_warning(told)}
            except ConfigError as exc:
                return {"ok": False, "error": exc.message, "code": exc.code, **reopened}
        if cmd in ("approve", "deny"):
            task_id, by = str(req.get("task_id") or ""), str(req.get("by") or "")[:128]
            if len(task_id) < MIN_PREFIX and all(
                p["task_id"] != task_id for p in self.desk.pending()
            ):  # said "no task ... is waiting" (not-found), as if the id were wrong
                return {
                    "ok": False,
                    "error": f"task id prefix {task_id!r} is too short: give at least "
                    f"{MIN_PREFIX} characters of it",
                    "code": "local-misuse",
                }
            try:
                if cmd == "approve":
                    full = self.desk.approve(task_id, by=by)
                else:
                    full = self.desk.deny(task_id, str(req.get("reason") or "denied"), by=by)
            except NotWaiting as exc:
                return {"ok": False, "error": exc.message, "code": exc.code}
            return {"ok": True, "task_id": full}
        return {"ok": False, "error": f"unknown command {cmd!r}", "code": "local-misuse"}

    async def _submit(self, req: dict[str, Any]) -> dict[str, Any]:
        capability = req.get("capability")
        if not isinstance(capability, str) or not capability:
            return {"ok": False, "error": "submit needs a capability", "code": "local-misuse"}
        timeout = req.get("timeout", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            return {"ok": False, "error": "timeout: a number of seconds", "code": "local-misuse"}
        opts: dict[str, Any] = {"timeout": float(timeout)}
        if req.get("strategy"):
            opts["strategy"] = str(req["strategy"])
        if req.get("risk"):
            opts["risk"] = str(req["risk"])
        task_id, fut = self.node.submit_nowait(capability, req.get("input"), **opts)
        if not req.get("wait"):
            # Nobody awaits it: its failure is logged with the node's events, not as
            # "Future exception was never retrieved".
            fut.add_done_callback(_retrieved)
            return {"ok": True, "task_id": task_id}
        try:
            result = await asyncio.wait_for(fut, timeout + 2.0)
        except TimeoutError:
            return {
                "ok": False,
                "task_id": task_id,
                "error": "no result in time",
                "code": "timeout",
            }
        except ContractNetError as exc:
            return {
                "ok": False,
                "task_id": task_id,
                "error": exc.message,
                "code": exc.code,
                "attempts": list(exc.attempts),
            }
        return {
            "ok": True,
            "task_id": task_id,
            "result": result.value,
            "executor": result.executor,
            "attempts": list(result.attempts),
            "timings": result.timings,
        }


def _warning(told: list[str]) -> dict[str, str]:
    return {"warning": "; ".join(told)} if told else {}


def _log_event(ev: Event, names: dict[str, str]) -> None:
    def n(node_id: str) -> str:
        return names.get(node_id, node_id[:10])

    fields: dict[str, Any] = {"event": type(ev).__name__, **_fields_of(ev)}
    extra = {"fields": fields}
    if isinstance(ev, PeerJoined):
        log.info("peer joined %s (%s) at %s", n(ev.node_id), ev.org, ev.endpoint, extra=extra)
    elif isinstance(ev, PeerDead | PeerLeft):
        log.info("peer %s %s", n(ev.node_id), type(ev).__name__[4:].lower(), extra=extra)
    elif isinstance(ev, TaskAwarded):
        log.info("task %s awarded to %s", ev.task_id[:10], n(ev.winner), extra=extra)
    elif isinstance(ev, TaskReassigned):
        log.info("task %s moved to %s (%s)", ev.task_id[:10], n(ev.winner), ev.reason, extra=extra)
    elif isinstance(ev, TaskCompleted):
        log.info("task %s completed by %s", ev.task_id[:10], n(ev.executor), extra=extra)
    elif isinstance(ev, TaskFailed):
        log.warning("task %s failed: %s", ev.task_id[:10], ev.reason, extra=extra)
    elif isinstance(ev, TaskAssigned):
        log.info("running task %s (%s)", ev.task_id[:10], ev.capability, extra=extra)
    elif isinstance(ev, TaskRunEnded):
        if ev.ok:
            log.info("ran task %s (%s): done", ev.task_id[:10], ev.capability, extra=extra)
        else:
            log.warning(
                "ran task %s (%s): failed%s: %s",
                ev.task_id[:10],
                ev.capability,
                " (final)" if ev.final else "",
                ev.reason,
                extra=extra,
            )
    elif isinstance(ev, IdentityConflict):
        log.error(
            "another process uses this node's identity key, at %s: stop one of them (or give "
            "it its own key); this one yields and peers reach only the other",
            ev.endpoint,
            extra=extra,
        )
    elif isinstance(ev, FrameRejected):
        log.debug("rejected a frame from %s: %s", ev.endpoint, ev.code, extra=extra)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _log_events(node: Node) -> None:
    """Log the node's events, from its start (a listener: the peers joined while it
    starts are logged too, which a watcher begun after ``start`` missed)."""
    names: dict[str, str] = {}
    node.on_event(lambda ev: _log_event(ev, names))


async def _health(node: Node, seeds: list[str], every: float = HEALTH_EVERY) -> None:
    """Tell the operator what no single event says: frames refused (at most once a
    minute, with what each refusal code most likely means) and, once, a node given
    seeds that still has no peer (``node.health``). Ends when cancelled."""
    rejections = Rejections()
    alone = Loneliness(seeds, node.certificate.org, time.monotonic())
    held = node.certificate
    clock = CertificateClock(held.not_before, held.not_after)
    said = None  # the last problem with our own certificate that was said
    first = clock.report(time.time())  # at start: a certificate that ends this week
    if first is not None:
        log.warning("%s", first, extra={"fields": {"event": "health"}})
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        peers = sum(p["state"] == "alive" for p in node.peers())
        if node.certificate is not held:  # renewed by a reload: warn about the new one
            held = node.certificate
            clock = CertificateClock(held.not_before, held.not_after)
        problem = certificate_problem(node.certificate, node.trust, time.time())
        fresh = problem if problem != said and "expired" not in (problem or "") else None
        said = problem
        for say in (
            alone.report(peers, now),
            rejections.report(node.statistics(), now),
            clock.report(time.time()),
            fresh,  # revoked by gossip, our org dropped by a reload
        ):
            if say is not None:
                log.warning("%s", say, extra={"fields": {"event": "health"}})


def reload_trust(node: Node, cfg: DaemonConfig) -> dict[str, Any]:
    """Re-read the trust file (orgs, policies, revocation lists) and the certificate
    (a renewal) into the running node (``mesh-node reload``, SIGHUP). Both are checked
    before either is taken: a bad file is a ``ConfigError`` and changes nothing."""
    from node import files

    fresh = files.load_trust_store(cfg.trust, Ed25519Verifier())
    if not cfg.certificate.exists():
        raise ConfigError(f"certificate not found: {cfg.certificate} (nothing reloaded)")
    raw = files.read_certificate(cfg.certificate).raw
    renewed = raw != node.certificate.raw
    if renewed:
        try:
            node.check_certificate(raw, fresh)
        except ConfigError as exc:
            raise ConfigError(f"{cfg.certificate} not reloaded: {exc.message}") from None
    now = time.time()
    still = None  # a problem of the certificate that no trust file changes (expired)
    if not renewed:
        problem = certificate_problem(node.certificate, fresh, now)
        still = certificate_problem(node.certificate, node.trust, now)
        if problem is not None and problem != still:
            # e.g. an empty or truncated file: keep what we have
            raise ConfigError(f"{cfg.trust} not reloaded: under it, {problem}")
    changes: dict[str, Any] = dict(node.reload_trust(fresh))
    changes.update(node.replace_certificate(raw) if renewed else {"certificate": []})
    summary = "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v)
    log.info(
        "trust file %s and certificate %s reloaded: %s",
        cfg.trust,
        cfg.certificate,
        summary or "no change",
    )
    if still is not None:  # the trust file is not to blame, but say it again
        log.warning("%s", still, extra={"fields": {"event": "health"}})
        changes["warning"] = still
    return changes


def reopen_audits(audits: Sequence[AuditLog]) -> dict[str, Any]:
    """After log rotation moved an audit file away (``mesh-node reload``, SIGHUP): go on
    in a new file at its path, linked to the moved one (``AuditLog.reopen``). A file
    that could not be switched is logged, and named under ``warning`` for ``reload``
    (which said "no change" while the lines still went to the moved file)."""
    moved, problems = [], []
    for audit in audits:
        try:
            if audit.reopen():
                moved.append(str(audit.path))
                log.info("audit log %s moved away: going on in a new file", audit.path)
        except ConfigError as exc:
            log.error("%s", exc.message)
            problems.append(exc.message)
    out: dict[str, Any] = {"audit": moved}
    if problems:
        out["warning"] = "; ".join(problems)
    return out


def _write_peers(node: Node, directory: Path) -> None:
    alive = [p["endpoint"] for p in node.peers() if p["state"] == "alive"]
    if alive:  # a node alone keeps the list of its last run
        write_peers(directory, alive, node.endpoint)


async def _keep_peers(node: Node, directory: Path, every: float = PEERS_EVERY) -> None:
    """Keep the live peers' endpoints on disk (``node.peers_file``). Ends when cancelled."""
    while True:
        await asyncio.sleep(every)
        _write_peers(node, directory)


def _audit_events(audit: AuditLog) -> Callable[[Event], None]:
    """A node listener writing every Task* event to the audit log (none dropped)."""

    def listener(ev: Event) -> None:
        if type(ev).__name__.startswith("Task"):
            _audit(audit, type(ev).__name__, _fields_of(ev))

    return listener


def _fields_of(ev: Event) -> dict[str, Any]:
    fields = {k: getattr(ev, k) for k in getattr(ev, "__slots__", ())}
    fields.pop("result", None)
    fields.pop("input", None)
    return fields


def _audit(audit: AuditLog, event: str, data: dict[str, Any]) -> None:
    try:
        audit.append(event, data)
    except Exception as exc:  # a full disk must not stop the node; say so loudly
        log.error("audit log %s: %s (event %s not recorded)", audit.path, exc, event)


async def run_daemon(cfg: DaemonConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    audits: list[AuditLog] = []  # filled once the node's identity is loaded

    def on_decision(d: Decision) -> None:
        _log_decision(d)
        for audit in audits:
            _audit(audit, f"Approval{d.event.capitalize()}", dataclasses.asdict(d))

    desk = ApprovalDesk(on_decision)
    check_control_dir_free(cfg.control_dir)
    known = read_peers(cfg.control_dir, cfg.advertise or cfg.listen)
    node = build_node(cfg, desk, known)
    if known:
        log.info("knocking on %d peer(s) known from the last run", len(known))
    if cfg.audit is not None:
        audits.append(AuditLog(cfg.audit, node.identity))  # a damaged log: ConfigError
    audit = audits[0] if audits else None
    if audit is not None:
        node.on_event(_audit_events(audit))
    _log_events(node)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_hup() -> None:
        reopen_audits(audits)
        try:
            reload_trust(node, cfg)
        except ConfigError as exc:
            log.error("not reloaded: %s", exc.message)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await node.start()
    if audit is not None:
        _audit(audit, "NodeStarted", {"name": cfg.name, "endpoint": node.endpoint})
    health = loop.create_task(_health(node, list(cfg.seeds)))
    keeper = loop.create_task(_keep_peers(node, cfg.control_dir))
    control: ControlServer | None = None
    try:
        control = ControlServer(cfg.control_dir, _Control(node, cfg, desk, audits))
        control.start()
        log.info(
            "node %s (%s, org %s) listening on %s; control %s",
            cfg.name,
            node.node_id[:10],
            node.certificate.org,
            node.endpoint,
            control.path,
            extra={"fields": {"event": "ready", "node_id": node.node_id}},
        )
        await stop.wait()
        log.info("stopping: no new bids, finishing in-flight work")
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        _write_peers(node, cfg.control_dir)  # before leaving: the peers we had
        out = await node.stop()
        log.info(
            "left the mesh (%d finished, %d handed back)",
            out["finished"],
            out["handed_back"],
            extra={"fields": {"event": "stopped", **out}},
        )
        health.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health
        if audit is not None:
            _audit(audit, "NodeStopped", out)
            audit.close()
        if control is not None:
            await control.close()
    return 0
