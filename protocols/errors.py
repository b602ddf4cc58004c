"""The one exception tree of Parley.

Every error a user or a peer can cause is one of these; each has a stable
``code`` string (kebab-case) that appears in logs, in ``statistics()``
counters, in ``mesh-node inspect`` output and in ``docs/protocol.md``.
Broken internal invariants are ``assert`` statements, not errors from here.

::

    MeshError                      root; ``code`` and a one-line ``message``
    ├── LocalProtocolError         our caller misused the API (code ``local-misuse``
    │                              or a more precise one)
    ├── RemoteProtocolError        a peer sent something bad; codes:
    │     malformed, too-large, duplicate-key, bad-key, unknown-kind,
    │     bad-signature, replayed, expired, not-yet-valid, wrong-recipient,
    │     untrusted-org, revoked, not-permitted, bad-certificate,
    │     unknown-certificate, stale-record, stale-epoch, unexpected-message
    ├── ContractNetError           a negotiation ended badly: no-bidders,
    │                              lease-expired, attempts-exhausted,
    │                              outcome-unknown, task-failed, cancelled, timeout
    ├── TransportError             raised by the real shell only (zmq, zeroconf,
    │                              sockets translated at the edge)
    └── ConfigError                a wrong config, a missing or unsafe file

``RemoteProtocolError`` subclasses exist for the most common rejections so
callers may catch them by type; the ``code`` is the contract, the class is a
convenience.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "REMOTE_CODES",
    "BadKey",
    "BadSignature",
    "ConfigError",
    "ContractNetError",
    "LocalProtocolError",
    "Malformed",
    "MeshError",
    "RemoteProtocolError",
    "TooLarge",
    "TransportError",
    "first_line",
]

#: Every code a ``RemoteProtocolError`` may carry (the wire spec lists them).
REMOTE_CODES: tuple[str, ...] = (
    "malformed",
    "too-large",
    "duplicate-key",
    "bad-key",
    "unknown-kind",
    "bad-signature",
    "replayed",
    "expired",
    "not-yet-valid",
    "wrong-recipient",
    "untrusted-org",
    "revoked",
    "not-permitted",
    "bad-certificate",
    "unknown-certificate",
    "stale-record",
    "stale-epoch",
    "unexpected-message",
)


class MeshError(Exception):
    """Root of every Parley error. ``str(err)`` is a one-line message."""

    default_code: ClassVar[str] = "mesh-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code: str = code or self.default_code
        self.message: str = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class LocalProtocolError(MeshError):
    """Our own caller used the API wrongly (a bug in the calling code)."""

    default_code = "local-misuse"


class RemoteProtocolError(MeshError):
    """A peer sent something we reject. ``code`` is one of ``REMOTE_CODES``."""

    default_code = "malformed"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        assert self.code in REMOTE_CODES, f"unknown remote error code {self.code!r}"


class Malformed(RemoteProtocolError):
    default_code = "malformed"


class TooLarge(RemoteProtocolError):
    default_code = "too-large"


class BadKey(RemoteProtocolError):
    default_code = "bad-key"


class BadSignature(RemoteProtocolError):
    default_code = "bad-signature"


class ContractNetError(MeshError):
    """A negotiation or task ended without a committed result.

    ``attempts`` lists what was tried (one line each), so a user sees why.
    """

    default_code = "task-failed"

    def __init__(
        self, message: str, *, code: str | None = None, attempts: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, code=code)
        self.attempts: tuple[str, ...] = attempts


class TransportError(MeshError):
    """A socket, zmq or zeroconf problem, translated at the edge of the real shell."""

    default_code = "transport"


class ConfigError(MeshError):
    """A wrong configuration, or a missing, unreadable or unsafe file."""

    default_code = "config"


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-blank line of ``str(exc)`` (pydantic's and others' messages span
    several lines); ``default``, or the exception's type name, when it has none."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if default is None else default
