"""Contract net with leases, fencing epochs and re-award to backups (pure protocol code).

See ``docs/protocol.md (section 15)``. The node-side agent is ``mesh.contracts.ContractAgent``.
"""

from __future__ import annotations

from protocols.contract_net._state import (
    EXECUTOR_TABLE,
    REQUESTER_TABLE,
    ExecEvent,
    ExecState,
    IllegalTransition,
    ReqEvent,
    ReqState,
)
from protocols.contract_net.bidding import (
    DEFAULT_BIDDER_CAP,
    BidFunction,
    BidSituation,
    Candidate,
    CandidateSource,
    Quote,
    Refusal,
    default_bid,
    select_bidders,
)
from protocols.contract_net.messages import CONTRACT_NET_PAYLOADS, Semantics
from protocols.contract_net.strategies import STRATEGIES, Bid, Strategy, make_weighted, rank
from protocols.contract_net.task import Offer, TaskSpec

__all__ = [
    "CONTRACT_NET_PAYLOADS",
    "DEFAULT_BIDDER_CAP",
    "EXECUTOR_TABLE",
    "REQUESTER_TABLE",
    "STRATEGIES",
    "Bid",
    "BidFunction",
    "BidSituation",
    "Candidate",
    "CandidateSource",
    "ExecEvent",
    "ExecState",
    "IllegalTransition",
    "Offer",
    "Quote",
    "Refusal",
    "ReqEvent",
    "ReqState",
    "Semantics",
    "Strategy",
    "TaskSpec",
    "default_bid",
    "make_weighted",
    "rank",
    "select_bidders",
]
