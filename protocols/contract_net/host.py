"""Small structural interfaces the contract-net code needs from its surroundings."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel

__all__ = ["ExecutorHost", "Inbound", "OrgPolicy"]


class Inbound(Protocol):
    """An opened frame (``protocols.envelope.Opened`` satisfies it)."""

    @property
    def kind(self) -> str: ...

    @property
    def sender(self) -> str: ...

    @property
    def payload(self) -> BaseModel: ...

    @property
    def certificate(self) -> Any: ...

    @property
    def proof(self) -> tuple[bytes, bytes, bytes, bytes] | None:
        """What a deferred signature check needs (None: the signature was checked)."""
        ...


class OrgPolicy(Protocol):
    """``protocols.trust.TrustStore``: both raise ``RemoteProtocolError(not-permitted)``."""

    def check_offer(self, cert: Any, capability: str) -> None: ...

    def check_request(self, cert: Any, capability: str) -> None: ...


class ExecutorHost(Protocol):
    """What the executor machine needs: sealing, counting, and two notifications
    (the agent turns them into ``TaskAssigned`` / ``TaskCancelled`` events)."""

    @property
    def node_id(self) -> str: ...

    @property
    def rng(self) -> random.Random: ...

    def send(self, kind: str, payload: BaseModel, to: Sequence[str], now: float) -> None: ...

    def count(self, name: str, n: int = 1) -> None: ...

    def assigned(
        self,
        task_id: str,
        requester: str,
        capability: str,
        input: Any,
        epoch: int,
        deadline: float,
        semantics: str,
        risk: str,
    ) -> None: ...

    def cancelled(self, task_id: str, epoch: int, reason: str) -> None: ...
