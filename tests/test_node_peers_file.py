"""peers.json: the live peers a daemon kept for its next start. Whatever is in the
file, a start never fails on it: a damaged or hostile file is ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.peers_file import KEEP, NAME, read_peers, write_peers

OWN = "tcp://127.0.0.1:7000"


def test_written_then_read_without_ourselves_and_bounded(tmp_path: Path) -> None:
    eps = [f"tcp://127.0.0.1:{7001 + i}" for i in range(40)]
    write_peers(tmp_path, [OWN, *eps], OWN)
    assert (tmp_path / NAME).stat().st_mode & 0o777 == 0o600
    assert read_peers(tmp_path, OWN) == sorted(eps)[:KEEP]


@pytest.mark.parametrize(
    "content",
    [
        "[" * 100_000 + "]" * 100_000,  # RecursionError in the JSON decoder
        json.dumps({"peers": ["tcp://127.0.0.1:1"] * 100_000}),  # far over the size cap
        json.dumps({"peers": [1, None, {"a": 1}, "ipc:///x", "tcp://0.0.0.0:7001", "nope"]}),
        json.dumps(["tcp://127.0.0.1:7001"]),
        "\\xff\\xfe not json",
    ],
)
def test_a_damaged_file_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / NAME).write_text(content)
    assert read_peers(tmp_path, OWN) == []


def test_a_missing_file_is_no_peers(tmp_path: Path) -> None:
    assert read_peers(tmp_path / "nowhere", OWN) == []
