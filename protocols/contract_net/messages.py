"""Payload models of the contract-net kinds (each travels in the signed envelope).

Every model is frozen with ``extra="forbid"``; field types are what msgpack can
carry. ``CONTRACT_NET_PAYLOADS`` maps each kind to its model; ``protocols.kinds``
merges it into the wire's registry.

Flow (n invited bidders that all answer)::

    requester --cfp (1 signature, n copies)--> bidders
    bidder    --propose | refuse (n signatures)--> requester
              (a propose's signature is checked when the requester acts on it:
               the winner's before the award, a backup's before a re-award)
    requester --award (1 signature)--> winner (losers are not told)
    winner    --progress*, result | failure--> requester
    winner    --started--> requester          (at-most-once only: asks to go ahead)
    requester --proceed--> winner            (at-most-once only: go ahead)
    requester --cancel--> superseded holder   (new auction, give up, user cancel)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = [
    "CONTRACT_NET_PAYLOADS",
    "DEFERRED_KINDS",
    "PROGRESS_MESSAGE_MAX",
    "SHORT_REASON_MAX",
    "Award",
    "Cancel",
    "Cfp",
    "Failure",
    "Proceed",
    "Progress",
    "Propose",
    "Refuse",
    "Result",
    "Semantics",
    "Started",
    "short_reason",
]

Semantics = Literal["at-least-once", "at-most-once"]

#: Longest ``reason`` of a ``refuse`` or a ``cancel`` (a short code, or the start of a
#: sentence); a ``failure``'s reason may be longer (256).
SHORT_REASON_MAX = 64
#: Longest ``message`` of a ``progress``.
PROGRESS_MESSAGE_MAX = 256


def short_reason(text: str, limit: int = SHORT_REASON_MAX) -> str:
    """``text`` cut to ``limit`` characters, by default to fit a ``refuse``'s or a
    ``cancel``'s reason (``...`` marks a cut)."""
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Cfp(_Payload):
    """Call for proposals, sealed once for the set of invited bidders."""

    task_id: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=1)
    capability: str = Field(min_length=1, max_length=128)
    version_spec: str = Field(default="*", max_length=64)
    input: Any = None
    constraints: dict[str, Any] = Field(default_factory=dict)
    reply_by: float
    deadline: float
    risk: str = "low"
    budget: float | None = None
    semantics: Semantics = "at-least-once"

    def permissions(self) -> tuple[tuple[str, str], ...]:
        """The envelope checks this against the trust policy (added by the lead: wire hook)."""
        return (("request", self.capability),)


class Propose(_Payload):
    """A bid. ``load`` is running/capacity at bid time (it lags: see strategies)."""

    task_id: str
    round: int = Field(ge=1)
    price: float = Field(ge=0)
    eta: float = Field(ge=0)
    load: float = Field(ge=0)
    running: int = Field(ge=0)
    capacity: int = Field(ge=1)
    confidence: float = Field(default=1.0, ge=0, le=1)
    valid_until: float


class Refuse(_Payload):
    task_id: str
    round: int = Field(ge=1)
    reason: str = Field(max_length=SHORT_REASON_MAX)
    retry_after: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Award(_Payload):
    """One per round (to the winner) or per re-award (new winner + superseded holder).

    ``epoch`` is the fencing token. ``input`` travels only in re-awards: the
    round's winner kept the cfp's input with its bid; a promoted backup may not have.
    """

    task_id: str
    round: int = Field(ge=1)
    epoch: int = Field(ge=1)
    winner: str
    backups: list[str] = Field(default_factory=list)
    capability: str
    semantics: Semantics
    risk: str = "low"
    deadline: float
    lease: float = Field(gt=0)
    has_input: bool = False
    input: Any = None


class Started(_Payload):
    """At-most-once: the holder asks to run; repeated on each heartbeat until ``proceed``.

    At-least-once holders do not send it (the award started the lease).
    """

    task_id: str
    epoch: int = Field(ge=1)


class Proceed(_Payload):
    """At-most-once: the requester confirms the holder's ``started``; only now it runs."""

    task_id: str
    epoch: int = Field(ge=1)


class Progress(_Payload):
    """Renews the lease."""

    task_id: str
    epoch: int = Field(ge=1)
    percent: float | None = Field(default=None, ge=0, le=100)
    message: str | None = Field(default=None, max_length=PROGRESS_MESSAGE_MAX)


class Result(_Payload):
    task_id: str
    epoch: int = Field(ge=1)
    result: Any = None


class Failure(_Payload):
    """The holder failed the task. ``final``: retrying cannot help (the handler said
    so, or its result can never be sent): the requester gives up instead of handing
    the task to a backup or a new auction. Left out of the wire form when false, so a
    failure reads as before to a node that does not know the field."""

    task_id: str
    epoch: int = Field(ge=1)
    reason: str = Field(max_length=256)
    final: bool = False

    @model_serializer(mode="wrap")
    def _final_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.final:
            data.pop("final", None)
        return data


class Cancel(_Payload):
    task_id: str
    epoch: int = Field(ge=0)
    reason: str = Field(max_length=SHORT_REASON_MAX)


CONTRACT_NET_PAYLOADS: dict[str, type[BaseModel]] = {
    "cfp": Cfp,
    "propose": Propose,
    "refuse": Refuse,
    "award": Award,
    "started": Started,
    "proceed": Proceed,
    "progress": Progress,
    "result": Result,
    "failure": Failure,
    "cancel": Cancel,
}

#: Kinds whose signature a node checks only when it acts on the frame: of n bids
#: the requester verifies the one it awards (and a backup's when it promotes it),
#: not the n - 1 that lose. Every other check (size, structure, time window,
#: replay, certificate, recipient, permissions) runs on arrival as for any frame.
DEFERRED_KINDS: frozenset[str] = frozenset({"propose"})
