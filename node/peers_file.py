"""The peers a daemon knew, kept on disk so that a restart rejoins them.

A node that leaves announces it: its peers mark it ``left`` and stop contacting it.
When it starts again it must knock on someone. A node started with seeds knocks on
them; the first node of a mesh (the one the others use as their seed) usually has
none, and after a restart it ran alone for good while the rest of the mesh carried
on without it (found by a review helper: a lasting split once a new node then joined
through it). Serf keeps a snapshot for the same reason.

The daemon writes the endpoints of its live peers to ``peers.json`` in its control
directory (owner-only) every ``EVERY`` seconds and when it stops, and reads them at
start as extra join candidates: a dead one costs a knock that is never answered.
Bounded: at most ``KEEP`` endpoints, each a ``tcp://`` endpoint peers could dial.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from node.transport import check_endpoint, listens_everywhere
from protocols.errors import TransportError

__all__ = ["EVERY", "KEEP", "read_peers", "write_peers"]

log = logging.getLogger("parley.daemon")

#: Most endpoints kept (a join needs one live peer; a few in case some are gone).
KEEP = 16
#: Seconds between two writes while the daemon runs.
EVERY = 30.0
NAME = "peers.json"
#: Largest peers.json read (16 endpoints take ~1 KiB; anything far larger is not ours).
_MAX_BYTES = 64 * 1024


def read_peers(directory: Path, own: str) -> list[str]:
    """The endpoints kept by the last run (none when there is no usable file)."""
    path = directory / NAME
    try:
        with open(path, "rb") as f:
            text = f.read(_MAX_BYTES + 1)
        if len(text) > _MAX_BYTES:
            raise ValueError(f"over {_MAX_BYTES} bytes")
        data = json.loads(text)
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:  # damaged: start without it
        log.warning(
            "ignoring %s: %s", path, type(exc).__name__ if isinstance(exc, RecursionError) else exc
        )
        return []
    found = data.get("peers") if isinstance(data, dict) else None
    if not isinstance(found, list):
        return []
    out: list[str] = []
    for ep in found[:KEEP]:
        if not isinstance(ep, str) or ep == own or ep in out or listens_everywhere(ep):
            continue
        try:
            check_endpoint(ep)
        except TransportError:
            continue
        out.append(ep)
    return out


def write_peers(directory: Path, endpoints: Iterable[str], own: str) -> None:
    """Replace the file with ``endpoints`` (atomically, mode 0600); never raises."""
    keep = sorted({ep for ep in endpoints if ep and ep != own})[:KEEP]
    path = directory / NAME
    tmp = directory / f".{NAME}.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"peers": keep}, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the peer list in %s: %s", path, exc)
        tmp.unlink(missing_ok=True)
