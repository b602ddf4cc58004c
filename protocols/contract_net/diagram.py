"""Render the transition tables as mermaid state diagrams (for docs/protocol.md (section 15)).

``python -m protocols.contract_net.diagram`` prints the generated section; a test
checks that the document contains exactly what this renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TypeVar

from protocols.contract_net._state import (
    EXECUTOR_TABLE,
    EXECUTOR_TERMINAL,
    REQUESTER_TABLE,
    REQUESTER_TERMINAL,
    ExecState,
    ReqState,
)

__all__ = ["BEGIN", "END", "render_all", "render_mermaid"]

S = TypeVar("S", bound=Enum)
V = TypeVar("V", bound=Enum)

BEGIN = "<!-- BEGIN GENERATED STATE DIAGRAMS (protocols/contract_net/diagram.py) -->"
END = "<!-- END GENERATED STATE DIAGRAMS -->"


def render_mermaid(
    table: Mapping[tuple[S, V], S], initial: Iterable[S], terminal: Iterable[S]
) -> str:
    """One ``stateDiagram-v2`` block; parallel edges are merged into one label."""
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, event), nxt in table.items():
        edges.setdefault((state.name, nxt.name), []).append(str(event.value))
    lines = ["```mermaid", "stateDiagram-v2"]
    lines += [f"    [*] --> {s.name}" for s in initial]
    for (src, dst), labels in edges.items():
        lines.append(f"    {src} --> {dst}: {', '.join(labels)}")
    lines += [f"    {s.name} --> [*]" for s in sorted(terminal, key=lambda s: s.name)]
    lines.append("```")
    return "\n".join(lines)


def render_all() -> str:
    req = render_mermaid(REQUESTER_TABLE, [ReqState.AUCTION], REQUESTER_TERMINAL)
    exe = render_mermaid(EXECUTOR_TABLE, [ExecState.CLAIMING, ExecState.RUNNING], EXECUTOR_TERMINAL)
    return "\n".join(
        [
            BEGIN,
            "",
            "#### Requester (one per submitted task)",
            "",
            req,
            "",
            "#### Executor (one per won award; CLAIMING for at-most-once)",
            "",
            exe,
            "",
            END,
        ]
    )


if __name__ == "__main__":  # pragma: no cover
    print(render_all())
