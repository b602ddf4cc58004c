"""Record ingestion: deduplicate by digest *before* verifying, verify once, check trust.

``RecordIngest`` is the pure part of receiving a gossiped record frame. It keeps
a bounded FIFO of the digests already handled (valid or not), so each distinct
record costs at most one signature verification per node; the caller supplies
``open`` (the wire) and ``check_offer`` (the trust store) and maps the verdict
to counters: ``records_verified``, ``records_duplicate_skipped`` and
``dropped.<code>`` with a ``RemoteProtocolError`` code. A record some of whose
offers the trust policy does not allow is kept without them (``OFFERS_IGNORED``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from protocols.capabilities.records import (
    RECORD_KIND,
    CapabilityRecord,
    CapabilitySpec,
    RecordCache,
    RecordInfo,
)
from protocols.errors import RemoteProtocolError

__all__ = ["DUPLICATE", "OFFERS_IGNORED", "OpenedFrame", "RecordIngest"]

#: Verdict of a frame whose digest was handled before (no verification done).
DUPLICATE = "duplicate"
#: Verdict of a record kept without the offers our trust policy does not allow.
OFFERS_IGNORED = "offers-ignored"


class OpenedFrame(Protocol):
    """What is read of an opened envelope (``protocols.envelope.Opened``)."""

    @property
    def kind(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def org(self) -> str: ...
    @property
    def payload(self) -> BaseModel: ...
    @property
    def certificate(self) -> Any: ...
    @property
    def frame(self) -> bytes: ...
    @property
    def digest(self) -> bytes: ...


class RecordIngest:
    """The seen-digest cache and the checks every record passes once."""

    __slots__ = ("_arrivals", "_cache", "_min_size", "_seen")

    def __init__(self, min_size: int, cache: RecordCache) -> None:
        # A set and its arrival order, oldest out first: ~45 B per digest where an
        # OrderedDict took ~77 (one per member and node: 10⁶ of them at 1,000 nodes).
        self._seen: set[bytes] = set()
        self._arrivals: deque[bytes] = deque()
        self._min_size = min_size
        self._cache = cache

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seen

    def remember(self, digest: bytes, members: int) -> bool:
        """Note ``digest``; False if it was known. Keeps max(min_size, 4 × members)."""
        seen = self._seen
        if digest in seen:
            return False
        digest = self._cache.shared_digest(digest)
        seen.add(digest)
        self._arrivals.append(digest)
        self._trim(max(self._min_size, 4 * members))
        return True

    def _trim(self, cap: int) -> None:
        seen, arrivals = self._seen, self._arrivals
        while len(seen) > cap:
            seen.discard(arrivals.popleft())

    def unseen(
        self, frames: Sequence[bytes], members: int
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        """The frames not handled before, each with its digest (now remembered),
        and how many were skipped as duplicates. The hot path of gossip: most
        piggybacked records are copies a node already has."""
        seen = self._seen
        arrive = self._arrivals.append
        shared = self._cache.shared_digest
        digest_of = self._cache.digest_of
        fresh: list[tuple[bytes, bytes]] = []
        for frame in frames:
            digest = digest_of(frame)
            if digest not in seen:
                digest = shared(digest)
                seen.add(digest)
                arrive(digest)
                fresh.append((frame, digest))
        if fresh:
            self._trim(max(self._min_size, 4 * members))
        return fresh, len(frames) - len(fresh)

    def digest_of(self, frame: bytes) -> bytes:
        """The SHA-256 of a record frame (remembered for frames met often)."""
        return self._cache.digest_of(frame)

    def ingest(
        self,
        frame: bytes,
        now: float,
        members: int,
        open_frame: Callable[[bytes, float, bytes], OpenedFrame],
        check_offer: Callable[[Any, str], None],
    ) -> tuple[str, RecordInfo | None, bool]:
        """``(verdict, info, verified)``: verdict ``"ok"``, ``DUPLICATE`` or an error
        code; ``verified`` tells whether the signature was checked successfully."""
        digest = self._cache.digest_of(frame)
        if not self.remember(digest, members):
            return DUPLICATE, None, False
        return self.ingest_unseen(frame, digest, now, open_frame, check_offer)

    def ingest_unseen(
        self,
        frame: bytes,
        digest: bytes,
        now: float,
        open_frame: Callable[[bytes, float, bytes], OpenedFrame],
        check_offer: Callable[[Any, str], None],
    ) -> tuple[str, RecordInfo | None, bool]:
        """``ingest`` of a frame ``unseen`` already remembered (no duplicate check)."""
        try:
            opened = open_frame(frame, now, digest)
        except RemoteProtocolError as err:
            return err.code, None, False
        verdict, info = self.check(opened, frame, digest, check_offer)
        return verdict, info, True

    def check(
        self,
        opened: OpenedFrame,
        frame: bytes,
        digest: bytes,
        check_offer: Callable[[Any, str], None],
    ) -> tuple[str, RecordInfo | None]:
        """The checks after a successful ``open``: kind, sender, offers allowed."""
        record = opened.payload
        if opened.kind != RECORD_KIND or not isinstance(record, CapabilityRecord):
            return "unexpected-message", None
        if record.node_id != opened.sender:
            return "malformed", None
        cert = opened.certificate
        try:
            allowed = _allowed_offers(record, cert, check_offer)
        except RemoteProtocolError as err:
            return err.code, None
        if allowed is None:
            return "ok", self._cache.intern(RecordInfo(record, opened.org, frame, digest, cert))
        # The member is accepted; the offers our policy does not allow are left out of
        # this node's copy (not interned: another node's policy may allow them). The
        # signed frame is kept whole and forwarded unchanged.
        narrowed = record.model_copy(update={"capabilities": allowed})
        return OFFERS_IGNORED, RecordInfo(narrowed, opened.org, frame, digest, cert, record)

    @staticmethod
    def refilter(info: RecordInfo, check_offer: Callable[[Any, str], None]) -> RecordInfo | None:
        """``info`` with its offers checked again against the trust policy as it is now
        (a reload changed it), or None if the offers kept do not change. A policy that
        refuses the signer's org now keeps none of them (its frames are refused from
        now on; membership lets it go)."""
        signed = info.signed
        if info.certificate is None:
            return None  # nothing to check it with (our own record)
        try:
            allowed = _allowed_offers(signed, info.certificate, check_offer)
        except RemoteProtocolError:
            allowed = []
        kept = signed.capabilities if allowed is None else allowed
        if [c.name for c in kept] == [c.name for c in info.record.capabilities]:
            return None
        record = signed if allowed is None else signed.model_copy(update={"capabilities": kept})
        return RecordInfo(record, info.org, info.frame, info.digest, info.certificate, signed)


def _allowed_offers(
    record: CapabilityRecord, certificate: Any, check_offer: Callable[[Any, str], None]
) -> list[CapabilitySpec] | None:
    """The offers of ``record`` the policy allows, or None when it allows every one.
    An error of the policy other than ``not-permitted`` (an org no longer trusted)
    is raised."""
    allowed: list[CapabilitySpec] | None = None  # None: every offer is allowed
    for i, cap in enumerate(record.capabilities):
        try:
            check_offer(certificate, cap.name)
        except RemoteProtocolError as err:
            if err.code != "not-permitted":
                raise
            if allowed is None:
                allowed = list(record.capabilities[:i])
            continue
        if allowed is not None:
            allowed.append(cap)
    return allowed
