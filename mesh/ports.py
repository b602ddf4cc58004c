"""Ports: the interfaces between the sans-IO core and whatever drives it.

The core never performs I/O. Two kinds of interface live here:

* ``AgentContext``: what the core offers to the protocol agents it composes
  (membership/gossip and contract net). An agent seals and queues frames,
  emits events and counts things through it; it never sees a socket.
* ``Transport``, ``Discovery`` and ``TaskRunner``: what a *shell* (``node/``
  for real, ``simulations/`` for virtual) implements around the core. The
  core does not call them; they document the loop every shell runs::

      core.receive(frame, endpoint, now)      # for each inbound frame
      for endpoint, frame in core.frames_to_send(now): transport.send(...)
      while (ev := core.next_event()) is not None: react(ev)
      sleep until core.get_timer(); core.handle_timer(now)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from mesh.events import Event
from protocols.contract_net.host import Inbound
from protocols.envelope import Opened
from protocols.trust import Revocation, TrustStore

__all__ = ["GOSSIP", "AgentContext", "Discovery", "TaskRunner", "Transport"]

#: Recipient of frames that are forwarded unchanged (capability records, revocations)
#: or sent to an endpoint whose node id is not known yet (a seed).
GOSSIP = "gossip"


class AgentContext(Protocol):
    """The core as seen by one of its protocol agents."""

    @property
    def node_id(self) -> str: ...

    @property
    def rng(self) -> random.Random: ...

    def send(
        self,
        kind: str,
        payload: BaseModel,
        to: str | Sequence[str],
        now: float,
        *,
        endpoint: str | None = None,
        ttl: float | None = None,
    ) -> bytes:
        """Seal ``payload`` once for ``to`` (a node id, a list of node ids, or GOSSIP)
        and queue one copy per recipient. Endpoints are resolved from the member
        table unless ``endpoint`` is given (needed for GOSSIP). Returns the frame."""
        ...

    def seal(
        self,
        kind: str,
        payload: BaseModel,
        to: str | Sequence[str],
        now: float,
        *,
        ttl: float | None = None,
    ) -> bytes:
        """Seal one frame without queuing it (a node's own record, forwarded later)."""
        ...

    def open(self, frame: bytes, now: float, digest: bytes | None = None) -> Opened:
        """Open a nested frame (a piggybacked record) through every envelope check."""
        ...

    @property
    def trust(self) -> TrustStore: ...

    def revocation(self, raw: bytes) -> Revocation:
        """Parse a signed revocation list and check its org's signature (raises
        ``RemoteProtocolError``)."""
        ...

    def send_frame(self, endpoint: str, frame: bytes) -> None:
        """Queue an already sealed frame unchanged (gossip forwarding)."""
        ...

    def endpoint_of(self, node_id: str) -> str | None: ...

    def emit(self, event: Event) -> None: ...

    def confirm(self, msg: Inbound, endpoint: str) -> bool:
        """Check the signature of a frame opened with it deferred (a bid). On failure
        the frame is counted and reported as rejected (``bad-signature``): False."""
        ...

    def count(self, name: str, n: int = 1) -> None: ...


class Transport(Protocol):
    """Moves opaque frames between endpoints (shell side)."""

    def send(self, endpoint: str, frame: bytes) -> None: ...

    def close(self) -> None: ...


class Discovery(Protocol):
    """Finds endpoints to knock on (mDNS on a LAN; seeds elsewhere). A hint only:
    trust comes from the signed record, never from discovery."""

    def candidates(self) -> Sequence[str]: ...


class TaskRunner(Protocol):
    """Runs the handler of a capability for a ``TaskAssigned`` event (shell side)."""

    def start(self, task_id: str, capability: str, input: Any, deadline: float) -> None: ...

    def cancel(self, task_id: str) -> None: ...
