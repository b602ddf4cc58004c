"""Payload models of the membership kinds (``MEMBERSHIP_PAYLOADS``).

Every model is frozen with ``extra="forbid"`` and carries only msgpack types.
``records`` fields hold complete signed ``record`` envelopes (bytes), forwarded
unchanged; ``claims`` hold suspect/dead claims about *other* nodes, vouched for
by the signer of the carrying frame. Alive-ness and refutation never travel as
claims: they travel as the node's own newly signed record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from protocols.capabilities.records import RECORD_KIND, CapabilityRecord
from protocols.codec import MAX_COUNTER

__all__ = [
    "MAX_CLAIMS",
    "MAX_DIGEST",
    "MAX_PARTS",
    "MAX_RECORDS",
    "MAX_REVOCATION_GOSSIP",
    "MEMBERSHIP_PAYLOADS",
    "Ack",
    "Claim",
    "DigestEntry",
    "Gossip",
    "IndirectAck",
    "Nack",
    "Ping",
    "PingReq",
    "PushPull",
    "PushPullRecords",
    "PushPullReply",
    "RevocationNotice",
]

MAX_RECORDS = 64
MAX_CLAIMS = 64
MAX_DIGEST = 100_000
#: Most parts of one push-pull digest (``PushPull.parts``).
MAX_PARTS = 1024

#: Status codes used in claims and digests.
ClaimStatus = Literal["suspect", "dead"]


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Claim(_Payload):
    """``by`` suspects (or declared dead) ``node`` at ``incarnation``."""

    node: str = Field(min_length=1, max_length=128)
    incarnation: int = Field(ge=0, le=MAX_COUNTER - 1)  # refuting adds one
    status: ClaimStatus
    by: str = Field(min_length=1, max_length=128)


class _Piggyback(_Payload):
    records: list[bytes] = Field(default_factory=list, max_length=MAX_RECORDS)
    claims: list[Claim] = Field(default_factory=list, max_length=MAX_CLAIMS)


class Ping(_Piggyback):
    """Direct probe. ``target`` is the node id the prober means to reach."""

    seq: int = Field(ge=0)
    target: str


class Ack(_Piggyback):
    """Answer to a ``ping`` with the same ``seq``."""

    seq: int = Field(ge=0)


class PingReq(_Piggyback):
    """Ask the recipient to ping ``target`` for us and report with ``indirect-ack`` or ``nack``."""

    seq: int = Field(ge=0)
    target: str


class IndirectAck(_Payload):
    """``target`` answered the ping we sent on the requester's behalf (its ``seq``)."""

    seq: int = Field(ge=0)
    target: str


class Nack(_Payload):
    """``target`` did not answer our ping within the probe timeout (Lifeguard)."""

    seq: int = Field(ge=0)
    target: str


class Gossip(_Piggyback):
    """Fanout push of fresh updates, every ``gossip_interval``, no answer expected."""


#: ``(node id, incarnation, seq, status)``; status 0 alive, 1 suspect, 2 dead, 3 left.
_Counter = Annotated[int, Field(ge=0, le=MAX_COUNTER)]
DigestEntry = tuple[str, _Counter, _Counter, int]


class PushPull(_Payload):
    """Anti-entropy request: the sender's digest and its own record (``join`` on first contact).

    A digest too large for one frame travels as ``parts`` requests; request ``part``
    holds the members of that bucket only (``pushpull.bucket_of``). ``part`` and
    ``parts`` are left out of the wire form of a whole digest (``parts`` 1)."""

    digest: list[DigestEntry] = Field(max_length=MAX_DIGEST)
    records: list[bytes] = Field(default_factory=list, max_length=MAX_RECORDS)
    join: bool = False
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1, le=MAX_PARTS)

    @model_validator(mode="after")
    def _part_in_range(self) -> PushPull:
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of {self.parts}: part must be below parts")
        return self

    @model_serializer(mode="wrap")
    def _whole_digest_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.parts == 1:
            data.pop("part", None)
            data.pop("parts", None)
        return data


class PushPullReply(_Payload):
    """Records the requester lacks or has older, and the node ids whose records we want."""

    records: list[bytes] = Field(default_factory=list, max_length=MAX_DIGEST)
    want: list[str] = Field(default_factory=list, max_length=MAX_DIGEST)
    digest: list[DigestEntry] = Field(default_factory=list, max_length=MAX_DIGEST)


class PushPullRecords(_Payload):
    """Third leg of a push-pull: the records the peer asked for."""

    records: list[bytes] = Field(default_factory=list, max_length=MAX_DIGEST)


#: Largest revocation list gossiped (bytes): it must fit one frame with its envelope.
MAX_REVOCATION_GOSSIP = 200_000


class RevocationNotice(_Payload):
    """An org's signed revocation list (``protocols.trust`` layout), spread by gossip:
    each node that applies a newer list seals it anew to a few live members, and
    sends the lists it holds to a node that joins through it."""

    revocation: bytes = Field(max_length=MAX_REVOCATION_GOSSIP)


MEMBERSHIP_PAYLOADS: dict[str, type[BaseModel]] = {
    RECORD_KIND: CapabilityRecord,
    "ping": Ping,
    "ack": Ack,
    "ping-req": PingReq,
    "indirect-ack": IndirectAck,
    "nack": Nack,
    "gossip": Gossip,
    "push-pull": PushPull,
    "push-pull-reply": PushPullReply,
    "push-pull-records": PushPullRecords,
    # Not "revocation": that name is the signed list format's own domain tag
    # (protocol.md §2), which no envelope kind may share.
    "revoke": RevocationNotice,
}
