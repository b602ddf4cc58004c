"""Task handlers: what runs when this node wins an award.

A handler is ``async def handler(task: Task) -> JSON``. Three kinds can be
configured for daemons (``node/config.py``):

* ``python = "module:function"`` — an async or plain function taking a Task
  (plain functions run in a worker thread);
* ``command = [...]`` — a subprocess: the task as JSON on stdin, the result as
  JSON on stdout; a timeout; a non-zero exit is a failure carrying the tail of
  its stderr;
* ``url = "http://..."`` — an existing agent's HTTP endpoint: the task is
  POSTed as JSON and the JSON response is the result; non-2xx is a failure.
  (urllib in a worker thread: no new dependency.)

A handler fails by raising; ``HandlerFailed`` carries a one-line reason that
goes back to the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from node.config import CapabilityConfig
from protocols.contract_net.messages import PROGRESS_MESSAGE_MAX
from protocols.errors import ConfigError, LocalProtocolError

__all__ = [
    "Handler",
    "HandlerFailed",
    "Task",
    "http_handler",
    "make_handler",
    "python_handler",
    "subprocess_handler",
]

_STDERR_TAIL = 400
_MAX_OUTPUT = 1 << 20


class HandlerFailed(Exception):
    """A handler's failure; ``reason`` is sent to the requester."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Task:
    """One awarded task, as a handler sees it."""

    task_id: str
    capability: str
    input: Any
    deadline: float  # unix seconds
    requester: str = ""
    epoch: int = 0
    semantics: str = "at-least-once"
    risk: str = "low"
    _progress: Callable[[float | None, str | None], None] | None = field(default=None, repr=False)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def idempotency_key(self) -> str:
        """Stable across re-awards: use it to make side effects idempotent."""
        return self.task_id

    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - time.time())

    def progress(self, percent: float | None = None, message: str | None = None) -> None:
        """Report progress to the requester (keeps the lease alive). ``percent`` is
        0 to 100 or None; a ``message`` over 256 characters is cut to 256."""
        if percent is not None and not 0 <= percent <= 100:
            raise LocalProtocolError(f"progress percent must be 0 to 100, not {percent!r}")
        if message is not None and len(message) > PROGRESS_MESSAGE_MAX:
            message = message[: PROGRESS_MESSAGE_MAX - 3] + "..."
        if self._progress is not None:
            self._progress(percent, message)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "capability": self.capability,
            "input": self.input,
            "deadline": self.deadline,
            "requester": self.requester,
            "epoch": self.epoch,
            "semantics": self.semantics,
            "risk": self.risk,
        }


Handler = Callable[[Task], Awaitable[Any]]


def python_handler(target: str) -> Handler:
    """Load ``module:function``; plain functions run in a thread."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"unknown handler {target!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"handler {target!r} is not callable")
    if inspect.iscoroutinefunction(fn):
        return fn  # type: ignore[no-any-return]

    async def run_in_thread(task: Task) -> Any:
        return await asyncio.to_thread(fn, task)

    return run_in_thread


def _tail(data: bytes) -> str:
    text = data[-_STDERR_TAIL:].decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else ""


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)


def subprocess_handler(command: tuple[str, ...], timeout: float) -> Handler:
    async def run(task: Task) -> Any:
        budget = min(timeout, max(0.01, task.remaining()))
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise HandlerFailed(f"cannot start {command[0]}: {exc.strerror}") from None
        stdin = json.dumps(task.to_json()).encode()
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), budget)
        except TimeoutError:
            await _kill(proc)
            raise HandlerFailed(f"{command[0]} timed out after {budget:.1f}s") from None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        if proc.returncode != 0:
            tail = _tail(err)
            raise HandlerFailed(f"{command[0]} exited with {proc.returncode}: {tail}")
        if len(out) > _MAX_OUTPUT:
            raise HandlerFailed(f"{command[0]} printed more than {_MAX_OUTPUT} bytes")
        try:
            return json.loads(out)
        except (ValueError, UnicodeDecodeError):
            raise HandlerFailed(f"{command[0]} did not print JSON on stdout") from None

    return run


def _post(url: str, body: bytes, timeout: float) -> Any:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read(_MAX_OUTPUT + 1)
    except urllib.error.HTTPError as exc:
        raise HandlerFailed(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HandlerFailed(f"{url} unreachable: {reason}") from None
    if len(data) > _MAX_OUTPUT:
        raise HandlerFailed(f"{url} answered more than {_MAX_OUTPUT} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise HandlerFailed(f"{url} did not answer JSON") from None


def http_handler(url: str, timeout: float) -> Handler:
    async def run(task: Task) -> Any:
        budget = min(timeout, max(0.01, task.remaining()))
        body = json.dumps(task.to_json()).encode()
        return await asyncio.to_thread(_post, url, body, budget)

    return run


def make_handler(cap: CapabilityConfig) -> Handler:
    if cap.python is not None:
        return python_handler(cap.python)
    if cap.command is not None:
        return subprocess_handler(cap.command, cap.timeout)
    assert cap.url is not None
    return http_handler(cap.url, cap.timeout)
