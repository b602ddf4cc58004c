"""Timestamps of a node's frames, for ``bench_round.py`` (imported, or run as a bidder).

``install()`` wraps three methods of the real runtime so that every outbound frame,
every inbound batch (before and after ``core.receive``, and after the pump), and
every handler start is recorded with ``time.perf_counter_ns()`` (CLOCK_MONOTONIC:
comparable across processes on one machine). Frames are decoded only at exit,
into ``$PARLEY_ROUND_TRACE/<pid>.tsv``. The hot path pays one ``append`` per point.

Run as a script, it installs itself and then runs ``node.bench``'s bidder server
(``python _round_trace.py --serve K SEED ORGSEED``).
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

_log: list[tuple[int, str, str, bytes]] = []


def _kind_and_task(frame: bytes) -> tuple[str, str]:
    try:
        body = msgpack.unpackb(frame, raw=False)[0]
        fields = msgpack.unpackb(body, raw=False)
        payload = msgpack.unpackb(fields[8], raw=False, strict_map_key=False)
        task = payload.get("task_id") if isinstance(payload, dict) else None
        return str(fields[1]), str(task or "-")
    except Exception:  # a frame we cannot read is just left unnamed here
        return "?", "-"


def _dump() -> None:
    out = os.environ.get("PARLEY_ROUND_TRACE")
    if not out or not Path(out).is_dir():
        return
    with open(Path(out) / f"{os.getpid()}.tsv", "w") as f:
        for t, point, node, frame in _log:
            kind, task = _kind_and_task(frame) if frame else ("-", "-")
            f.write(f"{t}\t{os.getpid()}\t{point}\t{node}\t{kind}\t{task}\n")


def install() -> None:
    import node.runtime as rt
    import node.transport as tr

    log = _log.append
    clock = time.perf_counter_ns

    send = tr.ZmqTransport.send

    def traced_send(self: Any, endpoint: str, frame: bytes) -> bool:
        log((clock(), "send", self.endpoint, frame))
        return send(self, endpoint, frame)

    def traced_on_frames(self: Any, batch: list[tuple[str, bytes]]) -> None:
        t = clock()
        for _ep, frame in batch:
            log((t, "recv", self.endpoint, frame))
        now = time.time()
        for ep, frame in batch:
            self.core.receive(frame, ep, now)
            log((clock(), "opened", self.endpoint, frame))
        self._pump()

    run = rt.Runtime._run

    async def traced_run(self: Any, handler: Any, task: Any) -> None:
        log((clock(), "handler", self.endpoint, b""))
        await run(self, handler, task)

    tr.ZmqTransport.send = traced_send  # type: ignore[method-assign]
    rt.Runtime._on_frames = traced_on_frames  # type: ignore[method-assign]
    rt.Runtime._run = traced_run  # type: ignore[method-assign]
    atexit.register(_dump)


if __name__ == "__main__":
    install()
    sys.argv = ["node.bench", *sys.argv[1:]]
    runpy.run_module("node.bench", run_name="__main__")
