"""Version specs and the capability index."""

from __future__ import annotations

import hashlib

import pytest

from protocols.capabilities.index import CapabilityIndex
from protocols.capabilities.records import CapabilityRecord, CapabilitySpec, RecordInfo
from protocols.capabilities.versions import matches, parse_version
from protocols.errors import LocalProtocolError


@pytest.mark.parametrize(
    ("spec", "version", "ok"),
    [("*", "3.1", True), ("", "0.1", True), ("1.2", "1.2", True), ("1.2", "1.2.0", True),
     ("1.2", "1.2.1", False), ("=1.2", "1.2", True), ("^1", "1.9.3", True), ("^1", "2.0", False),
     ("^1.2", "1.1", False), ("^1.2", "1.2.5", True), ("^0.3", "0.3.9", True),
     ("^0.3", "0.4", False), ("^0.0.3", "0.0.3", True), ("^0.0.3", "0.0.4", False),
     (">=1.2,<2", "1.2", True), (">=1.2,<2", "1.10", True), (">=1.2,<2", "2.0", False),
     (">1", "1.0.1", True), ("<=1", "1.0", True), ("!=1.1", "1.1", False),
     ("==2", "2.0.0", True), ("*", "banana", True), ("^1", "banana", False)],
)  # fmt: skip
def test_version_specs(spec: str, version: str, ok: bool) -> None:
    assert matches(spec, version) is ok


@pytest.mark.parametrize("bad", ["x", "1.2.3.4", "^", ">=a", "1..2"])
def test_bad_specs_raise(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        matches(bad, "1.0")


def test_parse_version() -> None:
    assert parse_version("1") == (1, 0, 0)
    assert parse_version(" 2.3.4 ") == (2, 3, 4)


def _info(node: str, load: float, caps: list[tuple[str, str]], inc: int = 0) -> RecordInfo:
    rec = CapabilityRecord(
        node_id=node,
        endpoints=[f"sim://{node}"],
        capabilities=[
            CapabilitySpec(name=n, version=v, max_concurrency=2, cost={"usd": 0.5}) for n, v in caps
        ],
        load=load,
        incarnation=inc,
        seq=1,
    )
    frame = repr(rec).encode()
    return RecordInfo(rec, "acme", frame, hashlib.sha256(frame).digest())


def test_find_orders_deterministically_and_filters() -> None:
    index = CapabilityIndex()
    index.upsert(_info("c", 0.5, [("translate", "1.2"), ("ocr", "2.0")]), alive=True)
    index.upsert(_info("a", 0.5, [("translate", "1.4")]), alive=True)
    index.upsert(_info("b", 0.1, [("translate", "2.0")]), alive=True)
    index.upsert(_info("d", 0.0, [("translate", "1.3")]), alive=False)
    found = index.find("translate", "^1")
    assert [c.node_id for c in found] == ["a", "c"]  # d is dead, b is version 2
    first = found[0]
    assert (first.endpoint, first.org, first.max_concurrency, first.alive) == (
        "sim://a",
        "acme",
        2,
        True,
    )
    assert dict(first.cost) == {"usd": 0.5}
    assert [c.node_id for c in index.find("translate")] == ["b", "a", "c"]
    with_dead = index.find("translate", include_dead=True)
    assert [c.node_id for c in with_dead] == ["b", "a", "c", "d"]
    assert [c.node_id for c in index.find("translate", exclude=frozenset({"b"}))] == ["a", "c"]
    assert index.capabilities() == ["ocr", "translate"]


def test_upsert_replaces_capabilities_and_liveness() -> None:
    index = CapabilityIndex()
    index.upsert(_info("a", 0.2, [("ocr", "1.0")]), alive=True)
    index.upsert(_info("a", 0.9, [("translate", "1.0")], inc=1), alive=True)
    assert index.find("ocr") == []
    assert index.find("translate")[0].load == 0.9
    index.set_alive("a", False)
    assert index.find("translate") == []
    assert index.snapshot()[0]["alive"] is False
    index.set_alive("a", True)
    assert [c.node_id for c in index.find("translate")] == ["a"]
    index.set_alive("a", False)
    index.set_alive("zz", False)  # unknown: nothing to mark
    index.remove("a")
    assert "a" not in index and index.capabilities() == [] and len(index) == 0
    assert index.snapshot() == []
    index.upsert(_info("zz", 0.1, [("ocr", "1.0")]), alive=True)
    index.upsert(_info("a", 0.1, [("ocr", "1.0")]), alive=True)  # back after removal
    assert [c.node_id for c in index.find("ocr")] == ["a", "zz"]
