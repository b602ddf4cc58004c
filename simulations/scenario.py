"""Scenarios: TOML files loaded into pydantic models (FoundationDB-style test specs).

Durations are written ``"60s"``, ``"200ms"``, ``"2m"`` or as plain seconds.
Every table and key is checked (``extra = "forbid"``); a mistake becomes a
``ConfigError`` that names the file, the key path and what was expected.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from protocols.errors import ConfigError
from protocols.membership import timing
from protocols.membership.config import MembershipConfig, tuned
from protocols.units import parse_duration
from simulations.network import Latency, LinkClass

__all__ = [
    "SCENARIO_DIR",
    "UNTRUSTED_ORG",
    "Scenario",
    "apply_overrides",
    "check_scenario",
    "load_scenario",
    "parse_duration",
    "parse_partition",
]

SCENARIO_DIR = Path(__file__).parent / "scenarios"
#: the org of the ``untrusted`` adversaries, which nobody trusts: no scenario org may
#: take its name (its nodes would share the adversaries' org and admit them)
UNTRUSTED_ORG = "mallory"
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
#: a duration above zero (a task's timeout)
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
#: the most events of one kind per virtual second (task arrivals, an adversary's bad
#: frames): far above any useful rate, and below the rates at which the interval
#: between two events (``expovariate``) vanishes next to the virtual time itself
MAX_RATE = 10_000.0


def _duration_or_auto(value: Any) -> float | str:
    """``"auto"``, or a duration of at least zero (one error, not one per kind)."""
    if value == "auto":
        return "auto"
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:  # also false for NaN
        raise ValueError(
            f"a duration such as '30s' (at least 0), or 'auto', was expected, not {value!r}"
        )
    return seconds


DurationOrAuto = Annotated[float | Literal["auto"], BeforeValidator(_duration_or_auto)]


class _Model(BaseModel):
    # Every number finite: an infinite rate or duration hangs a run at one virtual time.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LatencyModel(_Model):
    """``dist`` and its parameters: constant(value), uniform(low, high),
    normal(mean, sd), lognormal(median, sigma), exponential(mean, minimum)."""

    dist: Literal["constant", "uniform", "normal", "lognormal", "exponential"] = "lognormal"
    value: Duration = 0.001
    low: Duration = 0.0005
    high: Duration = 0.002
    mean: Duration = 0.001
    sd: Duration = 0.0002
    median: Duration = 0.0005
    sigma: float = Field(default=0.3, ge=0)
    minimum: Duration = 0.00005

    def problem(self) -> str | None:
        """Why these parameters cannot be sampled (None: they can)."""
        if self.dist == "uniform" and self.high < self.low:
            return f"uniform: high ({self.high:g}s) is below low ({self.low:g}s)"
        if self.dist == "exponential" and self.mean <= 0:
            return "exponential: mean must be above 0"
        return None

    def build(self) -> Latency:
        d = self.dist
        if d == "constant":
            return Latency("constant", self.value, 0.0, self.minimum)
        if d == "uniform":
            if self.high < self.low:
                raise ValueError("uniform latency: high < low")
            return Latency("uniform", self.low, self.high, self.minimum)
        if d == "normal":
            return Latency("normal", self.mean, self.sd, self.minimum)
        if d == "exponential":
            return Latency("exponential", self.mean, 0.0, self.minimum)
        return Latency("lognormal", self.median, self.sigma, self.minimum)


class LinkModel(_Model):
    latency: LatencyModel = LatencyModel()
    loss: Probability = 0.0
    duplicate: Probability = 0.0
    reorder: Probability = 0.0
    reorder_delay: Duration = 0.05
    link_spread: float = Field(default=0.2, ge=0, lt=1)

    def build(self) -> LinkClass:
        return LinkClass(
            self.latency.build(),
            self.loss,
            self.duplicate,
            self.reorder,
            self.reorder_delay,
            self.link_spread,
        )


class NetworkModel(_Model):
    lan: LinkModel = LinkModel()
    wan: LinkModel = LinkModel(latency=LatencyModel(dist="uniform", low=0.02, high=0.08))


class TopologyModel(_Model):
    segments: int = Field(default=1, ge=1)
    mdns_peers: int = Field(default=8, ge=0)
    seeds_per_segment: int = Field(default=3, ge=1)
    join_window: Duration = 2.0
    # "join": nodes start over join_window and join through mDNS peers and seeds.
    # "formed": every node starts at 0 already knowing every other (one shared table,
    # protocols.membership.formed): the start for meshes too large for a cold join.
    start: Literal["join", "formed"] = "join"
    # With start = "formed": this many nodes stay out of the formed mesh and join it
    # over join_window (mDNS peers and seeds), as in a "join" start.
    joiners: int = Field(default=0, ge=0)


class MembershipModel(BaseModel):
    """``preset`` and any knob of ``MembershipConfig``: the same ``[membership]`` table as a
    daemon's ``node.toml`` (``protocols.membership.config.tuned`` reads both; checked
    when the scenario loads)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    preset: Literal["lan", "wan", "local"] = "lan"

    def resolve(self) -> MembershipConfig:
        return tuned({"preset": self.preset, **(self.model_extra or {})})


#: a capability's name, as a task names it (``TaskSpec.capability``: 1 to 128 characters)
Capability = Annotated[str, Field(min_length=1, max_length=128)]
#: a weight of a mix: relative, at least 0 (at least one of the mix above 0)
Weight = Annotated[float, Field(ge=0)]


class OrgModel(_Model):
    name: str = Field(min_length=1)
    share: float = Field(default=1.0, gt=0)
    trusts: list[str] = []
    #: fraction of this org's nodes that offer each capability
    capabilities: dict[Capability, Probability] = {"summarize": 0.5, "translate": 0.5}

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == UNTRUSTED_ORG:
            raise ValueError(
                f"{UNTRUSTED_ORG!r} is reserved for the untrusted adversaries' org "
                "(adversaries.untrusted); choose another name"
            )
        return name


class WorkloadModel(_Model):
    tasks_per_s: float = Field(default=5.0, ge=0, le=MAX_RATE)
    start: Duration = 5.0
    capabilities: dict[Capability, Weight] = {"summarize": 1.0, "translate": 1.0}
    duration: LatencyModel = LatencyModel(dist="uniform", low=0.1, high=1.0)
    semantics: dict[Literal["at-least-once", "at-most-once"], Weight] = {
        "at-least-once": 0.8,
        "at-most-once": 0.2,
    }
    failure_probability: Probability = 0.02
    timeout: PositiveDuration = 10.0
    #: award strategy of every task (``protocols.contract_net.strategies.STRATEGIES``)
    strategy: Literal["least_loaded", "first_idle", "lowest_cost", "earliest_eta", "weighted"] = (
        "least_loaded"
    )


class PartitionModel(_Model):
    kind: Literal["symmetric", "oneway", "bridge"] = "symmetric"
    at: Duration
    heal: Duration
    fractions: list[Probability] = Field(default=[0.5], min_length=1)


class ClogModel(_Model):
    at: Duration
    until: Duration
    nodes: int = Field(default=1, ge=1)


class FaultsModel(_Model):
    crash_fraction: Probability = 0.0
    crash_window: tuple[Duration, Duration] | None = None
    restart_fraction: Probability = 0.5
    durable_fraction: Probability = 0.5
    #: Of the restarts, the fraction that come back at a new address (a container
    #: rescheduled elsewhere, a new port): frames to the old endpoint reach nobody.
    moved_fraction: Probability = 0.0
    restart_after: Duration = 5.0
    partitions: list[PartitionModel] = []
    clogs: list[ClogModel] = []
    skew: Duration = 0.0
    clock_jumps: int = Field(default=0, ge=0)
    jump_size: Duration = 1.0


class AdversaryModel(_Model):
    forge: int = Field(default=0, ge=0)
    replay: int = Field(default=0, ge=0)
    malformed: int = Field(default=0, ge=0)
    oversized: int = Field(default=0, ge=0)
    abandon: int = Field(default=0, ge=0)
    untrusted: int = Field(default=0, ge=0)
    #: when above 0: this fraction of the nodes misbehave, spread evenly over the
    #: kinds given a count above (over all six kinds when none is), whatever ``nodes``;
    #: at least one node of each of those kinds
    fraction: Probability = 0.0
    rate: float = Field(default=2.0, gt=0, le=MAX_RATE)


class ConvergenceModel(_Model):
    #: when the marker node publishes a new record (default: once the mesh has
    #: formed, i.e. 99% of running nodes count 99% of the others they share trust
    #: with as members)
    marker_at: Duration | None = None
    #: latest automatic publication time, as a fraction of the safety phase
    marker_deadline: Probability = 0.6


class RunModel(_Model):
    name: str = "default"
    seed: int = 1
    nodes: int = Field(default=100, ge=2)
    duration: Duration = 30.0
    #: seconds, or "auto": as long as membership can take to settle after the last
    #: heal at this size (``protocols.membership.timing.settle_time``)
    liveness: DurationOrAuto = 20.0
    crypto: Literal["real", "fast", "auto"] = "auto"
    node: Literal["core", "toy", "auto"] = "auto"


class Scenario(_Model):
    run: RunModel = RunModel()
    network: NetworkModel = NetworkModel()
    topology: TopologyModel = TopologyModel()
    membership: MembershipModel = MembershipModel()
    orgs: list[OrgModel] = Field(default=[OrgModel(name="acme")], min_length=1)
    workload: WorkloadModel = WorkloadModel()
    faults: FaultsModel = FaultsModel()
    adversaries: AdversaryModel = AdversaryModel()
    convergence: ConvergenceModel = ConvergenceModel()

    def liveness_s(self) -> float:
        """The liveness phase in seconds ("auto" resolved for this size and config)."""
        if self.run.liveness != "auto":
            return self.run.liveness
        return self.settle_s()

    def settle_s(self) -> float:
        """How long membership can take to settle after the last heal at this size."""
        cfg = self.membership.resolve()
        return math.ceil(
            timing.settle_time(
                cfg.push_pull_interval,
                cfg.suspicion_mult,
                cfg.suspicion_max_timeout_mult,
                cfg.probe_interval,
                self.run.nodes,
            )
        )

    def marker_time(self) -> float | None:
        """When the marker publishes; None: as soon as the mesh has formed."""
        return self.convergence.marker_at

    def marker_deadline_s(self) -> float:
        return self.convergence.marker_deadline * self.run.duration

    def crypto(self) -> str:
        if self.run.crypto != "auto":
            return self.run.crypto
        return "real" if self.run.nodes < 1000 else "fast"


def _where(loc: tuple[int | str, ...]) -> str:
    """A key path as written in the file (``faults.partitions.0.at``), without the names
    pydantic gives the branches of a union (``function-after[...]``)."""
    parts = [
        str(p) if p != "" else '""'
        for p in loc
        if not (isinstance(p, str) and ("[" in p or "(" in p))
    ]
    return ".".join(parts) or "(top level)"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _explain(err: ValidationError, source: str) -> ConfigError:
    """One line: each key at fault and what was expected of it."""
    found: dict[str, str] = {}
    for e in err.errors():
        found.setdefault(_where(e["loc"]), _message(e))
    return ConfigError(f"{source}: " + "; ".join(f"{k}: {m}" for k, m in found.items()))


def _is_bare_name(path: str | Path) -> bool:
    """A file name without any directory part (``three-orgs.toml``)."""
    text = str(path)
    return not any(sep and sep in text for sep in (os.sep, os.altsep, "/"))


def load_scenario(path: str | Path) -> Scenario:
    """Read one scenario file and check every key and value in it; raise ``ConfigError``
    on any mistake. A bare file name not found is looked up in ``SCENARIO_DIR``.

    The checks that tie keys together (``check_scenario``) run once the command line's
    flags are applied (``apply_overrides``), and when the scenario runs: a flag may
    make a file valid that is not valid on its own."""
    p = Path(path)
    if _is_bare_name(path) and not p.exists() and (SCENARIO_DIR / p.name).exists():
        p = SCENARIO_DIR / p.name
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such scenario file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the scenario file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return _validate_fields(data, str(p))


def _validate_fields(data: dict[str, Any], source: str) -> Scenario:
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None
    _check_tables(sc, source)
    return sc


def validate_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """A scenario from a dict (a parsed TOML file), every check included."""
    sc = _validate_fields(data, source)
    check_scenario(sc, source)
    return sc


def _resolve_membership(sc: Scenario, source: str) -> None:
    written = sc.membership.model_extra or {}
    try:
        cfg = sc.membership.resolve()
    except ConfigError as exc:
        msg = str(exc)
        if "fanout" in written:  # the key the user wrote, not the field it stands for
            msg = msg.replace("membership.gossip_nodes", "membership.fanout")
        raise ConfigError(f"{source}: {msg}") from None
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            key = "fanout" if f.name == "gossip_nodes" and "fanout" in written else f.name
            raise ConfigError(f"{source}: membership.{key}: a finite number was expected")


def _check_tables(sc: Scenario, source: str) -> None:
    """The checks of one table's keys together (at load, before any override)."""
    _resolve_membership(sc, source)
    latencies = {
        "network.lan.latency": sc.network.lan.latency,
        "network.wan.latency": sc.network.wan.latency,
        "workload.duration": sc.workload.duration,
    }
    for key, model in latencies.items():
        problem = model.problem()
        if problem is not None:
            raise ConfigError(f"{source}: {key}: {problem}")
    mixes: dict[str, dict[str, float]] = {
        "workload.capabilities": dict(sc.workload.capabilities),
        "workload.semantics": {str(k): w for k, w in sc.workload.semantics.items()},
    }
    for key, weights in mixes.items():
        if not any(w > 0 for w in weights.values()):
            raise ConfigError(
                f"{source}: {key}: at least one weight above 0 was expected, not {weights!r}"
            )
    window = sc.faults.crash_window
    if window is not None and window[1] < window[0]:
        raise ConfigError(
            f"{source}: faults.crash_window: the end ({window[1]:g}s) is before the start "
            f"({window[0]:g}s)"
        )


def check_scenario(sc: Scenario, source: str = "scenario") -> None:
    """Every check of the scenario, those that tie keys together included (``ConfigError``)."""
    _check_tables(sc, source)
    names = [o.name for o in sc.orgs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: orgs: duplicate org names {names}")
    for o in sc.orgs:
        for t in o.trusts:
            if t not in names:
                raise ConfigError(f"{source}: orgs.{o.name}.trusts: unknown org {t!r}")
    topo, nodes = sc.topology, sc.run.nodes
    if topo.joiners and topo.start != "formed":
        raise ConfigError(
            f"{source}: topology.joiners needs start = 'formed' (else every node joins)"
        )
    joinable = nodes - min(nodes, topo.segments * topo.seeds_per_segment)
    if topo.joiners > joinable:
        raise ConfigError(
            f"{source}: topology.joiners: {topo.joiners} for {nodes} nodes; at most {joinable} "
            "(the nodes that are not seeds: segments x seeds_per_segment)"
        )
    if topo.start == "formed":
        if sc.run.node == "toy":
            raise ConfigError(
                f"{source}: topology.start = 'formed' needs the core node, not --node toy"
            )
        for o in sc.orgs:
            strangers = sorted(set(names) - {o.name, *o.trusts})
            if strangers:
                raise ConfigError(
                    f"{source}: topology.start = 'formed' needs every org to trust every "
                    f"other; {o.name!r} does not trust {', '.join(strangers)}"
                )
    for p in sc.faults.partitions:
        if p.heal < p.at:
            raise ConfigError(f"{source}: faults.partitions: heal ({p.heal}s) before at ({p.at}s)")
        if sum(p.fractions) > 1.0:
            raise ConfigError(f"{source}: faults.partitions: fractions sum above 1")
        if p.kind == "bridge" and len(p.fractions) != 2:
            raise ConfigError(f"{source}: faults.partitions: a bridge needs two fractions")
    marker = sc.convergence.marker_at
    end = sc.run.duration + sc.liveness_s()
    if marker is not None and marker >= end:
        raise ConfigError(
            f"{source}: convergence.marker_at ({marker:g}s) is not before the end of the run "
            f"({end:g}s: run.duration + run.liveness)"
        )


_PART = re.compile(r"^(symmetric|oneway|bridge):([^@]*)@([^-]+)-(.+)$")
#: the parts of a --partition spec, by the field each one sets
_PART_NAMES = {"kind": "KIND", "fractions": "FRACTIONS", "at": "START", "heal": "END"}


def parse_partition(spec: str) -> PartitionModel:
    """``KIND:F[,F]@START-END``, e.g. ``symmetric:0.5@10s-20s``, ``bridge:0.4,0.4@5s-15s``."""
    m = _PART.match(spec.strip())
    if not m:
        raise ConfigError(
            f"--partition {spec!r}: expected KIND:FRACTIONS@START-END, "
            "e.g. symmetric:0.5@10s-20s (KIND: symmetric, oneway, bridge)"
        )
    fractions: list[float] = []
    for text in m.group(2).split(","):
        try:
            fractions.append(float(text))
        except ValueError:
            raise ConfigError(
                f"--partition {spec!r}: FRACTIONS: {text.strip()!r} is not a number "
                "(fractions between 0 and 1, e.g. 0.5 or 0.4,0.4)"
            ) from None
    data = {"kind": m.group(1), "fractions": fractions, "at": m.group(3), "heal": m.group(4)}
    try:
        part = PartitionModel.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = _PART_NAMES.get(str(e["loc"][0]) if e["loc"] else "", "spec")
        msg = _message(e)
        if name == "FRACTIONS":
            msg = "fractions between 0 and 1 were expected, e.g. 0.5 or 0.4,0.4"
        raise ConfigError(f"--partition {spec!r}: {name}: {msg}") from None
    if part.heal < part.at:
        raise ConfigError(f"--partition {spec!r}: END ({part.heal:g}s) is before START")
    return part


def apply_overrides(sc: Scenario, *, source: str | None = None, **flags: Any) -> Scenario:
    """Command-line flags override the scenario (``None`` means not given), then every
    check runs on the result (``check_scenario``). ``source``: the scenario file, for
    the messages."""
    data = sc.model_dump()
    run, wl, faults = data["run"], data["workload"], data["faults"]
    for key in ("nodes", "seed", "duration", "crypto", "node", "liveness"):
        if flags.get(key) is not None:
            run[key] = flags[key]
    if flags.get("tasks_per_s") is not None:
        wl["tasks_per_s"] = flags["tasks_per_s"]
    if flags.get("strategy") is not None:
        wl["strategy"] = flags["strategy"]
    if flags.get("membership") is not None:
        data["membership"] = dict(flags["membership"])  # a whole [membership] table
    if flags.get("start") is not None:
        data["topology"]["start"] = flags["start"]
    if flags.get("loss") is not None:
        data["network"]["lan"]["loss"] = flags["loss"]
        data["network"]["wan"]["loss"] = flags["loss"]
    if flags.get("crash") is not None:
        faults["crash_fraction"] = flags["crash"]
    if flags.get("partition"):
        faults["partitions"] = [parse_partition(s).model_dump() for s in flags["partition"]]
    given = any(v is not None and v != () and v != [] for v in flags.values())
    if source is None:
        where = "command line"
    else:
        where = f"{source} with the flags given" if given else source
    return validate_scenario(data, where)
