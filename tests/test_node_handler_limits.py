"""Handler limits: output caps that hold while the output streams, typed errors for a
python target that cannot load, and a total deadline for the HTTP handler."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.handlers import HandlerFailed, Task, http_handler, python_handler
from protocols.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20


def _task(deadline: float = 30.0) -> Task:
    return Task("t1", "cap", None, time.time() + deadline)


# Runs one subprocess handler in a fresh interpreter and reports the failure reason,
# the peak of Python allocations (tracemalloc) and the growth of the peak RSS.
_PROBE = """
import asyncio, json, resource, sys, time, tracemalloc
from node.handlers import HandlerFailed, Task, subprocess_handler

async def main():
    handler = subprocess_handler(tuple(json.loads(sys.argv[1])), 60.0)
    try:
        await handler(Task("t1", "cap", None, time.time() + 60))
    except HandlerFailed as exc:
        return exc.reason
    return "no failure"

rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
reason = asyncio.run(main())
peak = tracemalloc.get_traced_memory()[1]
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024
print(json.dumps({"reason": reason, "peak": peak, "rss_growth": growth}))
"""


def _probe(child: str) -> dict[str, Any]:
    command = json.dumps([sys.executable, "-c", child])
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_a_command_printing_50_mb_fails_without_buffering_it() -> None:
    child = "import sys\nfor _ in range(800): sys.stdout.buffer.write(b'x' * 65536)"
    out = _probe(child)
    assert out["reason"].endswith(f"printed more than {1 << 20} bytes"), out
    assert out["peak"] < 16 * MB, out  # the old code held all 50 MB (twice, when joining)
    assert out["rss_growth"] < 100 * MB, out


def test_a_command_with_50_mb_of_stderr_fails_with_its_tail() -> None:
    child = (
        "import sys\nfor _ in range(800): sys.stderr.buffer.write(b'noise ' * 10000 + b'\\n')\n"
        "sys.stderr.write('the last words\\n'); sys.exit(1)"
    )
    out = _probe(child)
    assert out["reason"].endswith("exited with 1: the last words"), out
    assert out["peak"] < 16 * MB, out
    assert out["rss_growth"] < 100 * MB, out


def test_python_handler_with_a_syntax_error_in_its_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "parley_broken_handler.py").write_text("x = 1\n\ndef f(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        python_handler("parley_broken_handler:f")
    msg = str(info.value)
    assert msg.startswith(
        "python handler 'parley_broken_handler:f': SyntaxError in parley_broken_handler.py line 3: "
    ), msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        (":f", "ValueError"),
        (".rel:f", "TypeError"),
        ("parley_raising_handler:f", "RuntimeError: boom"),
        ("parley_exiting_handler:f", "SystemExit: 3"),
    ],
)
def test_python_handler_targets_that_cannot_load_are_config_errors(
    target: str, cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "parley_raising_handler.py").write_text("raise RuntimeError('boom\\nsecond')\n")
    (tmp_path / "parley_exiting_handler.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        python_handler(target)
    msg = str(info.value)
    assert msg.startswith(f"python handler {target!r}: {cause}"), msg
    assert "\n" not in msg


class _Drip(http.server.BaseHTTPRequestHandler):
    """``/body``: headers at once, then a body byte every 0.3 s; ``/headers``: the
    status line itself a byte every 0.3 s; ``/big``: 2 MiB with no Content-Length."""

    stop = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/big":
            self.send_response(200)
            self.end_headers()
            for _ in range(32):
                self.wfile.write(b" " * 65536)
            return
        if self.path == "/headers":
            drip: Iterator[int] = itertools.chain(b"HTTP/1.0 200 OK\r\n", itertools.repeat(32))
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            drip = itertools.repeat(32)
        for byte in itertools.islice(drip, 200):  # 60 s at most
            if self.stop.wait(0.3):
                return
            try:
                self.wfile.write(bytes([byte]))
            except OSError:
                return

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def drip_server() -> Iterator[str]:
    _Drip.stop.clear()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    _Drip.stop.set()
    srv.shutdown()
    srv.server_close()
    th.join(5)


@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_an_agent_dripping_bytes_hits_the_total_deadline(drip_server: str, path: str) -> None:
    url = drip_server + path
    before = threading.active_count()
    outcome: dict[str, Any] = {}

    async def call() -> None:
        start = time.monotonic()
        try:
            await http_handler(url, 1.0)(_task())
        except HandlerFailed as exc:
            outcome["reason"] = exc.reason
        outcome["elapsed"] = time.monotonic() - start

    # asyncio.run returns only once its executor's worker thread has finished.
    runner = threading.Thread(target=asyncio.run, args=(call(),), daemon=True)
    runner.start()
    runner.join(15)
    assert not runner.is_alive(), "the handler (or its worker thread) outlived the deadline"
    assert outcome.get("reason") == f"{url} timed out after 1.0s", outcome
    assert outcome["elapsed"] < 4.0, outcome
    give_up = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < give_up:
        time.sleep(0.05)
    assert threading.active_count() <= before, threading.enumerate()


def test_an_agent_answering_too_much_fails(drip_server: str) -> None:
    async def call() -> None:
        with pytest.raises(HandlerFailed, match=f"answered more than {1 << 20} bytes"):
            await http_handler(drip_server + "/big", 10.0)(_task())

    asyncio.run(asyncio.wait_for(call(), 30))
