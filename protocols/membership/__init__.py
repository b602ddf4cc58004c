"""Membership: SWIM failure detection with Lifeguard, piggybacked dissemination and
push-pull anti-entropy, one concept per module (as hashicorp/memberlist).

* ``config``: ``MembershipConfig`` and the presets ``lan()``, ``wan()``, ``local()``
* ``timing``: the pure timing formulas
* ``state``: the member table and its transition rules
* ``suspicion``, ``awareness``: Lifeguard's suspicion timeout and local health
* ``queue``: the transmit-limited broadcast queue
* ``probe``: round-robin probe order over a shuffled list
* ``pushpull``: digest comparison for anti-entropy
* ``messages``: payload models, ``MEMBERSHIP_PAYLOADS``
"""

from protocols.membership.config import MembershipConfig, lan, local, wan
from protocols.membership.messages import MEMBERSHIP_PAYLOADS
from protocols.membership.state import ALIVE, DEAD, LEFT, SUSPECT, Member, MemberTable

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "MEMBERSHIP_PAYLOADS",
    "SUSPECT",
    "Member",
    "MemberTable",
    "MembershipConfig",
    "lan",
    "local",
    "wan",
]
