"""The embedding API: a Parley node inside an asyncio program.

::

    from node import Node, LocalOrg

    org = LocalOrg("acme")
    node = Node.from_org(org, "worker-1", seeds=["tcp://127.0.0.1:7001"])

    @node.capability("summarize", version="1.2", max_concurrency=4)
    async def summarize(task):
        task.progress(50, "halfway")
        return {"summary": task.input["text"][:100]}

    async with node:
        # Runs on the best *peer* offering summarize; here only when no peer bids.
        result = await node.request("summarize", {"text": "..."}, timeout=30)
        print(result.value, result.executor)

``request`` raises ``ContractNetError`` (no bidders, attempts exhausted,
outcome unknown, timeout) with the attempts that were made.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mesh.events import Event
from node.core_adapter import (
    CAPABILITY_NAME_MAX,
    MAX_CONCURRENCY_MAX,
    build_core,
    capability_spec,
    task_spec,
)
from node.discovery import MdnsDiscovery
from node.handlers import Handler, Task, as_async
from node.runtime import CLOSED, Result, Runtime
from node.supervision import RISK_LEVELS, Approver
from node.transport import TransportLimits, endpoint_problem
from protocols.capabilities.versions import parse_version
from protocols.crypto import Ed25519Signer, Ed25519Verifier
from protocols.errors import ConfigError, ContractNetError, LocalProtocolError, MeshError
from protocols.identity import NodeIdentity, node_id_from_public_key
from protocols.membership.config import MembershipConfig
from protocols.trust import (
    Certificate,
    OrgPolicy,
    TrustStore,
    capability_allowed,
    issue_certificate,
    parse_certificate,
)

__all__ = ["CapabilityDecl", "LocalOrg", "Node", "Result"]

#: The longest expected run time a capability may declare (a day).
ETA_MAX = 86400.0

H = TypeVar("H", bound=Handler)
#: ``approve=``: an ``Approver`` (async), or a plain function run in a thread.
AnyApprover = Approver | Callable[[Task], "bool | str"]


class LocalOrg:
    """An in-memory organization (root key from OS entropy): demos, tests, examples."""

    def __init__(self, name: str, *, seed: bytes | None = None) -> None:
        self.name = name
        self.seed = seed or os.urandom(32)
        self.signer = Ed25519Signer(self.seed)

    def policy(self) -> OrgPolicy:
        return OrgPolicy(self.name, self.signer.public_key)

    def issue(self, node_name: str, *, days: float = 1.0) -> tuple[NodeIdentity, bytes]:
        ident = NodeIdentity.from_seed(os.urandom(32))
        now = time.time()
        cert = issue_certificate(
            self.signer,
            self.name,
            ident.public_key,
            node_name,
            not_before=now - 60,
            not_after=now + days * 86400,
        )
        return ident, cert


@dataclass(frozen=True, slots=True)
class CapabilityDecl:
    name: str
    version: str
    max_concurrency: int
    bid: float
    handler: Handler
    approve: Approver | None = None
    eta: float | None = None


def certificate_problem(cert: Certificate, trust: TrustStore, now: float) -> str | None:
    """Why peers would refuse this node's certificate, in one line (None: they accept it).

    A certificate of an org the trust store does not hold, or signed by another root
    key than the store's for that org name, or outside its validity dates, starts a
    node that every peer drops (``untrusted-org``, ``expired``) in silence."""
    policy = trust.get(cert.org)
    if policy is None:
        return f"the certificate's org {cert.org!r} is not in this node's trust store"
    if policy.root_key != cert.org_key:
        return (
            f"the certificate names org {cert.org!r} but is signed by another key than "
            f"that org's root in the trust store: peers would refuse it (untrusted-org)"
        )
    if now < cert.not_before:
        return f"the certificate is not valid before {_utc(cert.not_before)}"
    if now > cert.not_after:
        return f"the certificate expired at {_utc(cert.not_after)}: issue a new one"
    if node_id_from_public_key(cert.node_key) in trust.revoked(cert.org):
        return f"this node is on org {cert.org!r}'s revocation list: peers refuse it"
    return None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class Node:
    """A mesh node on the running event loop; use ``async with node:``.

    Membership timing: ``preset`` ("lan", "wan", "local"), or ``membership``, a whole
    ``MembershipConfig`` (e.g. ``tuned({"preset": "lan", "probe_interval": "500ms"})``,
    the same table a scenario or a node.toml takes), which then wins over ``preset``.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        certificate: bytes,
        trust: TrustStore,
        *,
        listen: str = "tcp://127.0.0.1:*",
        advertise: str | None = None,
        seeds: Sequence[str] = (),
        mdns: bool = False,
        mdns_interfaces: Sequence[str] = ("127.0.0.1",),
        preset: str = "lan",
        membership: MembershipConfig | None = None,
        limits: TransportLimits | None = None,
        grace: float = 5.0,
    ) -> None:
        self.identity = identity
        self.certificate = parse_certificate(certificate)
        if self.certificate.node_key != identity.public_key:
            raise LocalProtocolError("the certificate is for another key", code="config")
        self._cert_bytes = certificate
        self.trust = trust
        self.listen = listen
        self.advertise = advertise
        problem = endpoint_problem(listen, advertise, seeds)
        if problem is not None:
            key, value, why = problem
            if why == "not-tcp":
                raise ConfigError(f"{value!r} is not tcp://host:port")
            if key == "advertise":
                raise ConfigError(f"advertise {value!r} is not an address peers can dial")
            raise ConfigError(
                f"listen {value!r} binds every interface: give advertise, the "
                "tcp://ADDRESS:PORT peers should dial"
            )
        self.seeds = tuple(seeds)
        self.mdns = mdns
        self.mdns_interfaces = tuple(mdns_interfaces)
        self.preset = preset
        self.membership = membership
        self.limits = limits
        self.grace = grace
        self._decls: dict[str, CapabilityDecl] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self.runtime: Runtime | None = None
        self.discovery: MdnsDiscovery | None = None

    @classmethod
    def from_org(
        cls, org: LocalOrg, name: str, *, trust: Sequence[LocalOrg] = (), **kwargs: Any
    ) -> Node:
        """A node certified by ``org`` that trusts ``org`` and the ``trust`` orgs."""
        ident, cert = org.issue(name)
        orgs = {o.name: o for o in (org, *trust)}
        store = TrustStore(o.policy() for o in orgs.values())
        return cls(ident, cert, store, **kwargs)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def endpoint(self) -> str:
        return self._rt().endpoint

    # -- capabilities --------------------------------------------------------

    def capability(
        self,
        name: str,
        *,
        version: str = "1.0",
        max_concurrency: int = 1,
        bid: float = 1.0,
        approve: AnyApprover | None = None,
        eta: float | None = None,
    ) -> Callable[[H], H]:
        """Decorator: serve ``name`` with an ``async def handler(task) -> JSON``.

        ``approve``: awaited before the handler (e.g. ``ApprovalDesk.gate("high")``);
        True runs it, False or a reason fails the task with ``not approved: ...``. A
        plain ``def`` approver runs in a thread, as a plain handler does.
        ``eta``: the handler's expected run time in seconds (default 1): a request
        whose deadline leaves less is refused (``deadline``); give a fast handler a
        small one so that requests with short timeouts reach it."""

        def register(fn: H) -> H:
            self.add_capability(
                name,
                fn,
                version=version,
                max_concurrency=max_concurrency,
                bid=bid,
                approve=approve,
                eta=eta,
            )
            return fn

        return register

    def add_capability(
        self,
        name: str,
        handler: Handler,
        *,
        version: str = "1.0",
        max_concurrency: int = 1,
        bid: float = 1.0,
        approve: AnyApprover | None = None,
        eta: float | None = None,
    ) -> None:
        if self.runtime is not None:
            raise LocalProtocolError("add capabilities before the node starts")
        if name in self._decls:
            raise LocalProtocolError(f"capability {name!r} registered twice")
        _check_capability(name, version, max_concurrency, bid)
        if eta is not None and (
            isinstance(eta, bool)
            or not isinstance(eta, int | float)
            or not (math.isfinite(eta) and 0 < eta <= ETA_MAX)
        ):
            raise ConfigError(
                f"capability {name!r}: eta (expected run time) is seconds above 0 and at "
                f"most {ETA_MAX:g}, not {eta!r}"
            )
        if not capability_allowed(self.certificate.offers, name):
            # Every peer would ignore the offer (its policy checks the certificate).
            raise ConfigError(
                f"capability {name!r}: this node's certificate does not allow offering it "
                f"(its offers: {', '.join(self.certificate.offers) or 'none'})"
            )
        # A plain def handler ran on the event loop and failed with "object int can't
        # be used in 'await' expression" (three times: every auction re-ran it). So did
        # a plain def approver, the error blamed on the handler: it runs in a thread too.
        if approve is not None and not callable(approve):
            raise ConfigError(
                f"capability {name!r}: approve is a function such as "
                f"ApprovalDesk().gate('high'), not {approve!r}"
            )
        approver: Approver | None = None if approve is None else as_async(approve)
        self._decls[name] = CapabilityDecl(
            name, version, max_concurrency, bid, as_async(handler), approver, eta
        )

    def on_event(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every event, synchronously, in order, none dropped
        (``events()`` is a bounded queue that drops the oldest for a slow reader).
        Register before ``start``; keep it quick (it runs on the node's loop)."""
        if self.runtime is not None:
            raise LocalProtocolError("add event listeners before the node starts")
        self._listeners.append(listener)

    def capabilities(self) -> list[dict[str, Any]]:
        """What this node offers."""
        return [
            {"name": d.name, "version": d.version, "max_concurrency": d.max_concurrency}
            for d in self._decls.values()
        ]

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self.runtime is not None:
            if self.runtime.closed:
                raise LocalProtocolError(
                    "this node was stopped and cannot start again: make a new Node"
                )
            raise LocalProtocolError("node already started")
        problem = certificate_problem(self.certificate, self.trust, time.time())
        if problem is not None:
            raise ConfigError(problem)
        specs = [
            capability_spec(d.name, d.version, d.max_concurrency, d.bid, d.eta)
            for d in self._decls.values()
        ]
        rng = random.Random(os.urandom(32))
        factory = build_core(
            self.identity,
            self._cert_bytes,
            self.trust,
            specs,
            rng=rng,
            preset=self.preset,
            membership=self.membership,
        )
        self.runtime = Runtime(
            factory,
            listen=self.listen,
            advertise=self.advertise,
            limits=self.limits,
            handlers={d.name: d.handler for d in self._decls.values()},
            concurrency={d.name: d.max_concurrency for d in self._decls.values()},
            approvers={d.name: d.approve for d in self._decls.values() if d.approve is not None},
            listeners=self._listeners,
        )
        self.runtime.start(self.seeds)
        if self.mdns:
            self.discovery = MdnsDiscovery(
                node_id=self.node_id,
                org=self.certificate.org,
                endpoint=self.runtime.endpoint,
                interfaces=self.mdns_interfaces,
                on_candidate=lambda ep, _props: self._rt().add_candidate(ep),
            )
            try:
                await self.discovery.start()
            except BaseException:
                await self.runtime.stop(0)
                raise

    async def stop(self, grace: float | None = None) -> dict[str, int]:
        out = {"finished": 0, "handed_back": 0}
        grace = self.grace if grace is None else grace
        if self.runtime is not None and not self.runtime.closed:
            # Saga steps in flight are cancelled, and saga compensations (theirs, and
            # those running in their own task after a timeout around a saga) end
            # first, within the grace; those still running are logged.
            from node.workflow import finish_compensations, stop_steps

            started = time.monotonic()
            await stop_steps(self, grace)
            await finish_compensations(self, max(0.0, grace - (time.monotonic() - started)))
            grace = max(0.0, grace - (time.monotonic() - started))
        if self.discovery is not None:
            await self.discovery.close()
            self.discovery = None
        if self.runtime is not None and not self.runtime.closed:
            out = await self.runtime.stop(grace)
        return out

    def reload_trust(self, trust: TrustStore) -> dict[str, list[str]]:
        """Adopt a new trust store's orgs, policies and (newer) revocation lists while
        running: frames of a removed org or a revoked node are refused from now on.
        What changed, by kind (``TrustStore.replace``), and under ``offers`` the
        members (id prefixes) whose offers the new policy keeps differently: they are
        checked again now. Newer revocation lists are handed on to the mesh by gossip."""
        changes = self.trust.replace(trust)
        if self.runtime is not None:
            # Known members' offers are checked again under the new policy now: a
            # widened one used to take effect at their next record, up to 30 min later.
            changes["offers"] = [i[:10] for i in self.runtime.trust_changed()]
            if changes["revocations"]:
                self.runtime.spread_revocations()
        return changes

    def check_certificate(self, certificate: bytes, trust: TrustStore | None = None) -> Certificate:
        """The renewed certificate ``replace_certificate`` would adopt, checked: signed by
        its org, for this node's key and org, accepted by ``trust`` (default: ours) now,
        and allowing every capability this node offers. Otherwise ``ConfigError``."""
        try:
            cert = parse_certificate(certificate)
            cert.verify_signature(Ed25519Verifier())
        except MeshError as exc:
            raise ConfigError(f"the new certificate is not valid: {exc.message}") from None
        old = self.certificate
        if cert.node_key != old.node_key:
            raise ConfigError("the new certificate is for another node key")
        if cert.org != old.org:
            raise ConfigError(
                f"the new certificate is of org {cert.org!r}, this node is of {old.org!r}: "
                "a node changes org by a restart"
            )
        problem = certificate_problem(cert, self.trust if trust is None else trust, time.time())
        if problem is not None:
            raise ConfigError(f"the new certificate would be refused: {problem}")
        left_out = [n for n in self._decls if not capability_allowed(cert.offers, n)]
        if left_out:
            raise ConfigError(
                f"the new certificate does not allow offering {', '.join(left_out)} "
                f"(its offers: {', '.join(cert.offers) or 'none'})"
            )
        return cert

    def replace_certificate(self, certificate: bytes) -> dict[str, list[str]]:
        """Adopt a renewed certificate while running (``mesh-node reload``): our frames
        and record carry it from now on. Checked first (``check_certificate``); a
        refused one is a ``ConfigError`` and changes nothing. What changed, by field."""
        cert = self.check_certificate(certificate)
        old = self.certificate
        if cert.raw == old.raw:
            return {"certificate": []}
        if self.runtime is not None and not self.runtime.closed:
            self.runtime.replace_certificate(cert.raw)
        self.certificate, self._cert_bytes = cert, cert.raw
        changed = [f"valid until {_utc(cert.not_after)}"]
        if cert.offers != old.offers:
            changed.append(f"offers {', '.join(cert.offers) or 'none'}")
        if cert.requests != old.requests:
            changed.append(f"requests {', '.join(cert.requests) or 'none'}")
        return {"certificate": changed}

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _rt(self) -> Runtime:
        if self.runtime is None:
            raise LocalProtocolError("the node is not started (use `async with node:`)")
        return self.runtime

    # -- requests ------------------------------------------------------------

    def submit_nowait(self, capability: str, input: Any = None, **opts: Any) -> tuple[str, Any]:
        """Start a request; returns (task id, future of Result)."""
        spec = task_spec(capability, input, **opts)
        if spec.risk not in RISK_LEVELS:
            # Executors hold an unknown risk as critical (for a peer's newer levels);
            # our own caller's typo ("HIGH") is refused, as `mesh-node submit --risk` is.
            raise LocalProtocolError(f"risk {spec.risk!r} is not one of {', '.join(RISK_LEVELS)}")
        if not capability_allowed(self.certificate.requests, capability):
            # Every executor would refuse it (not-permitted): say so here, now.
            raise LocalProtocolError(
                f"this node's certificate does not allow requesting {capability!r} "
                f"(its requests: {', '.join(self.certificate.requests) or 'none'})",
                code="not-permitted",
            )
        return self._rt().submit(spec)

    async def request(
        self,
        capability: str,
        input: Any = None,
        *,
        strategy: str = "least_loaded",
        timeout: float = 60.0,
        risk: str = "low",
        semantics: str = "at-least-once",
        **opts: Any,
    ) -> Result:
        """Run ``capability`` on the best peer and return its ``Result``. It ends by
        ``timeout`` seconds from now, or by ``deadline`` (unix seconds) if that option
        is given.

        Raises ``LocalProtocolError`` before anything is sent (no task is made):
        the node is not started (code ``local-misuse``) or has stopped (``closed``);
        a bad option or argument (an unknown option, strategy or semantics, a value of
        the wrong type or out of range such as a timeout that is not a positive number,
        a capability name not 1 to 128 characters, a risk not one of ``RISK_LEVELS``:
        ``local-misuse``); an input no frame could carry (not msgpack with string map
        keys and at most 31 levels of nesting, or over ~252 KiB encoded: ``bad-input``);
        a capability this node's certificate does not allow it to request
        (``not-permitted``).

        Raises ``ContractNetError`` once the request is under way and ends without a
        result, its ``code`` one of ``no-bidders``, ``attempts-exhausted``,
        ``lease-expired``, ``timeout``, ``cancelled`` (``cancel()``, or the node
        stopping), ``outcome-unknown``, ``task-failed``; ``attempts`` says what each
        try came to. Both are ``MeshError`` subclasses. Cancelling the call cancels the
        task in the mesh, and the ``CancelledError`` goes on up."""
        task_id, fut = self.submit_nowait(
            capability,
            input,
            strategy=strategy,
            timeout=timeout,
            risk=risk,
            semantics=semantics,
            **opts,
        )
        # An explicit ``deadline`` (unix seconds) is the task's end in the mesh, not
        # ``timeout``: a later one used to be cut short here, the result dropped.
        deadline = opts.get("deadline")
        waits = timeout if deadline is None else max(0.0, deadline - time.time())
        try:
            async with asyncio.timeout(waits + 2.0):
                result: Result = await fut
                return result
        except TimeoutError:
            self.cancel(task_id)
            raise ContractNetError(
                f"{capability}: no result in {waits:g}s", code="timeout"
            ) from None
        except asyncio.CancelledError:
            # The caller gave up (a timeout around it, fan_out stopping the others, a
            # Saga cancelled): the task is cancelled in the mesh too, and its holder
            # told, instead of running on for nobody.
            self.cancel(task_id)
            raise

    def cancel(self, task_id: str) -> bool:
        """Cancel one of this node's requests that has not ended: the holder, if any, is
        told to stop, and the request fails with ``cancelled``. False if it had ended."""
        if self.runtime is None:
            return False
        return self.runtime.cancel(task_id)

    # -- views ---------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        return [p.as_json() for p in self._rt().peers.values()]

    def tasks(self) -> list[dict[str, Any]]:
        return [t.as_json() for t in self._rt().tasks.values()]

    def statistics(self) -> dict[str, int]:
        return self._rt().statistics()

    def events(self) -> AsyncIterator[Event]:
        """Every core event from this call on (a slow reader loses the oldest); it
        ends when the node stops. It used to subscribe only at its first iteration,
        so ``it = node.events(); await node.request(...)`` missed the request's."""
        return _Events(self._rt())

    async def wait_for_peers(self, n: int, timeout: float = 10.0) -> bool:
        """Wait (bounded) until at least ``n`` peers are known alive."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(p.state == "alive" for p in self._rt().peers.values()) >= n:
                return True
            await asyncio.sleep(0.02)
        return False


class _Events:
    """``Node.events()``: subscribed when made, unsubscribed when it ends, is closed
    (``aclose``) or is dropped (a loop left by ``break``)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        # a stopped node has no more events (this used to wait forever)
        self._q: asyncio.Queue[Event] | None = None if rt.closed else rt.subscribe()

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        if self._q is None:
            raise StopAsyncIteration
        ev = await self._q.get()
        if ev is CLOSED:  # the node stopped
            self.close()
            raise StopAsyncIteration
        return ev

    def close(self) -> None:
        if self._q is not None:
            self._rt.unsubscribe(self._q)
            self._q = None

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _check_capability(name: str, version: str, max_concurrency: int, bid: float) -> None:
    """What a capability record can carry, checked when it is declared (it used to fail
    at ``start`` with a multi-line pydantic error, or, for a negative bid, to start a
    node that refused every cfp)."""
    if not isinstance(name, str) or not 1 <= len(name) <= CAPABILITY_NAME_MAX:
        raise ConfigError(f"capability name: 1 to {CAPABILITY_NAME_MAX} characters, not {name!r}")
    try:
        parse_version(version)
    except (LocalProtocolError, AttributeError):
        raise ConfigError(
            f"capability {name!r}: version {version!r} is not like 1, 1.2 or 1.2.3"
        ) from None
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise ConfigError(f"capability {name!r}: max_concurrency must be a whole number")
    if not 1 <= max_concurrency <= MAX_CONCURRENCY_MAX:
        raise ConfigError(
            f"capability {name!r}: max_concurrency 1 to {MAX_CONCURRENCY_MAX}, not {max_concurrency}"
        )
    if isinstance(bid, bool) or not isinstance(bid, int | float) or not 0 <= bid < math.inf:
        raise ConfigError(f"capability {name!r}: bid must be a finite number >= 0, not {bid!r}")
