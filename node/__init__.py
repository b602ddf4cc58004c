"""Parley: node — the real shell (asyncio, ZeroMQ, zeroconf, daemon, embedding API).

``from node import Node, LocalOrg, Task, Result`` (imported lazily so the CLI
starts fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.api import LocalOrg, Node, Result
    from node.handlers import HandlerFailed, Task
    from node.supervision import ApprovalDesk
    from node.workflow import Saga, SagaFailed, fan_out

__all__ = [
    "ApprovalDesk",
    "HandlerFailed",
    "LocalOrg",
    "Node",
    "Result",
    "Saga",
    "SagaFailed",
    "Task",
    "fan_out",
]


def __getattr__(name: str) -> Any:
    if name in ("Node", "LocalOrg", "Result"):
        from node import api

        return getattr(api, name)
    if name in ("Task", "HandlerFailed"):
        from node import handlers

        return getattr(handlers, name)
    if name == "ApprovalDesk":
        from node import supervision

        return supervision.ApprovalDesk
    if name in ("Saga", "SagaFailed", "fan_out"):
        from node import workflow

        return getattr(workflow, name)
    raise AttributeError(name)
