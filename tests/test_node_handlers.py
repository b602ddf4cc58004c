"""Handlers, config parsing and the control socket (no core needed)."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.config import CapabilityConfig, load_config
from node.control import (
    ControlClient,
    ControlServer,
    check_control_dir_free,
    prepare_control_dir,
    socket_path,
)
from node.handlers import HandlerFailed, Task, make_handler
from protocols.errors import ConfigError, TransportError


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return run


def _task(inp: Any = None, deadline: float = 30.0) -> Task:
    return Task("t1", "cap", inp, time.time() + deadline)


async def upper(task: Task) -> Any:
    return str(task.input).upper()


def plain(task: Task) -> Any:
    return {"n": task.input * 2}


@aio
async def test_python_handlers() -> None:
    h = make_handler(CapabilityConfig("c", python=f"{__name__}:upper"))
    assert await h(_task("abc")) == "ABC"
    h = make_handler(CapabilityConfig("c", python=f"{__name__}:plain"))
    assert await h(_task(21)) == {"n": 42}
    with pytest.raises(ConfigError, match="unknown handler"):
        make_handler(CapabilityConfig("c", python="no_such_module_x:f"))


@aio
async def test_subprocess_handler() -> None:
    script = "import json,sys; t=json.load(sys.stdin); print(json.dumps(t['input']*2))"
    h = make_handler(CapabilityConfig("c", command=(sys.executable, "-c", script)))
    assert await h(_task(4)) == 8
    fail = "import sys; sys.stderr.write('boom here\\n'); sys.exit(3)"
    h = make_handler(CapabilityConfig("c", command=(sys.executable, "-c", fail)))
    with pytest.raises(HandlerFailed, match="exited with 3: boom here"):
        await h(_task())
    slow = "import time; time.sleep(20)"
    h = make_handler(CapabilityConfig("c", command=(sys.executable, "-c", slow), timeout=0.3))
    with pytest.raises(HandlerFailed, match="timed out"):
        await h(_task())
    h = make_handler(CapabilityConfig("c", command=(sys.executable, "-c", "print('nope')")))
    with pytest.raises(HandlerFailed, match="JSON"):
        await h(_task())


class _Agent(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        codes = {"bad": 500, "invalid": 422, "busy": 429}
        if body["input"] in codes:
            self.send_response(codes[body["input"]])
            self.end_headers()
            return
        data = json.dumps({"echo": body["input"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_agent() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Agent)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/run"
    srv.shutdown()
    srv.server_close()
    th.join(5)


def test_http_handler(http_agent: str) -> None:
    async def body() -> None:
        h = make_handler(CapabilityConfig("c", url=http_agent, timeout=5))
        assert await h(_task("hi")) == {"echo": "hi"}
        with pytest.raises(HandlerFailed, match="500") as failed:
            await h(_task("bad"))
        assert failed.value.retry  # a server error may pass: tried again elsewhere
        with pytest.raises(HandlerFailed, match="422") as failed:
            await h(_task("invalid"))
        assert not failed.value.retry  # the request itself is wrong: final
        with pytest.raises(HandlerFailed, match="429") as failed:
            await h(_task("busy"))
        assert failed.value.retry

    asyncio.run(asyncio.wait_for(body(), 30))


CONFIG = """
[node]
name = "alpha"
identity = "alpha.key"
certificate = "alpha.cert"
trust = "trust.toml"
listen = "tcp://127.0.0.1:7001"
seeds = ["tcp://127.0.0.1:7002"]

[mdns]
enabled = true
interfaces = ["127.0.0.1"]

[[capability]]
name = "echo"
python = "mod:fn"
max_concurrency = 2

[[capability]]
name = "shell"
command = ["wc", "-c"]
timeout = 5
"""


def test_config(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text(CONFIG)
    cfg = load_config(p)
    assert cfg.identity == tmp_path / "alpha.key"
    assert cfg.seeds == ("tcp://127.0.0.1:7002",)
    assert [c.handler_kind for c in cfg.capabilities] == ["python", "subprocess"]
    assert cfg.mdns.enabled and cfg.mdns.interfaces == ("127.0.0.1",)
    bad = {
        "nope = 1\n" + CONFIG: "unknown key",
        CONFIG.replace('name = "alpha"\n', ""): "missing key 'name'",
        CONFIG.replace('python = "mod:fn"', 'python = "modfn"'): "module:function",
        CONFIG.replace('python = "mod:fn"', ""): "exactly one handler",
        "[node": "invalid TOML",
        CONFIG.replace('"tcp://127.0.0.1:7002"', '"127.0.0.1:7002"'): (
            r"node.seeds: '127.0.0.1:7002' is not tcp://host:port"
        ),
        CONFIG.replace("[node]\n", '[node]\nadvertise = "tcp://*:7001"\n'): (
            r"node.advertise: 'tcp://\*:7001' is not an address peers can dial"
        ),
        CONFIG.replace("[node]\n", '[node]\nadvertise = "10.0.0.5:7001"\n'): (
            r"node.advertise: '10.0.0.5:7001' is not tcp://host:port"
        ),
        CONFIG.replace("[node]\n", '[node]\nadvertise = "tcp://0.0.0.0:7001"\n'): (
            r"node.advertise: 'tcp://0.0.0.0:7001' is not an address peers can dial"
        ),
        CONFIG.replace('listen = "tcp://127.0.0.1:7001"', 'listen = "tcp://0.0.0.0:7001"'): (
            r"node.listen 'tcp://0.0.0.0:7001' binds every interface: set node.advertise"
        ),
        # libzmq would bind port 99999 - 65536 = 34463 and say nothing
        CONFIG.replace('listen = "tcp://127.0.0.1:7001"', 'listen = "tcp://127.0.0.1:99999"'): (
            r"node.listen: 'tcp://127.0.0.1:99999' is not tcp://host:port"
        ),
    }
    cap = 'command = ["wc", "-c"]\n'
    assert CONFIG.count(cap) == 1
    for line, msg in {
        'max_concurrency = "abc"': r"capability\[1\].max_concurrency: a whole number from 1 to 10000",
        "max_concurrency = 0": r"max_concurrency: a whole number from 1 to 10000, not 0",
        "bid = nan": r"capability\[1\].bid: a number at least 0, not nan",
        "bid = -1": r"bid: a number at least 0, not -1",
        "timeout = inf": r"capability\[1\].timeout: a number above 0, not inf",
        'version = "banana"': r"version: 'banana' is not a version such as 1, 1.2 or 1.2.3",
    }.items():
        bad[CONFIG.replace(cap, cap + line + "\n").replace("timeout = 5\n", "")] = msg
    bad[CONFIG + "\n[limits]\ngrace_seconds = -5\n"] = r"limits.grace_seconds: a number at least 0"
    bad[CONFIG.replace("enabled = true", 'enabled = "false"')] = r"mdns.enabled: true or false"
    bad[CONFIG.replace('interfaces = ["127.0.0.1"]', 'interfaces = "127.0.0.1"')] = (
        r"mdns.interfaces: a list of addresses"
    )
    for text, msg in bad.items():
        assert text != CONFIG  # each case changes the config (a replace that missed)
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_config(p)
    p.write_text(
        CONFIG.replace('listen = "tcp://127.0.0.1:7001"', 'listen = "tcp://0.0.0.0:7001"').replace(
            "[node]\n", '[node]\nadvertise = "tcp://10.0.0.5:7001"\n'
        )
    )
    cfg = load_config(p)  # every interface, with the address peers dial: fine
    assert (cfg.listen, cfg.advertise) == ("tcp://0.0.0.0:7001", "tcp://10.0.0.5:7001")
    # A relative control_dir is relative to the config file, like every other path
    # (it was relative to wherever the daemon was started).
    p.write_text(CONFIG.replace("[node]\n", '[node]\ncontrol_dir = "ctl-alpha"\n'))
    assert load_config(p).control_dir == tmp_path / "ctl-alpha"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


@aio
async def test_control_socket(tmp_path: Path) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("cmd") == "slow":
            await asyncio.sleep(0.2)
        return {"ok": True, "echo": req}

    cdir = tmp_path / "ctl"
    server = ControlServer(cdir, handler)
    server.start()
    try:
        assert oct(cdir.stat().st_mode & 0o777) == "0o700"
        client = ControlClient(cdir)
        replies = await asyncio.gather(
            asyncio.to_thread(client.call, {"cmd": "slow"}),
            asyncio.to_thread(client.call, {"cmd": "status"}),
        )
        assert [r["echo"]["cmd"] for r in replies] == ["slow", "status"]
    finally:
        await server.close()
    with pytest.raises(TransportError, match="no daemon"):
        ControlClient(cdir).call({"cmd": "status"})


@aio
async def test_a_control_dir_in_use_is_refused_and_a_stale_socket_replaced(
    tmp_path: Path,
) -> None:
    """Two daemons with one control dir (two configs with one name) would share one
    socket path: the second would unlink the first's and leave it unreachable."""

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "name": "alpha"}

    cdir = tmp_path / "ctl"
    server = ControlServer(cdir, handler)
    server.start()
    try:
        with pytest.raises(ConfigError, match=r"in use by a running daemon \(alpha\)"):
            await asyncio.to_thread(check_control_dir_free, cdir)
    finally:
        await server.close()
    prepare_control_dir(cdir)
    socket_path(cdir).touch()  # left by a daemon that did not stop cleanly
    await asyncio.to_thread(check_control_dir_free, cdir)  # stale: no error
    replacement = ControlServer(cdir, handler)
    replacement.start()
    try:
        reply = await asyncio.to_thread(ControlClient(cdir).call, {"cmd": "status"})
        assert reply == {"ok": True, "name": "alpha"}
    finally:
        await replacement.close()


def test_an_unexpected_error_in_a_command_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bug (not the user's input) still ends in one line and exit 1; the traceback
    comes with PARLEY_DEBUG=1."""
    import node.cli_daemon
    from node.cli import main

    def broken(path: object) -> None:
        raise RuntimeError("something the code did not expect\nsecond line")

    monkeypatch.setattr(node.cli_daemon, "load_config", broken)
    monkeypatch.delenv("PARLEY_DEBUG", raising=False)
    out = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "node.toml")])
    assert out.exit_code == 1
    assert out.output.strip() == (
        "error: internal error (RuntimeError: something the code did not expect); run again "
        "with PARLEY_DEBUG=1 for the traceback, and please report it"
    )
    monkeypatch.setenv("PARLEY_DEBUG", "1")
    out = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "node.toml")])
    assert isinstance(out.exception, RuntimeError)
