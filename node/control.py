"""The local control socket of a daemon (``mesh-node status|peers|tasks|submit``).

A zmq ROUTER on ``ipc://<control_dir>/control.sock``; the directory is created
with mode 0700 and must belong to us, so only the owner can talk to the daemon.
Requests and replies are JSON objects: ``{"cmd": "status"}`` →
``{"ok": true, ...}`` or ``{"ok": false, "error": "...", "code": "..."}``.
Each request runs in its own asyncio task (``submit --wait`` may take a while).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from protocols.errors import ConfigError, MeshError, TransportError

__all__ = [
    "ControlClient",
    "ControlServer",
    "check_control_dir_free",
    "prepare_control_dir",
    "socket_path",
]

ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_REQUEST = 1 << 20


def socket_path(control_dir: Path) -> Path:
    return control_dir / "control.sock"


def prepare_control_dir(control_dir: Path) -> Path:
    """Create ``control_dir`` 0700 (or check an existing one is ours and private)."""
    try:
        control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = control_dir.stat()
    except OSError as exc:
        raise ConfigError(f"cannot create control dir {control_dir}: {exc.strerror}") from None
    if st.st_uid != os.getuid():
        raise ConfigError(f"control dir {control_dir} belongs to another user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(control_dir, 0o700)
    return control_dir


def check_control_dir_free(control_dir: Path, timeout: float = 0.5) -> None:
    """Raise ``ConfigError`` if a running daemon answers on ``control_dir``'s socket.

    Two daemons given the same control dir (the default is per node name: two
    configs with one ``name``) would otherwise share one socket path: the second
    would unlink the first's socket and take its place, leaving the first
    unreachable by ``mesh-node status``. A socket file that nobody answers on is
    left by a daemon that did not stop cleanly; it is replaced."""
    if not socket_path(control_dir).exists():
        return
    try:
        reply = ControlClient(control_dir).call({"cmd": "status"}, timeout=timeout)
    except TransportError:
        return  # stale
    name = reply.get("name") or "another node"
    raise ConfigError(
        f"control dir {control_dir} is in use by a running daemon ({name}): "
        "give each node its own node.control_dir (or name)"
    )


class ControlServer:
    def __init__(self, control_dir: Path, handler: ControlHandler) -> None:
        prepare_control_dir(control_dir)
        self.path = socket_path(control_dir)
        self._handler = handler
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, _MAX_REQUEST)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a previous run
        try:
            self._sock.bind(f"ipc://{self.path}")
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise TransportError(f"cannot bind control socket {self.path}: {exc.strerror}") from exc
        os.chmod(self.path, 0o600)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            try:
                parts = await self._sock.recv_multipart()
            except zmq.ZMQError:
                return
            if len(parts) < 2:
                continue
            t = asyncio.get_running_loop().create_task(self._answer(parts[:-1], parts[-1]))
            self._pending.add(t)
            t.add_done_callback(self._pending.discard)

    async def _answer(self, envelope: list[bytes], body: bytes) -> None:
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError, RecursionError):  # "[[[[..." nests deep
            reply: dict[str, Any] = {"ok": False, "error": "bad request", "code": "malformed"}
        else:
            try:
                reply = await self._handler(request)
            except MeshError as exc:
                reply = {"ok": False, "error": exc.message, "code": exc.code}
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "code": "internal"}
        with contextlib.suppress(zmq.ZMQError):
            await self._sock.send_multipart([*envelope, json.dumps(reply, default=str).encode()])

    async def close(self) -> None:
        for t in [self._task, *self._pending]:
            if t is not None:
                t.cancel()
        for t in [self._task, *self._pending]:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._sock.close(linger=0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ControlClient:
    """Blocking client used by the CLI commands."""

    def __init__(self, control_dir: Path) -> None:
        self.path = socket_path(control_dir)

    def call(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        if not self.path.exists():
            raise TransportError(f"no daemon listening at {self.path}", code="no-daemon")
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        try:
            sock.connect(f"ipc://{self.path}")
            sock.send(json.dumps(request).encode())
            reply = json.loads(sock.recv())
        except zmq.Again:
            raise TransportError(f"daemon at {self.path} did not answer", code="timeout") from None
        except zmq.ZMQError as exc:
            raise TransportError(f"control socket {self.path}: {exc.strerror}") from None
        finally:
            sock.close(linger=0)
        if not isinstance(reply, dict):
            raise TransportError("daemon sent a malformed reply")
        return reply
