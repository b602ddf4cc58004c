"""Membership configuration: every knob with its unit and default, and three presets.

The knobs and their defaults follow hashicorp/memberlist's ``config.go``
(``DefaultLANConfig``, ``DefaultWANConfig``, ``DefaultLocalConfig``). Times are
seconds (float), counts are plain integers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from protocols.errors import ConfigError
from protocols.units import parse_duration

__all__ = [
    "JOIN_CATCH_UPS",
    "JOIN_CATCH_UPS_MAX",
    "PRESETS",
    "MembershipConfig",
    "knobs",
    "lan",
    "local",
    "tuned",
    "wan",
]


#: Catch-up push-pulls after a join (see ``MembershipConfig.join_catch_up``).
JOIN_CATCH_UPS = 3
#: Default for ``MembershipConfig.join_catch_ups_max``: more while a mass join spreads.
JOIN_CATCH_UPS_MAX = 8


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """SWIM + Lifeguard + dissemination settings of one node.

    Attributes (unit, LAN default):

    * ``probe_interval`` (s, 1.0): time between two failure-detection probes; one
      random member (round-robin over a shuffled list) is probed per interval.
      Lifeguard stretches it by ``awareness + 1`` when this node is itself slow.
    * ``probe_timeout`` (s, 0.5): wait for a direct ack before asking
      ``indirect_checks`` peers to probe on our behalf; also stretched by awareness.
    * ``indirect_checks`` (count, 3): peers asked to ping a target that missed
      its direct ack (SWIM's *k*).
    * ``retransmit_mult`` (count, 4): λ; each queued update is piggybacked at most
      ``retransmit_mult * ceil(log10(N + 1))`` times.
    * ``suspicion_mult`` (count, 4): scales the minimum suspicion timeout
      ``suspicion_mult * max(1, log10(N)) * probe_interval``; also sets the number
      of independent confirmations that shrink it (``suspicion_mult - 2``).
    * ``suspicion_max_timeout_mult`` (count, 6): the suspicion timeout starts at
      ``suspicion_max_timeout_mult`` times the minimum (Lifeguard).
    * ``awareness_max_multiplier`` (count, 8): local-health score ceiling; probe
      timeouts are multiplied by at most this many.
    * ``gossip_interval`` (s, 0.2): time between two gossip pushes of fresh updates.
    * ``gossip_nodes`` (count, 3): fanout; peers each gossip push goes to.
    * ``max_piggyback`` (count, 8): updates piggybacked on one message at most.
    * ``push_pull_interval`` (s, 30.0): anti-entropy period with one random peer,
      scaled up for clusters above 32 members (``push_pull_scale``). 0 disables.
    * ``join_catch_up`` (s, 2.0): after joining, push-pull with a random live
      member this long after the join, then after twice and four times as long
      (``JOIN_CATCH_UPS`` catch-ups): nodes that join together learn the members
      their seeds did not know yet, instead of waiting for the scaled period
      (minutes at 1,000 members). 0 disables.
    * ``join_catch_ups_max`` (count, 8): catch-ups at most. After the third, a
      node that still learned members it did not know since its previous catch-up
      (a mass join still spreading) catches up once more, at twice the delay, up
      to this many in all; a node that learned nothing new stops. For mass joins
      whose gossip runs out of retransmits before every record is everywhere (few
      retransmits, small piggyback, thousands joining at once): the scaled
      push-pull period that would repair it is minutes away. 3 keeps exactly
      three, the default until November 2026.
    * ``dead_reclaim_time`` (s, 300.0): after a member has been dead or gone for
      this long, any valid record for its id is accepted again (a node that lost
      its incarnation counter on restart reclaims its id). 0 disables reclaiming.
    * ``record_ttl`` (s, 3600.0): validity of our signed capability record; it is
      re-signed (seq + 1) after half of it.
    * ``seen_cache_size`` (count, 4096): minimum number of record digests kept for
      deduplication before verification (grows to 4x the member count).
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    max_piggyback: int = 8
    push_pull_interval: float = 30.0
    join_catch_up: float = 2.0
    join_catch_ups_max: int = JOIN_CATCH_UPS_MAX
    dead_reclaim_time: float = 300.0
    record_ttl: float = 3600.0
    seen_cache_size: int = 4096

    def __post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "gossip_interval", "record_ttl")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"membership.{name} must be > 0")
        if self.probe_timeout > self.probe_interval:
            raise ConfigError("membership.probe_timeout must not exceed probe_interval")
        counts = (
            "indirect_checks",
            "retransmit_mult",
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "awareness_max_multiplier",
            "gossip_nodes",
            "max_piggyback",
            "seen_cache_size",
        )
        for name in counts:
            if getattr(self, name) < (0 if name in ("indirect_checks", "gossip_nodes") else 1):
                raise ConfigError(f"membership.{name} is out of range")
        if not JOIN_CATCH_UPS <= self.join_catch_ups_max <= 32:
            raise ConfigError(f"membership.join_catch_ups_max must be {JOIN_CATCH_UPS} to 32")
        if self.push_pull_interval < 0 or self.dead_reclaim_time < 0 or self.join_catch_up < 0:
            raise ConfigError("membership intervals must be >= 0")

    def with_(self, **changes: float) -> MembershipConfig:
        """A copy with some knobs changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def lan() -> MembershipConfig:
    """Defaults for one data centre or office network (memberlist DefaultLANConfig)."""
    return MembershipConfig()


def wan() -> MembershipConfig:
    """Slower, lossier links between sites (memberlist DefaultWANConfig)."""
    return MembershipConfig(
        probe_interval=5.0,
        probe_timeout=3.0,
        suspicion_mult=6,
        push_pull_interval=60.0,
        join_catch_up=10.0,
        gossip_nodes=4,
        gossip_interval=0.5,
        dead_reclaim_time=900.0,
    )


def local() -> MembershipConfig:
    """One machine or loopback (memberlist DefaultLocalConfig): fast, few retransmits."""
    return MembershipConfig(
        probe_interval=1.0,
        probe_timeout=0.2,
        indirect_checks=1,
        retransmit_mult=2,
        suspicion_mult=3,
        push_pull_interval=15.0,
        join_catch_up=1.0,
        gossip_interval=0.1,
        dead_reclaim_time=60.0,
    )


PRESETS: dict[str, Callable[[], MembershipConfig]] = {"lan": lan, "wan": wan, "local": local}

#: A ``[membership]`` key that is not a field's own name.
_ALIASES = {"fanout": "gossip_nodes"}


def knobs() -> dict[str, type]:
    """Every key a ``[membership]`` table may set (besides ``preset``), with its type:
    ``float`` (seconds; a number or a string such as ``"200ms"``) or ``int`` (a count)."""
    out: dict[str, type] = {}
    for f in fields(MembershipConfig):
        out[f.name] = float if f.type in ("float", float) else int
    out["fanout"] = int
    return out


def tuned(table: Mapping[str, Any], where: str = "membership") -> MembershipConfig:
    """A preset with some knobs changed, from a ``[membership]`` table.

    The same table means the same thing in a scenario file and in a daemon's
    ``node.toml``: tune a mesh in the simulator, then copy the table. ``preset``
    (lan, wan, local; default lan) is the base; every other key is a knob of
    ``MembershipConfig`` (``fanout`` stands for ``gossip_nodes``). Unknown keys, wrong
    types and values out of range raise ``ConfigError`` naming the key.
    """
    allowed = knobs()
    preset = table.get("preset", "lan")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"{where}.preset: {preset!r} is not one of lan, wan, local")
    changes: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in table.items():
        if key == "preset" or value is None:
            continue
        kind = allowed.get(key)
        if kind is None:
            raise ConfigError(f"{where}.{key}: unknown key (known: preset, {', '.join(allowed)})")
        name = _ALIASES.get(key, key)
        if name in given_as:
            raise ConfigError(f"{where}.{key}: the same knob as {given_as[name]!r}; give one")
        given_as[name] = key
        if kind is float:
            try:
                changes[name] = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            changes[name] = value
        else:
            raise ConfigError(f"{where}.{key}: a whole number was expected, not {value!r}")
    try:
        return PRESETS[preset]().with_(**changes)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("membership", where, 1)) from None
