"""The process-wide memo of successful verifications (node/verify_memo.py)."""

from __future__ import annotations

from node.verify_memo import VerifyMemo, shared_verifier
from protocols.crypto import Ed25519Signer, Ed25519Verifier


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.inner = Ed25519Verifier()

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        self.calls += 1
        return self.inner.verify(public_key, signature, data)


class Owner:
    """Stands for a node's core: the memo works while two of them are alive."""


def _memo(inner: Counting | None = None, **kw: int) -> tuple[VerifyMemo, list[Owner]]:
    memo = VerifyMemo(inner, **kw)
    owners = [Owner(), Owner()]
    for o in owners:
        memo.register(o)
    return memo, owners


def _signed(msg: bytes = b"cfp bytes") -> tuple[bytes, bytes, bytes]:
    signer = Ed25519Signer(bytes(range(32)))
    return signer.public_key, signer.sign(msg), msg


def test_a_good_signature_is_verified_once_then_remembered() -> None:
    inner = Counting()
    memo, _owners = _memo(inner)
    pk, sig, msg = _signed()
    assert memo.verify(pk, sig, msg) and memo.verify(pk, sig, msg)
    assert inner.calls == 1 and memo.hits == 1


def test_a_bad_signature_is_never_remembered() -> None:
    inner = Counting()
    memo, _owners = _memo(inner)
    pk, sig, msg = _signed()
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not memo.verify(pk, bad, msg)
    assert not memo.verify(pk, bad, msg)
    assert inner.calls == 2 and len(memo) == 0
    # a good signature over other bytes, or with another key, is not a hit
    assert memo.verify(pk, sig, msg)
    assert not memo.verify(pk, sig, msg + b"!")
    other = Ed25519Signer(bytes(32)).public_key
    assert not memo.verify(other, sig, msg)
    assert inner.calls == 5 and memo.hits == 0


def test_odd_sizes_bypass_the_memo() -> None:
    inner = Counting()
    memo, _owners = _memo(inner)
    pk, sig, msg = _signed()
    # shifting a byte between key, signature and message must never collide
    assert not memo.verify(pk[:-1], bytes([pk[-1]]) + sig, msg)
    assert not memo.verify(pk, sig + msg[:1], msg[1:])
    assert len(memo) == 0 and inner.calls == 2


def test_the_memo_is_bounded() -> None:
    memo, _owners = _memo(capacity=3)
    signer = Ed25519Signer(bytes(range(32)))
    msgs = [bytes([i]) * 10 for i in range(5)]
    for m in msgs:
        assert memo.verify(signer.public_key, signer.sign(m), m)
    assert len(memo) == 3


def test_nodes_of_one_process_share_one_memo() -> None:
    assert shared_verifier() is shared_verifier()


def test_a_lone_node_pays_nothing_for_the_memo() -> None:
    import gc

    inner = Counting()
    memo = VerifyMemo(inner)
    pk, sig, msg = _signed()
    one, two = Owner(), Owner()
    memo.register(one)
    assert memo.verify(pk, sig, msg) and memo.verify(pk, sig, msg)
    assert inner.calls == 2 and len(memo) == 0  # one user: straight to the verifier
    memo.register(two)
    assert memo.verify(pk, sig, msg) and memo.verify(pk, sig, msg)
    assert inner.calls == 3 and memo.hits == 1
    del two
    gc.collect()
    assert memo.users == 1 and len(memo) == 0  # forgotten with the second user


def test_embedded_nodes_verify_a_shared_cfp_once() -> None:
    import asyncio

    from node.api import LocalOrg, Node
    from node.handlers import Task

    async def echo(task: Task) -> object:
        return task.input

    async def main() -> None:
        org = LocalOrg("memo")
        req = Node.from_org(org, "req", preset="local")
        async with req:
            bidders = []
            for i in range(3):
                node = Node.from_org(org, f"b{i}", seeds=[req.endpoint], preset="local")
                node.add_capability("echo", echo)
                await node.start()
                bidders.append(node)
            try:
                assert await req.wait_for_peers(3, timeout=10)
                # ... and one decode memo (per event loop)
                memos = {id(n._rt().core.wire.memo) for n in (req, *bidders)}
                assert len(memos) == 1 and req._rt().core.wire.memo is not None
                await asyncio.sleep(0.3)
                memo = shared_verifier()
                before = memo.hits
                result = await req.request("echo", 7, timeout=5)
                assert result.value == 7
                # the cfp reaches the 3 bidders: 2 verifications saved (the award goes
                # to the winner only)
                assert memo.hits - before >= 2
            finally:
                for node in bidders:
                    await node.stop(0)

    asyncio.run(asyncio.wait_for(main(), 30))
