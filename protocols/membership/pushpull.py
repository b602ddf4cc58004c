"""Push-pull anti-entropy, the pure part: compare two digests.

A digest entry is ``(node id, record incarnation, record seq, status)``. The
requester sends its digest; the responder answers with the records the
requester lacks or holds older, the ids whose records it wants itself, and its
non-alive statuses (as suspect/dead claims). A third message carries the wanted
records. This joins newcomers (the digest of a newcomer is just itself) and
heals partitions.

A digest too large for one frame (above ~4,000 members) is split by bucket: part
``k`` of ``K`` holds the members whose ``bucket_of(id, K)`` is ``k``, and the
responder compares it with its own members of that bucket only, so each part is a
complete exchange for its bucket.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import filterfalse
from operator import itemgetter

from protocols.membership.state import DEAD, SUSPECT

__all__ = [
    "DIGEST_BUDGET",
    "PUSH_PULL_BUDGET",
    "bucket_of",
    "chunk_records",
    "claims_in",
    "compare_digests",
    "digest_parts",
    "in_bucket",
]

#: Most record bytes in one push-pull frame (the wire's frame limit is 256 KiB).
PUSH_PULL_BUDGET = 160 * 1024
#: Most digest bytes in one push-pull frame (an upper bound per entry, see
#: ``digest_parts``). A reply's ``want`` and ``digest`` are each at most one bucket,
#: so a reply fits the frame limit too.
DIGEST_BUDGET = 96 * 1024
#: Upper bound of an entry's msgpack bytes beyond its node id: array and string
#: headers, incarnation and seq (up to 9 bytes each), status.
_ENTRY_OVERHEAD = 22

Entry = tuple[str, int, int, int]


def compare_digests(
    ours: Sequence[Entry] | Mapping[str, Entry], theirs: Iterable[Entry], self_id: str
) -> tuple[list[str], list[str]]:
    """``(ids to send them, ids to ask them for)``, each in our/their digest order.

    ``ours`` is our digest, or the same entries by node id (``MemberTable.digest_map``,
    which the table keeps: nothing of ours is rebuilt per push-pull).

    We send a record when they lack it or hold an older ``(incarnation, seq)``;
    we ask for one when they hold a newer version or one we lack. Our own id is
    never asked for (we are the authority on our record). The record of a member
    held dead is neither sent nor asked for: it was signed before the death and
    would bring the member back alive on a node that declared it dead at a lower
    incarnation (or never knew it); the dead status travels as a claim instead.

    A member held suspect on one side is neither introduced to the other side by this
    exchange nor brought back there from dead: its record is sent, or asked for, only
    to update a side that holds it alive or suspect. As memberlist's ``mergeState``,
    where a suspect entry never adds a node and never revives a dead one. Otherwise a
    member that refuted a suspicion (incarnation + 1) and then crashed is revived, by
    its newer record, on every node that declared it dead at the older incarnation,
    which then suspects it anew with a fresh timeout and can pass it on the same way;
    at 1,000 nodes such a chain outlasted a 192 s liveness phase (chaos seed 9). A
    member that is alive and only suspected travels with its refutation or from any
    peer holding it alive.
    """
    if not isinstance(ours, Mapping):
        ours = {entry[0]: entry for entry in ours}
    theirs = theirs if isinstance(theirs, (list, tuple)) else list(theirs)
    ours_rest: Iterable[Entry] = ours.values()
    # An entry both sides hold exactly alike asks for nothing either way (neither
    # side's version is newer), and two digests of a formed mesh are mostly alike:
    # set operations and filterfalse find the entries that differ without a Python
    # loop over the rest. Only when their node ids are unique: a digest repeating an
    # id takes the full path below, which reads every entry as it always did.
    if len(theirs) > 16 and len(set(map(itemgetter(0), theirs))) == len(theirs):
        same = set(theirs).intersection(ours_rest)
        if same:
            theirs = list(filterfalse(same.__contains__, theirs))
            ours_rest = filterfalse(same.__contains__, ours_rest)
    their_versions: dict[str, tuple[int, int]] = {}
    their_dead: set[str] = set()
    their_suspects: set[str] = set()
    for node_id, inc, seq, status in theirs:
        their_versions[node_id] = (inc, seq)
        if status == DEAD:
            their_dead.add(node_id)
        elif status == SUSPECT:
            their_suspects.add(node_id)
    send: list[str] = []
    for node_id, inc, seq, status in ours_rest:
        if status == DEAD:
            continue
        theirs_v = their_versions.get(node_id)
        newer = theirs_v is None or theirs_v < (inc, seq)
        # A suspect's record only updates a side that holds it alive or suspect.
        vouched = status != SUSPECT or (theirs_v is not None and node_id not in their_dead)
        if newer and vouched:
            send.append(node_id)
    want = []
    for node_id, version in their_versions.items():
        if node_id == self_id or node_id in their_dead:
            continue
        mine = ours.get(node_id)
        if mine is None:
            if node_id not in their_suspects:
                want.append(node_id)
            continue
        if version > (mine[1], mine[2]) and (node_id not in their_suspects or mine[3] != DEAD):
            want.append(node_id)
    return send, want


def claims_in(digest: Iterable[Entry]) -> list[tuple[str, int, str]]:
    """The suspect/dead statuses of a digest as ``(node, incarnation, status)`` claims."""
    out: list[tuple[str, int, str]] = []
    for node_id, inc, _seq, status in digest:
        if status == SUSPECT:
            out.append((node_id, inc, "suspect"))
        elif status == DEAD:
            out.append((node_id, inc, "dead"))
    return out


def chunk_records(frames: list[bytes], budget: int = PUSH_PULL_BUDGET) -> list[list[bytes]]:
    """Split record frames into lists of at most ``budget`` bytes (always ≥ 1 list)."""
    out: list[list[bytes]] = [[]]
    size = 0
    for frame in frames:
        if out[-1] and size + len(frame) > budget:
            out.append([])
            size = 0
        out[-1].append(frame)
        size += len(frame)
    return out


#: CRC-32 of node ids, memoized (a pure function of the id; every part of every
#: push-pull scans the whole table). Bounded: cleared when full.
_CRC: dict[str, int] = {}
_CRC_MAX = 1 << 17


def _crc(node_id: str) -> int:
    crc = _CRC.get(node_id)
    if crc is None:
        if len(_CRC) >= _CRC_MAX:
            _CRC.clear()
        crc = _CRC[node_id] = zlib.crc32(node_id.encode())
    return crc


def bucket_of(node_id: str, parts: int) -> int:
    """The bucket of ``node_id`` among ``parts`` (CRC-32 of its UTF-8 bytes, mod ``parts``)."""
    return 0 if parts <= 1 else _crc(node_id) % parts


def in_bucket(entries: Mapping[str, Entry], part: int, parts: int) -> Mapping[str, Entry]:
    """The entries of bucket ``part`` of ``parts`` (all of them when ``parts`` is 1)."""
    if parts <= 1:
        return entries
    get = _CRC.get
    out: dict[str, Entry] = {}
    for node_id, entry in entries.items():
        crc = get(node_id)
        if crc is None:
            crc = _crc(node_id)
        if crc % parts == part:
            out[node_id] = entry
    return out


def digest_parts(entries: Sequence[Entry], budget: int | None = None) -> list[list[Entry]]:
    """The digest as one list per push-pull frame: one list when it fits ``budget``
    (``DIGEST_BUDGET``), else one per bucket, as many buckets as the size needs."""
    limit = DIGEST_BUDGET if budget is None else budget
    size = sum(len(e[0]) + _ENTRY_OVERHEAD for e in entries)
    parts = -(-size // limit) if size > limit else 1
    if parts == 1:
        return [list(entries)]
    out: list[list[Entry]] = [[] for _ in range(parts)]
    for entry in entries:
        out[bucket_of(entry[0], parts)].append(entry)
    return out
