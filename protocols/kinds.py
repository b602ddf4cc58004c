"""The registry of message kinds: kind name -> pydantic payload model.

Each protocol module exports its own table; this module merges them so the
wire (``protocols.envelope.Wire``) knows every kind. A kind missing here is
rejected as ``unknown-kind``.
"""

from __future__ import annotations

from pydantic import BaseModel

from protocols.contract_net.messages import CONTRACT_NET_PAYLOADS
from protocols.membership.messages import MEMBERSHIP_PAYLOADS

__all__ = ["PAYLOADS"]


def _merge(*tables: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    merged: dict[str, type[BaseModel]] = {}
    for table in tables:
        for kind, model in table.items():
            assert kind not in merged, f"message kind {kind!r} registered twice"
            merged[kind] = model
    return merged


PAYLOADS: dict[str, type[BaseModel]] = _merge(MEMBERSHIP_PAYLOADS, CONTRACT_NET_PAYLOADS)
