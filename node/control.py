"""The local control socket of a daemon (``mesh-node status|peers|tasks|submit``).

A zmq ROUTER on ``ipc://<control_dir>/control.sock``; the directory (and each
parent the daemon creates) is made with mode 0700 whatever the umask and must belong
to us, and no directory above it may be another user's or writable by others (root's
sticky ``/tmp`` aside), so only the owner can talk to the daemon. The client talks
only to a socket of its own user.
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
    "check_existing_control_dir",
    "prepare_control_dir",
    "socket_path",
]

ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_REQUEST = 1 << 20


def socket_path(control_dir: Path) -> Path:
    return control_dir / "control.sock"


def prepare_control_dir(control_dir: Path) -> Path:
    """Create ``control_dir`` (and each missing parent) with mode 0700 whatever the
    umask, and check that nobody else can reach into it: ``ConfigError`` (one line) if
    the directory or any directory above it belongs to another user (root aside) or
    may be written by group or others (a sticky, root-owned one such as ``/tmp``
    aside: there nobody can rename or remove what is ours). Anyone who could rename a
    directory on the way could put a socket of their own where the daemon's was."""
    check_existing_control_dir(control_dir)  # before creating anything in a bad place
    path = Path(os.path.abspath(control_dir))
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked below like any other
        except OSError as exc:
            raise ConfigError(
                f"cannot create control dir {control_dir}: {directory}: {exc.strerror}"
            ) from None
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    _check_control_dir(control_dir, path)
    return control_dir


def check_existing_control_dir(control_dir: Path) -> None:
    """The checks of ``prepare_control_dir`` on what exists of ``control_dir`` now,
    creating nothing (a daemon runs them before it joins the mesh)."""
    path = Path(os.path.abspath(control_dir))
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if probe == path:
        _check_control_dir(control_dir, path)
        return
    problem = _chain_problem(probe)
    if problem:
        raise ConfigError(f"unsafe control dir {control_dir}: {problem}")


def _check_control_dir(given: Path, path: Path) -> None:
    """``ConfigError`` unless the directory ``path`` (absolute) is ours and only ours
    to write, and every directory above it is safe (``_chain_problem``). A control dir
    of ours that others may read or search is made 0700, as before."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot use control dir {given}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"control dir {given} is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(f"control dir {given} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise ConfigError(
            f"control dir {given} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod 700 {given}"
        )
    problem = _unsafe_link(path) or _chain_problem(path.parent)
    if problem:
        raise ConfigError(f"unsafe control dir {given}: {problem}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _chain_problem(start: Path) -> str | None:
    """Why someone else could rename ``start`` (absolute) or a directory above it, as
    written or as resolved through symbolic links; None if nobody can."""
    real = Path(os.path.realpath(start))
    dirs = [start, *start.parents] + ([real, *real.parents] if real != start else [])
    uid = os.getuid()
    return _unsafe_link(start) or next((p for d in dirs if (p := _unsafe_dir(d, uid))), None)


def _unsafe_link(path: Path) -> str | None:
    """A symbolic link on ``path`` that belongs to another user (root aside), if any."""
    uid = os.getuid()
    for part in [path, *path.parents]:
        try:
            st = os.lstat(part)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (uid, 0):
            return f"the symbolic link {part} belongs to another user (uid {st.st_uid})"
    return None


def _unsafe_dir(directory: Path, uid: int) -> str | None:
    """Why others than us (and root) may rename entries of ``directory``, or None."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        return f"cannot check {directory}: {exc.strerror}"
    if st.st_uid not in (uid, 0):
        return f"{directory} belongs to another user (uid {st.st_uid})"
    sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX  # /tmp: not ours to fear
    if st.st_mode & 0o022 and not sticky_root:
        return (
            f"{directory} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod go-w {directory}, "
            "or set node.control_dir elsewhere"
        )
    return None


def check_control_dir_free(control_dir: Path, timeout: float = 0.5) -> None:
    """Raise ``ConfigError`` if a running daemon answers on ``control_dir``'s socket.

    Two daemons given the same control dir (the default is per node name: two
    configs with one ``name``) would otherwise share one socket path: the second
    would unlink the first's socket and take its place, leaving the first
    unreachable by ``mesh-node status``. A socket file that nobody answers on is
    left by a daemon that did not stop cleanly; it is replaced."""
    check_existing_control_dir(control_dir)
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
        self._check_socket()
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

    def _check_socket(self) -> None:
        """Talk only to a socket of ours in a directory of ours that nobody else may
        write: another user's socket there may be a fake daemon's (``ConfigError``)."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            raise TransportError(f"no daemon listening at {self.path}", code="no-daemon") from None
        except OSError as exc:
            raise TransportError(f"control socket {self.path}: {exc.strerror}") from None
        uid = os.getuid()
        if st.st_uid != uid:
            raise ConfigError(
                f"control socket {self.path} belongs to another user (uid {st.st_uid}), "
                "not to you: refusing to use it (run the command as the daemon's user)"
            )
        try:
            dst = os.stat(self.path.parent)
        except OSError as exc:
            raise TransportError(f"control dir {self.path.parent}: {exc.strerror}") from None
        if dst.st_uid != uid or dst.st_mode & 0o022:
            raise ConfigError(
                f"control dir {self.path.parent} belongs to another user or is writable by "
                f"others (uid {dst.st_uid}, mode {stat.S_IMODE(dst.st_mode):04o}): "
                "refusing to use its socket"
            )
        if not stat.S_ISSOCK(st.st_mode):
            raise TransportError(
                f"no daemon listening at {self.path} (not a socket)", code="no-daemon"
            )
