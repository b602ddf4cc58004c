"""A certificate renewed while the node runs (``Node.replace_certificate``, what
``mesh-node reload`` calls): certificates are short-lived, and a renewal used to need a
restart of the daemon, with its in-flight work handed back."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import pytest

from node import LocalOrg, Node, Task
from protocols.errors import ConfigError, ContractNetError, LocalProtocolError
from protocols.identity import NodeIdentity
from protocols.trust import TrustStore, issue_certificate


def _cert(org: LocalOrg, key: bytes, **kw: Any) -> bytes:
    now = time.time()
    fields: dict[str, Any] = {"not_before": now - 60, "not_after": now + 3600, **kw}
    return issue_certificate(org.signer, org.name, key, "requester", **fields)


def test_a_renewed_certificate_is_what_the_running_node_seals_with() -> None:
    """The worker checks the requester's certificate in each cfp it receives: the
    request only passes if the frames carry the renewed certificate."""
    org = LocalOrg("acme")
    ident = NodeIdentity.from_seed(os.urandom(32))
    narrow = _cert(org, ident.public_key, requests=("echo",), offers=("echo",))
    wide = _cert(org, ident.public_key, requests=("echo", "upper"), offers=("echo",))

    async def main() -> None:
        worker = Node.from_org(org, "worker", preset="local")

        @worker.capability("upper")
        async def upper(task: Task) -> str:
            return str(task.input).upper()

        async with worker:
            req = Node(ident, narrow, TrustStore([org.policy()]), seeds=[worker.endpoint])
            req.add_capability("echo", lambda task: task.input)
            async with req:
                assert await req.wait_for_peers(1, timeout=10)
                with pytest.raises(LocalProtocolError, match="does not allow requesting"):
                    await req.request("upper", "a", timeout=5)
                changed = req.replace_certificate(wide)
                assert changed["certificate"][0].startswith("valid until")
                assert "requests echo, upper" in changed["certificate"]
                result = await req.request("upper", "abc", timeout=10)
                assert result.value == "ABC" and result.executor == worker.node_id
                assert req.replace_certificate(wide) == {"certificate": []}  # the same one

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_certificate_the_node_cannot_use_is_refused_and_changes_nothing() -> None:
    org, other = LocalOrg("acme"), LocalOrg("globex")
    ident = NodeIdentity.from_seed(os.urandom(32))
    first = _cert(org, ident.public_key)
    node = Node(ident, first, TrustStore([org.policy(), other.policy()]), preset="local")
    node.add_capability("echo", lambda task: task.input)
    now = time.time()
    stranger = NodeIdentity.from_seed(os.urandom(32))
    forged = bytearray(_cert(org, ident.public_key, not_after=now + 7200))
    forged[-1] ^= 1  # the org's signature no longer holds
    bad = {
        "another node key": _cert(org, stranger.public_key),
        "of org 'globex'": issue_certificate(
            other.signer, "globex", ident.public_key, "n", not_before=now, not_after=now + 60
        ),
        "expired at": _cert(org, ident.public_key, not_before=now - 7200, not_after=now - 3600),
        "does not allow offering echo": _cert(org, ident.public_key, offers=("upper",)),
        "not valid": bytes(forged),
        "not valid: ": b"\x92\xc4\x01x",
    }
    for why, raw in bad.items():
        with pytest.raises(ConfigError, match=why):
            node.replace_certificate(raw)
        assert node.certificate.raw == first


def test_past_the_old_certificate_s_end_only_the_renewed_node_gets_through() -> None:
    """The renewal's purpose. Two requesters start with certificates that end in 2 s;
    one is renewed. Past the end (and the worker's clock-skew allowance, made short
    here), the renewed one's request completes and the other's is refused."""
    org = LocalOrg("acme")
    ids = [NodeIdentity.from_seed(os.urandom(32)) for _ in range(2)]
    end = time.time() + 2

    async def main() -> None:
        worker = Node.from_org(org, "worker", preset="local")

        @worker.capability("upper")
        async def upper(task: Task) -> str:
            return str(task.input).upper()

        async with worker:
            wire = worker._rt().core.wire
            wire.config = dataclasses.replace(wire.config, max_skew=0.5)
            renewed, lapsed = (
                Node(
                    i,
                    _cert(org, i.public_key, not_after=end),
                    TrustStore([org.policy()]),
                    seeds=[worker.endpoint],
                    preset="local",
                )
                for i in ids
            )
            async with renewed, lapsed:
                assert await renewed.wait_for_peers(1, timeout=10)
                assert await lapsed.wait_for_peers(1, timeout=10)
                renewed.replace_certificate(_cert(org, ids[0].public_key))
                await asyncio.sleep(max(0.0, end - time.time()) + 1.0)
                result = await renewed.request("upper", "late", timeout=10)
                assert result.value == "LATE"
                with pytest.raises(ContractNetError):
                    await lapsed.request("upper", "late", timeout=4)
            assert worker.statistics().get("rejected.expired", 0) > 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_expired_certificate_does_not_make_a_good_trust_file_refused(tmp_path: Any) -> None:
    """With the certificate expired, every reload was refused as "trust.toml not
    reloaded: under it, the certificate expired": the trust file was blamed for what no
    trust file changes, and a partner org could not be added. It is taken now, and the
    reload warns of the certificate."""
    from node.config import DaemonConfig
    from node.daemon import reload_trust
    from node.files import TrustEntry, TrustFile, write_trust_file

    org, partner = LocalOrg("acme"), LocalOrg("globex")
    ident = NodeIdentity.from_seed(os.urandom(32))
    now = time.time()
    lapsed = _cert(org, ident.public_key, not_before=now - 7200, not_after=now - 60)
    node = Node(ident, lapsed, TrustStore([org.policy()]), preset="local")
    cfg = DaemonConfig("n", tmp_path / "n.key", tmp_path / "n.cert", tmp_path / "trust.toml")
    cfg.certificate.write_bytes(lapsed)
    entries = [TrustEntry(o.name, o.signer.public_key) for o in (org, partner)]
    write_trust_file(TrustFile(cfg.trust, entries))
    changes = reload_trust(node, cfg)
    assert changes["added"] == ["globex"] and node.trust.get("globex") is not None
    assert "expired at" in changes["warning"]
    write_trust_file(TrustFile(cfg.trust, entries[1:]))  # our own org dropped: refused
    with pytest.raises(ConfigError, match="not reloaded: under it, the cert"):
        reload_trust(node, cfg)
    assert node.trust.get("acme") is not None
