"""A daemon's audit trail: append-only JSON lines, hash-chained and signed.

Every line is one JSON object: ``seq`` (0, 1, 2, ...), ``ts`` (unix seconds),
``node_id``, ``key`` (the node's Ed25519 public key, hex), ``event``, ``data``,
``prev`` (hex SHA-256 of the previous line's bytes; 64 zeros for the first) and
``sig``: the node's Ed25519 signature (hex) over ``parley/1/audit`` followed by the
line's canonical JSON without ``sig`` (sorted keys, no spaces, no NaN). A changed,
reordered or inserted line, or one removed from the middle, breaks the chain or a
signature; ``verify_audit`` names the first line that does not hold, and a line must
be byte for byte in canonical form. Lines cut off the *end* cannot be detected from
the file alone: keep the last ``seq`` and hash (``verify`` prints them) elsewhere if
that matters. The node id is the SHA-256 of the key, so a file re-signed with another
key is caught by checking the node id you expect (``--node-id``).

A daemon continues the chain after a restart. An incomplete last line (a crash in the
middle of a write) is cut off and a ``RecoveredTruncation`` line records how many bytes
were lost; any other damage stops the daemon from starting (move the file aside). A
file that is not an audit log (its first line is not one, or without any whole line it
does not begin like one) is refused and never changed. One
writer at a time (an exclusive lock). A failed write (a full disk) is rolled back to
the last whole line and the log stops taking lines until the daemon restarts: never a
half-written or duplicated line. Lines are written, not fsynced: a host crash can lose
the last lines, not change earlier ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.crypto import Ed25519Verifier
from protocols.errors import ConfigError
from protocols.identity import NodeIdentity, node_id_from_public_key

__all__ = ["CONTINUED", "DOMAIN", "AuditLog", "AuditReport", "verify_audit", "verify_audit_files"]

DOMAIN = b"parley/1/audit"
_GENESIS = "0" * 64
#: The fields of every line, and how every line begins (canonical: sorted keys).
_FIELDS = frozenset({"seq", "ts", "node_id", "key", "event", "data", "prev", "sig"})
_START = b'{"data":'
#: The first line of a file that goes on from a rotated one.
CONTINUED = "AuditContinued"


def _canonical(line: dict[str, Any]) -> bytes:
    return json.dumps(line, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _plain(data: Any) -> Any:
    """``data`` as the JSON it will be read back as (string keys, lists, no NaN), so
    that what is signed is exactly what a verifier reloads."""
    return json.loads(json.dumps(data, default=str, allow_nan=False))


class AuditLog:
    """Appends signed, chained lines to ``path`` for ``identity``."""

    def __init__(self, path: Path, identity: NodeIdentity) -> None:
        self.path = path
        self.identity = identity
        self.seq = 0
        self.prev = _GENESIS
        self.broken = ""  # why appends stopped (a failed write), if they did
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"audit log {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise ConfigError(f"audit log {path}: in use by another process") from None
        cut = self._open_chain()
        if cut:
            self.append("RecoveredTruncation", {"bytes_lost": cut})

    def _open_chain(self) -> int:
        """Check the existing lines, cut an incomplete last line; the bytes cut."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._size = 0
            return 0
        data = self.path.read_bytes()
        if not _begins_as_audit_log(data):
            os.close(self._fd)
            raise ConfigError(f"{self.path} is not a Parley audit log (refusing to change it)")
        whole = data[: data.rfind(b"\n") + 1]
        cut = len(data) - len(whole)
        report = _verify_bytes(whole, self.identity.node_id)
        if not report.ok:
            os.close(self._fd)
            raise ConfigError(
                f"audit log {self.path}: {report.problem}; move it aside to start a new one"
            )
        if cut:
            os.ftruncate(self._fd, len(whole))
        self._size = len(whole)
        self.seq, self.prev = report.next_seq, report.last_hash
        return cut

    def reopen(self) -> bool:
        """After the file was moved away (log rotation: ``logrotate`` then SIGHUP, or
        ``mesh-node reload``), go on in a new file at ``path``: its first line,
        ``AuditContinued`` (the lines and head of the chain so far), carries the chain
        on, so ``verify`` of the files in order shows one was removed. True if it
        switched. ``ConfigError`` (and the old file kept) if a non-empty file that is
        not ours is in the way."""
        try:
            here = os.stat(self.path)
            ours = os.fstat(self._fd)
            if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                return False
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"audit log {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_size:
                raise ConfigError(
                    f"audit log {self.path}: a new file is there, not empty; still writing "
                    "to the moved one"
                )
        except OSError:
            os.close(fd)
            raise ConfigError(f"audit log {self.path}: in use by another process") from None
        except ConfigError:
            os.close(fd)
            raise
        old, self._fd, self._size = self._fd, fd, 0
        os.close(old)
        self.broken = ""
        self.append(CONTINUED, {"lines": self.seq, "head": self.prev})
        return True

    def append(self, event: str, data: dict[str, Any]) -> None:
        """Sign and write one line; ``OSError`` if it could not be written (the file is
        then left as it was, and further appends raise until a restart)."""
        if self.broken:
            raise OSError(f"audit log stopped after a failed write: {self.broken}")
        line: dict[str, Any] = {
            "seq": self.seq,
            "ts": round(time.time(), 3),
            "node_id": self.identity.node_id,
            "key": self.identity.public_key.hex(),
            "event": event,
            "data": _plain(data),
            "prev": self.prev,
        }
        line["sig"] = self.identity.signer.sign(DOMAIN + _canonical(line)).hex()
        raw = _canonical(line)
        out = raw + b"\n"
        try:
            written = os.write(self._fd, out)
            if written != len(out):
                raise OSError(f"short write ({written} of {len(out)} bytes)")
        except OSError as exc:
            self.broken = str(exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # never leave half a line behind
            raise
        self._size += len(out)
        self.prev = hashlib.sha256(raw).hexdigest()
        self.seq += 1

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    lines: int  # lines that verified (all of them when ok)
    node_id: str  # the signer of the lines that verified ("" if none)
    last_hash: str  # the chain's head: hash of the last line that verified
    problem: str = ""
    #: ``seq`` of the file's first line: 0, or where a rotated log's file goes on
    first_seq: int = 0

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.lines


def verify_audit(
    path: Path, node_id: str | None = None, after: AuditReport | None = None
) -> AuditReport:
    """Check every line's form, chain link and signature; stop at the first that fails.

    A file may begin where a rotated one ended (an ``AuditContinued`` first line, at
    that file's next ``seq``, linked to its last line). With ``after`` (the report of
    the file before it), the file must continue exactly that one: a rotated file that
    was removed or replaced is then found."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return AuditReport(False, 0, "", _GENESIS, f"{path}: {exc.strerror or exc}")
    return _verify_bytes(data, node_id, after)


def verify_audit_files(paths: list[Path], node_id: str | None = None) -> list[AuditReport]:
    """``verify_audit`` of a rotated log's files, oldest first, each continuing the one
    before it; stops after the first that fails."""
    out: list[AuditReport] = []
    for path in paths:
        report = verify_audit(path, node_id, out[-1] if out else None)
        out.append(report)
        if not report.ok:
            break
    return out


def _begins_as_audit_log(data: bytes) -> bool:
    """Whether non-empty ``data`` begins as an audit log: a first line with the fields
    of an audit line or, with no whole line yet, the start of one (a torn first write).
    Anything else is some other file, which recovery must not cut."""
    end = data.find(b"\n")
    if end < 0:
        return _START.startswith(data[: len(_START)])
    try:
        first = json.loads(data[:end])
    except (ValueError, RecursionError):
        return False
    return isinstance(first, dict) and set(first) == _FIELDS


def _gap(line: dict[str, Any], n: int, after: AuditReport | None) -> str:
    """Why a file's first line does not go on from the file before it, in words: which
    file is missing, or that the files are not oldest first."""
    if after is None or n != 0:
        return ""
    seq = line.get("seq")
    if line.get("event") != CONTINUED:
        return (
            ": this file begins a chain (the oldest file comes first), it does not go on "
            "from the file before it"
        )
    if not isinstance(seq, int) or isinstance(seq, bool):
        return ""
    if seq > after.next_seq:
        gone = f"numbers {after.next_seq} to {seq - 1} are"
        if seq - 1 == after.next_seq:
            gone = f"number {after.next_seq} is"
        return f": sequence {gone} missing (a file between these two not given, or removed?)"
    return ": the files are not given oldest first (or one was given twice)"


def _verify_bytes(
    data: bytes, node_id: str | None, after: AuditReport | None = None
) -> AuditReport:
    verifier = Ed25519Verifier()
    prev, signer, n, base = _GENESIS, "", 0, 0
    if after is not None:
        prev, signer, base = after.last_hash, after.node_id, after.next_seq

    def bad(problem: str) -> AuditReport:
        return AuditReport(False, n, signer, prev, f"line {n + 1}: {problem}", base)

    truncated = bool(data) and not data.endswith(b"\n")
    for raw in data.split(b"\n")[:-1]:  # an incomplete last piece is reported below
        try:
            line = json.loads(raw)
            if _canonical(line) != raw:
                return bad("not in canonical form (the line was edited)")
            sig = bytes.fromhex(line.pop("sig"))
            key = bytes.fromhex(line["key"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return bad("not a signed audit line")
        if n == 0 and after is None and line.get("event") == CONTINUED:
            # The first file after a rotation: it goes on from the one before it,
            # which only ``after`` (verifying the files in order) can check.
            held = line.get("data")
            if not isinstance(held, dict) or not isinstance(held.get("head"), str):
                return bad("an AuditContinued line without the head it continues")
            base, prev = line.get("seq"), held["head"]
            if not isinstance(base, int) or isinstance(base, bool) or base < 0:
                return bad(f"an AuditContinued line at sequence number {base!r}")
        if line.get("seq") != base + n:
            return bad(
                f"sequence number {line.get('seq')!r}, expected {base + n}{_gap(line, n, after)}"
            )
        if line.get("prev") != prev:
            return bad("does not follow the previous line (a line was changed, removed or moved)")
        if node_id_from_public_key(key) != line.get("node_id"):
            return bad("node id and key do not match")
        if node_id is not None and line["node_id"] != node_id:
            return bad(f"signed by {line['node_id'][:16]}…, not by {node_id[:16]}…")
        if signer and line["node_id"] != signer:
            return bad("signed by another node than the lines before it")
        if not verifier.verify(key, sig, DOMAIN + _canonical(line)):
            return bad("signature does not match (the line was changed)")
        signer, prev, n = line["node_id"], hashlib.sha256(raw).hexdigest(), n + 1
    if truncated:
        return bad("cut short (an incomplete last line)")
    return AuditReport(True, n, signer, prev, "", base)
