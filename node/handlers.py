"""Task handlers: what runs when this node wins an award.

A handler is ``async def handler(task: Task) -> JSON``. Three kinds can be
configured for daemons (``node/config.py``):

* ``python = "module:function"`` — an async or plain function taking a Task
  (plain functions run in a worker thread);
* ``command = [...]`` — a subprocess: the task as JSON on stdin, the result as
  JSON on stdout; a timeout; a non-zero exit is a failure carrying the tail of
  its stderr;
* ``url = "http://..."`` — an existing agent's HTTP endpoint: the task is
  POSTed as JSON and the JSON response is the result; non-2xx is a failure (a 4xx
  other than 408 and 429 a final one: the requester does not retry it elsewhere).
  (urllib in a worker thread: no new dependency.)

A handler fails by raising; ``HandlerFailed`` carries a one-line reason that
goes back to the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import inspect
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from node.config import CapabilityConfig
from protocols.contract_net.messages import PROGRESS_MESSAGE_MAX, short_reason
from protocols.errors import ConfigError, LocalProtocolError, first_line

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
_CHUNK = 1 << 16
_MIN_WAIT = 0.01  # seconds: a socket timeout of 0 would mean non-blocking
_ABORT_GRACE = 0.5  # seconds a worker thread gets to notice its deadline


class HandlerFailed(Exception):
    """A handler's failure; ``reason`` is sent to the requester. ``retry=False``: no
    other attempt can succeed (a bad input, a refused operation): the requester fails
    the task at once instead of giving it to a backup or a new auction (by default a
    failed task is tried again, up to its ``max_auctions``, possibly on this node)."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


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
    #: set when the handler should stop: the request was cancelled (by its requester),
    #: the node stops, or the deadline passed. A plain ``def`` handler runs in a thread
    #: that cancellation cannot stop: it polls ``task.cancelled.is_set()``.
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
        if message is not None:
            message = short_reason(message, PROGRESS_MESSAGE_MAX)
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
        raise ConfigError(f"unknown handler {target!r}: {first_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # the module's own code failed, or a bad name
        raise ConfigError(f"python handler {target!r}: {_describe(exc)}") from None
    if not callable(fn):
        raise ConfigError(f"handler {target!r} is not callable")
    return as_async(fn)


def as_async(fn: Callable[[Task], Any]) -> Handler:
    """``fn`` itself when it is an ``async def``; else a handler running the plain
    function in a thread (off the event loop), awaiting what it returns if that is
    awaitable (a lambda handing over to a coroutine function)."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 (an object with an async __call__)
    ):
        return fn

    async def run_in_thread(task: Task) -> Any:
        value = await asyncio.to_thread(fn, task)
        return await value if inspect.isawaitable(value) else value

    return run_in_thread


def _describe(exc: BaseException) -> str:
    """``exc`` as one line: its type, where (for a syntax error) and its message."""
    if isinstance(exc, SyntaxError):
        where = os.path.basename(exc.filename or "?")
        line = f" line {exc.lineno}" if exc.lineno is not None else ""
        msg = (exc.msg or "").strip().splitlines()
        return f"{type(exc).__name__} in {where}{line}: {msg[0] if msg else 'invalid syntax'}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _tail(data: bytes) -> str:
    text = data[-_STDERR_TAIL:].decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else ""


async def _drain(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(_CHUNK):
        pass


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # The pipes are drained too: a full, paused pipe would keep wait() from returning.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(proc.wait(), _drain(proc.stdout), _drain(proc.stderr)), 5
        )


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
    stream.close()


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> bytes | None:
    """Everything ``stream`` carries, or None as soon as that is over ``limit`` bytes."""
    data = bytearray()
    while stream is not None and (chunk := await stream.read(_CHUNK)):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _read_tail(stream: asyncio.StreamReader | None) -> bytes:
    """The last ``_STDERR_TAIL`` bytes ``stream`` carries (the rest is dropped as it comes)."""
    tail = b""
    while stream is not None and (chunk := await stream.read(_CHUNK)):
        tail = (tail + chunk)[-_STDERR_TAIL:]
    return tail


async def _exchange(proc: asyncio.subprocess.Process, stdin: bytes, name: str) -> bytes:
    """Feed ``stdin``, read both pipes at once, wait for the exit; stdout is returned."""
    feed = asyncio.ensure_future(_feed(proc.stdin, stdin))
    errors = asyncio.ensure_future(_read_tail(proc.stderr))
    try:
        out = await _read_capped(proc.stdout, _MAX_OUTPUT)
        if out is None:
            raise HandlerFailed(f"{name} printed more than {_MAX_OUTPUT} bytes")
        err = await errors
        await feed
        returncode = await proc.wait()
    finally:
        for helper in (feed, errors):
            helper.cancel()
        await asyncio.gather(feed, errors, return_exceptions=True)
    if returncode != 0:
        raise HandlerFailed(f"{name} exited with {returncode}: {_tail(err)}")
    return out


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
            out = await asyncio.wait_for(_exchange(proc, stdin, command[0]), budget)
        except TimeoutError:
            await _kill(proc)
            raise HandlerFailed(f"{command[0]} timed out after {budget:.1f}s") from None
        except BaseException:  # too much output, or cancelled
            await _kill(proc)
            raise
        try:
            return json.loads(out)
        except (ValueError, UnicodeDecodeError):
            raise HandlerFailed(f"{command[0]} did not print JSON on stdout") from None

    return run


class _Deadline:
    """The total time one HTTP exchange may take, shared by its worker thread and the
    coroutine awaiting it; ``abort()`` (any thread) shuts the exchange's sockets down,
    which wakes a worker blocked in connect or recv at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def remaining(self) -> float:
        return 0.0 if self._aborted else max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            aborted = self._aborted
        if aborted:
            _shut(sock)

    def tighten(self) -> None:
        """Let no single socket operation outlast the deadline."""
        left = max(_MIN_WAIT, self.remaining())
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.settimeout(left)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTP(http.client.HTTPConnection):
    """A connection whose connect (and TLS handshake) ends by the deadline and whose
    socket the deadline can shut down."""

    def __init__(self, host: str, /, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        if self.deadline.expired():
            raise TimeoutError("deadline passed")
        self.timeout = max(_MIN_WAIT, self.deadline.remaining())
        super().connect()
        self.deadline.watch(self.sock)


class _WatchedHTTPS(_WatchedHTTP, http.client.HTTPSConnection):
    pass


class _DeadlineHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http:// and https:// URLs through connections the deadline watches."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **http_conn_args: Any
    ) -> http.client.HTTPResponse:
        watched = _WatchedHTTPS if req.type == "https" else _WatchedHTTP

        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            return watched(host, deadline=self.deadline, **kwargs)

        return super().do_open(connection, req, **http_conn_args)


def _read_body(url: str, resp: http.client.HTTPResponse, deadline: _Deadline) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > _MAX_OUTPUT:
        raise HandlerFailed(f"{url} answered more than {_MAX_OUTPUT} bytes")
    data = bytearray()
    while True:
        if deadline.expired():
            raise HandlerFailed(f"{url} timed out after {deadline.seconds:.1f}s")
        deadline.tighten()
        chunk = resp.read1(_CHUNK)  # one recv at most: the deadline is checked between
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_OUTPUT:
            raise HandlerFailed(f"{url} answered more than {_MAX_OUTPUT} bytes")
    if deadline.aborted:  # the end came from abort(): what came is not the whole answer
        raise HandlerFailed(f"{url} timed out after {deadline.seconds:.1f}s")
    return bytes(data)


def _post(url: str, body: bytes, deadline: _Deadline) -> Any:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(_DeadlineHandler(deadline))
    try:
        with opener.open(req, timeout=deadline.seconds) as resp:
            data = _read_body(url, resp, deadline)
    except urllib.error.HTTPError as exc:
        exc.close()
        # A 4xx (but 408 timeout and 429 too many requests) says the request itself is
        # wrong: another attempt would get the same answer.
        final = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise HandlerFailed(f"{url} answered {exc.code} {exc.reason}", retry=not final) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if deadline.expired():
            raise HandlerFailed(f"{url} timed out after {deadline.seconds:.1f}s") from None
        reason = getattr(exc, "reason", None) or first_line(exc)
        raise HandlerFailed(f"{url} unreachable: {reason}") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise HandlerFailed(f"{url} did not answer JSON") from None


def http_handler(url: str, timeout: float) -> Handler:
    async def run(task: Task) -> Any:
        budget = min(timeout, max(0.01, task.remaining()))
        body = json.dumps(task.to_json()).encode()
        deadline = _Deadline(budget)
        work = asyncio.ensure_future(asyncio.to_thread(_post, url, body, deadline))
        # An outcome nobody awaits any more (cancelled, or past the grace) is still read.
        work.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.wait({work}, timeout=budget)
        except asyncio.CancelledError:
            deadline.abort()
            raise
        if not work.done():  # e.g. headers sent a byte at a time: end the worker's wait
            deadline.abort()
            await asyncio.wait({work}, timeout=_ABORT_GRACE)
            if not work.done():
                raise HandlerFailed(f"{url} timed out after {budget:.1f}s")
        return work.result()

    return run


def make_handler(cap: CapabilityConfig) -> Handler:
    if cap.python is not None:
        return python_handler(cap.python)
    if cap.command is not None:
        return subprocess_handler(cap.command, cap.timeout)
    assert cap.url is not None
    return http_handler(cap.url, cap.timeout)
