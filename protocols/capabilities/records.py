"""Signed capability records: what a node offers, where, at what load.

A record is the payload of an envelope of kind ``record`` addressed to
``gossip``. Its node signs it once; every other node forwards the frame bytes
unchanged. A receiver deduplicates by ``sha256(frame)`` *before* verifying,
then keeps only the newest ``(incarnation, seq)`` per node.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from protocols.codec import MAX_COUNTER

__all__ = ["RECORD_KIND", "CapabilityRecord", "CapabilitySpec", "RecordCache", "RecordInfo"]

RECORD_KIND = "record"


class CapabilitySpec(BaseModel):
    """One capability a node offers.

    ``cost`` holds free-form numeric hints (e.g. ``{"usd_per_call": 0.01,
    "latency_s": 2.0}``) that bidding strategies may use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=128)
    version: str = Field(default="1.0", min_length=1, max_length=32)
    description: str = Field(default="", max_length=1024)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    max_concurrency: int = Field(default=1, ge=1)
    cost: dict[str, float] = Field(default_factory=dict)


class CapabilityRecord(BaseModel):
    """Payload of kind ``record``.

    ``load`` is the fraction of capacity in use (0.0 idle … 1.0 full, may exceed 1
    when queued). ``leaving`` marks the final record of a node that leaves
    gracefully. ``node_id`` must equal the envelope's sender.

    The wire does not check the offers against the trust policy (no
    ``permissions()``): a receiver applies the record and ignores the offers its
    policy does not allow (``RecordIngest.check``). Refusing the whole record cut the
    member off: one capability outside a partner org's scope isolated its node.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    node_id: str = Field(min_length=1, max_length=128)
    endpoints: list[str] = Field(max_length=8)
    capabilities: list[CapabilitySpec] = Field(max_length=256)
    load: float = Field(default=0.0, ge=0.0)
    incarnation: int = Field(ge=0, le=MAX_COUNTER)
    seq: int = Field(ge=0, le=MAX_COUNTER)
    leaving: bool = False


class RecordInfo:
    """A verified record as kept in the member table and the index (lean, shared).

    ``frame`` is the exact signed envelope, forwarded as it is.
    """

    __slots__ = ("alive_entry", "certificate", "digest", "frame", "org", "record", "signed")

    def __init__(
        self,
        record: CapabilityRecord,
        org: str,
        frame: bytes,
        digest: bytes,
        certificate: Any = None,
        signed: CapabilityRecord | None = None,
    ) -> None:
        self.record = record
        self.org = org
        self.frame = frame
        self.digest = digest
        #: The signer's certificate, to check the offers again when the trust policy
        #: changes (``RecordIngest.refilter``); None for our own record.
        self.certificate = certificate
        #: The record as signed: ``record`` leaves out the offers our policy does not
        #: allow (``OFFERS_IGNORED``), ``signed`` keeps them.
        self.signed = record if signed is None else signed
        # The member table's push-pull digest entry for this record's node while it is
        # alive, made on first use; shared by every node of a process that holds it.
        self.alive_entry: tuple[str, int, int, int] | None = None

    @property
    def node_id(self) -> str:
        return self.record.node_id

    @property
    def version(self) -> tuple[int, int]:
        """``(incarnation, seq)``: records only move forward in this order."""
        return (self.record.incarnation, self.record.seq)

    @property
    def endpoint(self) -> str:
        return self.record.endpoints[0] if self.record.endpoints else ""

    def __repr__(self) -> str:
        return f"RecordInfo({self.node_id!r}, inc={self.record.incarnation}, seq={self.record.seq})"


#: Most bytes of frames one generation of ``RecordCache.digest_of``'s memo holds
#: (two generations: at most twice this, plus the frame that crosses the line).
DIGEST_MEMO_BYTES = 8 << 20


class RecordCache:
    """Interns verified records by digest so many nodes in one process share one copy.

    Records are immutable, so sharing the parsed object is safe; each node still
    runs its own verification and trust checks. Bounded: the oldest entries go, and
    only the newest version of each node's record is kept (a member re-signing its
    record 3,000 times with 200 KB schemas filled a node's cache with every version:
    +1.5 GB). An older version is returned as it is, not kept.
    """

    __slots__ = (
        "_by_node",
        "_digest_bytes",
        "_digests",
        "_digests_max",
        "_digests_old",
        "_entries",
        "_max",
    )

    def __init__(self, max_entries: int = 1 << 20) -> None:
        self._entries: dict[bytes, RecordInfo] = {}
        #: node id -> the digest of its newest record kept
        self._by_node: dict[str, bytes] = {}
        self._max = max_entries
        # SHA-256 of record frames already hashed, in two generations (the older is
        # dropped whole when the younger fills: bounded, no per-entry eviction). A
        # generation holds at most DIGEST_MEMO_BYTES of frames: the memo sits before
        # any signature check, so a peer sending junk must not fill memory with it.
        self._digests: dict[bytes, bytes] = {}
        self._digests_old: dict[bytes, bytes] = {}
        self._digests_max = max(1, min(max_entries, 1 << 15))
        self._digest_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def digest_of(self, frame: bytes) -> bytes:
        """``sha256(frame).digest()``, remembered for the frames hashed recently.

        Every node that receives a gossiped record hashes it to look it up in its
        seen-digest cache, and most arrivals are copies (~7 per record and node in
        a 1,000-node run). A bytes object caches its own ``hash()``, so a frame met
        again costs a dict lookup (and one comparison of equal bytes) instead of a
        SHA-256. A frame not remembered is hashed, as without the memo."""
        found = self._digests.get(frame)
        if found is not None:
            return found
        found = self._digests_old.get(frame)
        if found is None:
            found = hashlib.sha256(frame).digest()
        if len(self._digests) >= self._digests_max or self._digest_bytes >= DIGEST_MEMO_BYTES:
            self._digests_old = self._digests
            self._digests = {}
            self._digest_bytes = 0
        self._digests[frame] = found
        self._digest_bytes += len(frame)
        return found

    def shared_digest(self, digest: bytes) -> bytes:
        """The interned record's own copy of ``digest`` when there is one (so that the
        nodes' seen-digest caches hold one bytes object per record, not one per node)."""
        found = self._entries.get(digest)
        return digest if found is None else found.digest

    def intern(self, info: RecordInfo) -> RecordInfo:
        entries = self._entries
        found = entries.get(info.digest)
        if found is not None:
            return found
        node = info.node_id
        kept = self._by_node.get(node)
        if kept is not None:
            current = entries[kept]
            if current.version >= info.version:
                return info  # an older version (or a rival of the same): not kept
            del entries[kept]
        elif len(entries) >= self._max:
            oldest = next(iter(entries))
            del self._by_node[entries.pop(oldest).node_id]
        entries[info.digest] = info
        self._by_node[node] = info.digest
        return info
