"""Pure contract-net pieces: tables, strategies, bidding, bidder selection, payloads, doc."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols.contract_net import (
    CONTRACT_NET_PAYLOADS,
    EXECUTOR_TABLE,
    REQUESTER_TABLE,
    STRATEGIES,
    Bid,
    BidSituation,
    ExecEvent,
    ExecState,
    IllegalTransition,
    Offer,
    Quote,
    Refusal,
    ReqEvent,
    ReqState,
    TaskSpec,
    default_bid,
    make_weighted,
    rank,
    select_bidders,
)
from protocols.contract_net._state import EXECUTOR_TERMINAL, REQUESTER_TERMINAL, transition
from protocols.contract_net.diagram import render_all
from protocols.contract_net.messages import Cfp, Propose
from protocols.errors import LocalProtocolError

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# --- transition tables -------------------------------------------------------------


def test_terminal_states_have_no_way_out() -> None:
    for state in REQUESTER_TERMINAL:
        for event in ReqEvent:
            with pytest.raises(IllegalTransition):
                transition(REQUESTER_TABLE, state, event)
    for xstate in EXECUTOR_TERMINAL:
        for xevent in ExecEvent:
            with pytest.raises(IllegalTransition):
                transition(EXECUTOR_TABLE, xstate, xevent)


def test_every_non_terminal_state_can_reach_a_terminal_one() -> None:
    for table, terminal, states in (
        (REQUESTER_TABLE, REQUESTER_TERMINAL, list(ReqState)),
        (EXECUTOR_TABLE, EXECUTOR_TERMINAL, list(ExecState)),
    ):
        for start in states:
            seen, todo = {start}, [start]
            while todo:
                s = todo.pop()
                for (src, _), dst in table.items():  # type: ignore[attr-defined]
                    if src == s and dst not in seen:
                        seen.add(dst)
                        todo.append(dst)
            assert seen & terminal, start


def test_illegal_transition_is_a_local_protocol_error_with_a_code() -> None:
    with pytest.raises(LocalProtocolError) as err:
        transition(REQUESTER_TABLE, ReqState.AUCTION, ReqEvent.RESULT)
    assert err.value.code == "illegal-transition"
    # a result before any award is illegal; the agent turns this into a counted drop
    assert transition(REQUESTER_TABLE, ReqState.AWARDED, ReqEvent.RESULT) is ReqState.COMPLETED


def test_doc_diagrams_are_generated_from_the_tables() -> None:
    text = DOC.read_text()
    assert render_all() in text, "run: python -m protocols.contract_net.diagram"
    for kind in CONTRACT_NET_PAYLOADS:
        assert f"`{kind}`" in text


# --- strategies --------------------------------------------------------------------


def bid(name: str, price: float = 1.0, eta: float = 1.0, running: int = 0, **kw: float) -> Bid:
    return Bid(name, price, eta, running, int(kw.pop("capacity", 4)), **kw)  # type: ignore[arg-type]


def test_least_loaded_uses_effective_load_with_our_recent_awards() -> None:
    a = bid("a", running=1)
    b = bid("b", running=0, recent=2)
    assert [x.bidder for x in rank([a, b], "least_loaded")] == ["a", "b"]


def test_each_strategy_orders_by_its_criterion() -> None:
    cheap = bid("c", price=0.5, eta=9, running=3)
    fast = bid("f", price=5, eta=0.1, running=2)
    idle = bid("i", price=3, eta=5, running=0)
    bids = [cheap, fast, idle]
    assert rank(bids, "lowest_cost")[0] is cheap
    assert rank(bids, "earliest_eta")[0] is fast
    assert rank(bids, "least_loaded")[0] is idle


def test_weighted_combines_criteria() -> None:
    only_price = make_weighted(load=0, price=1, eta=0, confidence=0)
    a, b = bid("a", price=2), bid("b", price=1)
    assert [x.bidder for x in only_price([a, b])] == ["b", "a"]
    assert STRATEGIES["weighted"]([]) == []


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=8
    ),
    st.sampled_from(sorted(STRATEGIES)),
    st.randoms(use_true_random=False),
)
def test_ranking_is_deterministic_whatever_the_input_order(
    rows: list[tuple[int, int, int]], strategy: str, rnd: random.Random
) -> None:
    bids = [bid(f"n{i}", price=p, eta=e, running=r) for i, (p, e, r) in enumerate(rows)]
    shuffled = list(bids)
    rnd.shuffle(shuffled)
    assert rank(shuffled, strategy) == rank(bids, strategy)


def test_unknown_strategy_is_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        rank([], "cheapest-please")


# --- bidder selection ---------------------------------------------------------------


@dataclass(frozen=True)
class Cand:
    node_id: str
    alive: bool = True


def test_select_bidders_caps_skips_dead_and_excluded() -> None:
    cands = [Cand(f"n{i:02d}") for i in range(30)] + [Cand("dead", alive=False)]
    chosen = select_bidders(cands, random.Random(1), cap=16, exclude=["n00"])
    assert len(chosen) == 16 == len(set(chosen))
    assert "dead" not in chosen and "n00" not in chosen


def test_select_bidders_is_fair_and_independent_of_source_order() -> None:
    cands = [Cand(f"n{i:02d}") for i in range(40)]
    rng = random.Random(5)
    picks = Counter(n for _ in range(500) for n in select_bidders(cands, rng, cap=16))
    assert set(picks) == {c.node_id for c in cands}  # everyone gets a turn
    expected = 500 * 16 / 40
    assert all(0.7 * expected < v < 1.3 * expected for v in picks.values()), picks
    rev = list(reversed(cands))
    assert select_bidders(cands, random.Random(9)) == select_bidders(rev, random.Random(9))


# --- bidding ---------------------------------------------------------------------------


def cfp(**kw: object) -> Cfp:
    base: dict[str, object] = {
        "task_id": "t",
        "round": 1,
        "capability": "c",
        "reply_by": 1.0,
        "deadline": 100.0,
    }
    base.update(kw)
    return Cfp.model_validate(base)


def test_default_bid_prices_from_cost_load_and_queue() -> None:
    offer = Offer("c", max_concurrency=4, cost=2.0, eta=1.0)
    idle = default_bid(BidSituation(cfp(), offer, 0, 0, 0.0))
    busy = default_bid(BidSituation(cfp(), offer, 2, 1, 0.0))
    assert isinstance(idle, Quote) and isinstance(busy, Quote)
    assert idle.price == pytest.approx(2.0)
    assert busy.price == pytest.approx(2.0 * 1.5 + 0.2)
    assert busy.eta > idle.eta


def test_default_bid_refuses_when_full_over_budget_or_too_late() -> None:
    offer = Offer("c", max_concurrency=2, cost=2.0, eta=1.0)
    full = default_bid(BidSituation(cfp(), offer, 2, 0, 0.0))
    assert full == Refusal("full", retry_after=1.0)
    assert default_bid(BidSituation(cfp(budget=1.0), offer, 0, 0, 0.0)) == Refusal("budget")
    assert default_bid(BidSituation(cfp(deadline=0.5), offer, 0, 0, 0.0)) == Refusal("deadline")


# --- payloads and specs ----------------------------------------------------------------


def test_payloads_are_frozen_and_reject_unknown_fields() -> None:
    for model in CONTRACT_NET_PAYLOADS.values():
        assert model.model_config.get("frozen") is True
        assert model.model_config.get("extra") == "forbid"
    with pytest.raises(ValidationError):
        Cfp.model_validate({**cfp().model_dump(), "surprise": 1})
    with pytest.raises(ValidationError):
        Propose(task_id="t", round=1, price=-1, eta=0, load=0, running=0, capacity=1, valid_until=0)
    with pytest.raises(ValidationError):
        cfp(semantics="exactly-once")


def test_task_spec_validates() -> None:
    with pytest.raises(LocalProtocolError):
        TaskSpec("")
    with pytest.raises(LocalProtocolError):
        TaskSpec("c", max_auctions=0)
    with pytest.raises(LocalProtocolError):
        Offer("c", max_concurrency=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": -1.0},
        {"lease": math.nan},
        {"reply_timeout": 0.0},
        {"bid_grace": math.nan},
        {"budget": math.nan},
        {"deadline": math.inf},
        {"task_id": "t" * 65},
        {"task_id": ""},
        {"risk": "r" * 65},
        {"version_spec": "1" * 65},
    ],
)
def test_task_spec_refuses_what_no_frame_could_carry(bad: dict[str, float]) -> None:
    """NaN and infinity used to pass (NaN compares false with everything) and then
    raised from deep inside the core when the cfp was built."""
    (name,) = bad
    with pytest.raises(LocalProtocolError, match=f"TaskSpec.{name}"):
        TaskSpec("c", **bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match=r"TaskSpec\.capability: 1 to 128 characters"):
        TaskSpec("c" * 129)
