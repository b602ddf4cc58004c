"""A daemon's audit trail: append-only JSON lines, hash-chained and signed.

Every line is one JSON object: ``seq`` (0, 1, 2, ...), ``ts`` (unix seconds),
``node_id``, ``key`` (the node's Ed25519 public key, hex), ``event``, ``data``,
``prev`` (hex SHA-256 of the previous line's bytes; 64 zeros for the first) and
``sig``: the node's Ed25519 signature (hex) over ``parley/1/audit`` followed by the
line's canonical JSON without ``sig`` (sorted keys, no spaces). A changed, removed,
reordered or inserted line breaks the chain or a signature; ``verify`` names the
first line that does not hold. The node id is the SHA-256 of the key, so a file
re-signed with another key is caught by checking the node id you expect
(``mesh-node audit verify FILE --node-id ID``).

The file survives restarts: a daemon continues the chain from its last line, and
refuses to start on a file whose last line is damaged (move it aside first). Lines
are flushed as they are written, not fsynced: a host crash can lose the last lines,
never reorder or change the earlier ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.crypto import Ed25519Verifier
from protocols.errors import ConfigError
from protocols.identity import NodeIdentity, node_id_from_public_key

__all__ = ["DOMAIN", "AuditLog", "AuditReport", "verify_audit"]

DOMAIN = b"parley/1/audit"
_GENESIS = "0" * 64


def _canonical(line: dict[str, Any]) -> bytes:
    return json.dumps(line, sort_keys=True, separators=(",", ":"), default=str).encode()


class AuditLog:
    """Appends signed, chained lines to ``path`` for ``identity``."""

    def __init__(self, path: Path, identity: NodeIdentity) -> None:
        self.path = path
        self.identity = identity
        self.seq = 0
        self.prev = _GENESIS
        if path.exists() and path.stat().st_size > 0:
            report = verify_audit(path, identity.node_id)
            if not report.ok:
                raise ConfigError(
                    f"audit log {path}: {report.problem}; move it aside to start a new one"
                )
            self.seq, self.prev = report.lines, report.last_hash
        try:
            self._file = path.open("ab")
        except OSError as exc:
            raise ConfigError(f"audit log {path}: {exc.strerror or exc}") from None

    def append(self, event: str, data: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "seq": self.seq,
            "ts": round(time.time(), 3),
            "node_id": self.identity.node_id,
            "key": self.identity.public_key.hex(),
            "event": event,
            "data": data,
            "prev": self.prev,
        }
        line["sig"] = self.identity.signer.sign(DOMAIN + _canonical(line)).hex()
        raw = json.dumps(line, sort_keys=True, separators=(",", ":"), default=str).encode()
        self._file.write(raw + b"\n")
        self._file.flush()
        self.prev = hashlib.sha256(raw).hexdigest()
        self.seq += 1

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    lines: int  # lines that verified (all of them when ok)
    node_id: str  # the signer of the lines that verified ("" if none)
    last_hash: str
    problem: str = ""


def verify_audit(path: Path, node_id: str | None = None) -> AuditReport:
    """Check every line's chain link and signature; stop at the first that fails."""
    verifier = Ed25519Verifier()
    prev, signer, n = _GENESIS, "", 0

    def bad(problem: str) -> AuditReport:
        return AuditReport(False, n, signer, prev, f"line {n + 1}: {problem}")

    try:
        data = path.read_bytes()
    except OSError as exc:
        return AuditReport(False, 0, "", prev, f"{path}: {exc.strerror or exc}")
    if data and not data.endswith(b"\n"):
        last = data.rsplit(b"\n", 1)
        data = last[0] + b"\n" if len(last) == 2 else b""
        truncated = True
    else:
        truncated = False
    for raw in data.splitlines():
        try:
            line = json.loads(raw)
            sig = bytes.fromhex(line.pop("sig"))
            key = bytes.fromhex(line["key"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return bad("not a signed audit line")
        if line.get("seq") != n:
            return bad(f"sequence number {line.get('seq')!r}, expected {n}")
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
    return AuditReport(True, n, signer, prev)
