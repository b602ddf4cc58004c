"""The small pure pieces of membership: queue, suspicion, awareness, probe order,
push-pull digests, config presets and message models."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from protocols.errors import ConfigError
from protocols.membership.awareness import Awareness
from protocols.membership.config import MembershipConfig, lan, local, wan
from protocols.membership.messages import MEMBERSHIP_PAYLOADS, Claim, Ping, PushPull
from protocols.membership.probe import ProbeOrder
from protocols.membership.pushpull import claims_in, compare_digests
from protocols.membership.queue import TransmitLimitedQueue
from protocols.membership.suspicion import Suspicion


def test_queue_newer_update_replaces_older_and_limits_transmits() -> None:
    q: TransmitLimitedQueue[str] = TransmitLimitedQueue()
    q.put("a", "a1")
    q.put("b", "b1")
    q.put("a", "a2")  # invalidates a1
    assert len(q) == 2 and q.get("a") == "a2"
    sent = [q.take(8, limit=3) for _ in range(4)]
    assert sent[0] == ["b1", "a2"] or sent[0] == ["a2", "b1"]
    assert all("a1" not in batch for batch in sent)
    assert sent[3] == [] and len(q) == 0  # each sent exactly 3 times, then retired


def test_queue_takes_the_newest_then_fewest_transmits_then_newest() -> None:
    q: TransmitLimitedQueue[str] = TransmitLimitedQueue()
    for key in "abcd":
        q.put(key, key)
    # Half of a message (one slot of two) goes to the newest update, whatever its count.
    assert q.take(2, limit=10) == ["d", "c"]
    assert q.take(2, limit=10) == ["d", "b"]
    q.put("e", "e")
    assert q.take(2, limit=10) == ["e", "a"]
    assert q.take(3, limit=10, skip="c") == ["e", "b", "a"]  # then the fewest-sent
    assert (
        q.transmits("c") == 1
        and q.transmits("e") == 2
        and q.transmits("d") == 2
        and q.transmits("b") == 2
        and q.transmits("zz") is None
    )


def test_suspicion_confirmations_shrink_the_deadline() -> None:
    s = Suspicion("x", incarnation=3, k=2, min_timeout=10.0, max_timeout=60.0, now=100.0)
    assert s.deadline() == pytest.approx(160.0)
    assert not s.confirm("x")  # the origin does not confirm itself
    assert s.confirm("y")
    first = s.deadline()
    assert 110.0 < first < 160.0
    assert not s.confirm("y")  # repeats do not count
    assert s.confirm("z") and s.deadline() == pytest.approx(110.0)
    assert not s.confirm("w")  # beyond K
    assert s.confirmations == 2


def test_awareness_clamps_and_scales() -> None:
    a = Awareness(max_multiplier=3)
    assert a.apply_delta(-1) == 0
    assert a.apply_delta(5) == 2
    assert a.scale(0.5) == pytest.approx(1.5)
    assert a.apply_delta(-1) == 1


def test_probe_order_round_robin_is_a_permutation_per_pass() -> None:
    order = ProbeOrder()
    rng = random.Random(7)
    ids = [f"n{i}" for i in range(10)]
    for node in ids:
        order.add(node, rng)
    order.add("n3", rng)  # idempotent
    passes = [[order.next(lambda _: True, rng) for _ in ids] for _ in range(3)]
    for p in passes:
        assert sorted(p, key=str) == sorted(ids)
    assert passes[1] != passes[2]  # reshuffled
    skipped = [order.next(lambda n: n != "n5", rng) for _ in range(9)]
    assert "n5" not in skipped
    assert order.next(lambda _: False, rng) is None


def test_probe_order_is_deterministic_and_samples_distinct_eligible() -> None:
    def run() -> list[str]:
        order, rng = ProbeOrder(), random.Random(3)
        for i in range(50):
            order.add(f"n{i}", rng)
        order.remove("n7")
        return order.sample(5, lambda n: n != "n1", rng, exclude="n2") + order.ids()

    a, b = run(), run()
    assert a == b
    picked = a[:5]
    assert len(set(picked)) == 5 and not {"n1", "n2", "n7"} & set(picked)
    assert "n7" not in a[5:] and len(a) == 5 + 49


def test_compare_digests() -> None:
    ours = [("me", 0, 1, 0), ("a", 1, 5, 0), ("b", 2, 0, 2), ("c", 0, 3, 0)]
    theirs = [
        ("me", 0, 0, 0),
        ("a", 1, 6, 0),
        ("b", 1, 9, 0),
        ("d", 0, 0, 0),
        ("them", 0, 1, 0),
        ("x", 3, 0, 2),
    ]
    send, want = compare_digests(ours, theirs, "me")
    # b and x are dead on one side: their records (signed before the death) do not
    # travel and bring them back alive; the status goes as a claim (claims_in).
    assert send == ["me", "c"]
    assert want == ["a", "d", "them"]
    assert claims_in([*ours, ("e", 4, 0, 1)]) == [("b", 2, "dead"), ("e", 4, "suspect")]


def test_compare_digests_never_introduces_or_revives_a_suspect() -> None:
    # s1 is suspect on our side, s2 on theirs: unknown to the other side, it is not
    # introduced; r1 (ours suspect) and r2 (theirs suspect) are held dead at an older
    # incarnation on the other side: not revived. A suspect's record only updates a
    # side holding the member alive or suspect (u1, u2), as memberlist's mergeState.
    ours = [("me", 0, 0, 0), ("s1", 1, 2, 1), ("u1", 1, 3, 1), ("u2", 0, 1, 0)]
    ours += [("r1", 1, 2, 1), ("r2", 0, 1, 2)]
    theirs = [("them", 0, 0, 0), ("s2", 2, 0, 1), ("u1", 1, 1, 0), ("u2", 0, 4, 1)]
    theirs += [("r1", 0, 1, 2), ("r2", 1, 2, 1)]
    send, want = compare_digests(ours, theirs, "me")
    assert send == ["me", "u1"]
    assert want == ["them", "u2"]


def test_presets_and_validation() -> None:
    assert lan().probe_interval == 1.0 and lan().gossip_nodes == 3
    assert wan().probe_interval > lan().probe_interval and wan().suspicion_mult == 6
    assert local().indirect_checks == 1 and local().gossip_interval < lan().gossip_interval
    with pytest.raises(ConfigError):
        MembershipConfig(probe_timeout=2.0, probe_interval=1.0)
    with pytest.raises(ConfigError):
        MembershipConfig(retransmit_mult=0)
    assert lan().with_(gossip_nodes=4).gossip_nodes == 4


def test_payload_models_are_frozen_and_strict() -> None:
    for model in MEMBERSHIP_PAYLOADS.values():
        assert model.model_config.get("frozen") and model.model_config.get("extra") == "forbid"
    claim = Claim(node="a", incarnation=1, status="dead", by="b")
    ping = Ping(seq=1, target="a", records=[b"x"], claims=[claim])
    assert Ping.model_validate(ping.model_dump()) == ping
    with pytest.raises(ValidationError):
        Ping.model_validate({"seq": 1, "target": "a", "extra": 1})
    with pytest.raises(ValidationError):
        Claim(node="a", incarnation=1, status="alive", by="b")  # type: ignore[arg-type]
    pp = PushPull.model_validate({"digest": [["a", 1, 2, 0]]})
    assert pp.digest == [("a", 1, 2, 0)]


def test_a_whole_digest_keeps_its_wire_form_and_a_large_one_splits_by_bucket() -> None:
    from protocols.codec import packb
    from protocols.membership.pushpull import DIGEST_BUDGET, bucket_of, digest_parts

    whole = PushPull(digest=[("a", 1, 2, 0)], records=[b"r"])
    assert whole.model_dump() == {"digest": [("a", 1, 2, 0)], "records": [b"r"], "join": False}
    part = PushPull(digest=[("a", 1, 2, 0)], part=2, parts=3)
    assert PushPull.model_validate(part.model_dump()) == part
    with pytest.raises(ValidationError):
        PushPull(digest=[], part=3, parts=3)
    small = [(f"n{i:03d}", 0, 1, 0) for i in range(100)]
    assert digest_parts(small) == [small]
    # 10,000 members of 52-character ids: 580 kB in one frame, over the 256 kB limit.
    big = [(f"{i:052d}", 3, 40, i % 4) for i in range(10_000)]
    parts = digest_parts(big)
    assert len(parts) > 1
    assert sorted(e for p in parts for e in p) == sorted(big)
    for k, entries in enumerate(parts):
        assert all(bucket_of(e[0], len(parts)) == k for e in entries)
        size = len(packb(PushPull(digest=entries, part=k, parts=len(parts)).model_dump()))
        assert size <= DIGEST_BUDGET + 4096
