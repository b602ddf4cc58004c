"""The one place where the shell builds core objects (MeshNodeCore, specs).

Keeping it here means the shell depends on the core's constructor in one
spot; everything else talks to it through ``node.runtime.CoreLike``.

Nodes embedded in one process share two memos, so that a frame sent to several
of them (a call for proposals, an award, a gossiped record) costs one
signature verification (``node.verify_memo``) and one decode
(``protocols.envelope.FrameMemo``, one per event loop: it is not thread-safe);
every node still runs every check of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from node.verify_memo import shared_verifier
from protocols.capabilities.records import CapabilitySpec
from protocols.contract_net.task import TaskSpec
from protocols.errors import LocalProtocolError
from protocols.identity import NodeIdentity
from protocols.membership.config import MembershipConfig
from protocols.trust import TrustStore, parse_certificate

__all__ = ["build_core", "capability_spec", "task_spec"]

#: Small on purpose: co-located nodes open a shared frame within milliseconds.
_MEMO_FRAMES = 1024
_MEMO_CERTS = 1024
_frame_memos: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


def _frame_memo() -> Any:
    """The decode memo shared by the nodes on the running loop (None off a loop)."""
    from protocols.envelope import FrameMemo
    from protocols.kinds import PAYLOADS

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    memo = _frame_memos.get(loop)
    if memo is None:
        memo = FrameMemo(PAYLOADS, certificates=_MEMO_CERTS, frames=_MEMO_FRAMES)
        _frame_memos[loop] = memo
    return memo


#: What a capability declaration may hold, in node.toml and in the embedding API alike:
#: a record carries names of at most 128 characters (``CapabilitySpec``), and a
#: daemon runs at most this many handlers of one capability at once.
CAPABILITY_NAME_MAX = 128
MAX_CONCURRENCY_MAX = 10_000


def capability_spec(
    name: str, version: str, max_concurrency: int, bid: float, eta: float | None = None
) -> CapabilitySpec:
    """A capability as its record carries it. ``eta``: the expected run time in seconds
    (default 1 s): a cfp whose deadline leaves less is refused (``deadline``)."""
    cost = {"bid": float(bid)} if eta is None else {"bid": float(bid), "eta": float(eta)}
    return CapabilitySpec(name=name, version=version, max_concurrency=max_concurrency, cost=cost)


def task_spec(capability: str, input: Any = None, **opts: Any) -> TaskSpec:
    try:
        return TaskSpec(capability=capability, input=input, **opts)
    except TypeError as exc:
        raise LocalProtocolError(f"bad request option: {exc}") from None


def build_core(
    identity: NodeIdentity,
    certificate: bytes,
    trust: TrustStore,
    capabilities: Sequence[CapabilitySpec],
    *,
    rng: random.Random,
    preset: str = "lan",
    membership: MembershipConfig | None = None,
) -> Callable[[str], Any]:
    """A factory the Runtime calls once it knows its bound endpoint. ``membership``
    (e.g. from a ``[membership]`` table, ``tuned``) replaces the preset's settings."""
    from mesh.core import CoreConfig, MeshNodeCore

    cert = parse_certificate(certificate)
    presets = {"lan": CoreConfig.lan, "wan": CoreConfig.wan, "local": CoreConfig.local}
    if preset not in presets:
        raise LocalProtocolError(f"unknown preset {preset!r} (lan, wan, local)", code="config")
    config = presets[preset]() if membership is None else CoreConfig(membership=membership)

    def make(endpoint: str) -> Any:
        verifier = shared_verifier()
        core = MeshNodeCore(
            config,
            identity,
            cert,
            trust,
            rng=rng,
            verifier=verifier,
            endpoint=endpoint,
            capabilities=list(capabilities),
            now=time.time(),
            memo=_frame_memo(),
        )
        verifier.register(core)  # the memo works once two nodes share the process
        return core

    return make
