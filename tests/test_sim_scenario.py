"""Scenario files: loading, validation messages, overrides, partition specs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from protocols.errors import ConfigError
from simulations.scenario import (
    SCENARIO_DIR,
    Scenario,
    apply_overrides,
    load_scenario,
    parse_duration,
    parse_partition,
    validate_scenario,
)


@pytest.mark.parametrize("name", ["lan-1000", "three-orgs", "chaos-1000", "scale-10000"])
def test_shipped_scenarios_load(name: str) -> None:
    sc = load_scenario(SCENARIO_DIR / f"{name}.toml")
    assert sc.run.name == name


def test_scenarios_are_found_by_bare_name() -> None:
    assert load_scenario("lan-1000.toml").run.nodes == 1000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("200ms", 0.2), ("2m", 120.0), ("1.5", 1.5), (3, 3.0), ("250us", 0.00025)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


def test_defaults_are_a_sensible_small_world() -> None:
    sc = Scenario()
    assert sc.run.nodes == 100 and sc.crypto() == "real"
    assert apply_overrides(sc, nodes=1000).crypto() == "fast"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"faults\.crash_fractoin"):
        load_scenario(write(tmp_path, "[faults]\ncrash_fractoin = 0.1\n"))


def test_bad_value_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"faults\.crash_fraction.*less than or equal to 1"):
        load_scenario(write(tmp_path, "[faults]\ncrash_fraction = 2\n"))
    with pytest.raises(ConfigError, match=r"run\.duration.*duration"):
        load_scenario(write(tmp_path, '[run]\nduration = "forever"\n'))


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(write(tmp_path, "[run\n"))
    with pytest.raises(ConfigError, match="no such scenario"):
        load_scenario(tmp_path / "nope.toml")


def test_consistency_checks() -> None:
    with pytest.raises(ConfigError, match="unknown org 'zed'"):
        validate_scenario({"orgs": [{"name": "a", "trusts": ["zed"]}]})
    with pytest.raises(ConfigError, match="heal"):
        validate_scenario({"faults": {"partitions": [{"at": 5, "heal": 1}]}})
    with pytest.raises(ConfigError, match="bridge"):
        validate_scenario({"faults": {"partitions": [{"kind": "bridge", "at": 1, "heal": 2}]}})


def test_partition_spec() -> None:
    p = parse_partition("bridge:0.4,0.4@5s-15s")
    assert (p.kind, p.fractions, p.at, p.heal) == ("bridge", [0.4, 0.4], 5.0, 15.0)
    with pytest.raises(ConfigError, match="KIND:FRACTIONS@START-END"):
        parse_partition("half@10")


def test_overrides_win_over_the_file() -> None:
    sc = load_scenario("chaos-1000.toml")
    o = apply_overrides(
        sc,
        nodes=50,
        seed=9,
        duration=5.0,
        loss=0.1,
        crash=0.0,
        tasks_per_s=1.0,
        partition=["oneway:0.5@1s-2s"],
        crypto="real",
        start="formed",
    )
    assert (o.run.nodes, o.run.seed, o.run.duration, o.crypto()) == (50, 9, 5.0, "real")
    assert o.topology.start == "formed" and sc.topology.start == "join"
    assert o.network.lan.loss == o.network.wan.loss == 0.1
    assert o.faults.crash_fraction == 0.0 and o.workload.tasks_per_s == 1.0
    assert [p.kind for p in o.faults.partitions] == ["oneway"]
    assert o.adversaries == sc.adversaries


@pytest.mark.parametrize(("nodes", "expected"), [(60, 6), (1000, 50)])
def test_adversary_fraction_scales_with_the_mesh(nodes: int, expected: int) -> None:
    """chaos-1000 is 5 % adversarial at any size, with every kind of adversary present."""
    from collections import Counter

    from simulations.world import ROLES, World

    sc = apply_overrides(load_scenario("chaos-1000.toml"), nodes=nodes)
    roles = Counter(World._roles(sc, nodes).values())
    assert sum(roles.values()) == expected
    assert set(roles) == set(ROLES)
    assert max(roles.values()) - min(roles.values()) <= 1


def test_auto_liveness_is_the_membership_settle_time_for_the_size() -> None:
    sc = load_scenario("chaos-1000.toml")
    assert sc.run.liveness == "auto"
    # push-pull 10 s scaled x6 at 1,000 members, twice, plus the longest suspicion
    # (4 x log10(1000) x 1 s = 12 s, x6 = 72 s)
    assert sc.liveness_s() == 2 * 60 + 72
    small = apply_overrides(sc, nodes=60)
    assert small.liveness_s() == math.ceil(2 * 20 + 6 * 4 * math.log10(60))
    fixed = apply_overrides(sc, liveness=30.0)
    assert fixed.liveness_s() == 30.0


def test_more_adversaries_than_half_the_nodes_is_a_config_error(tmp_path: Path) -> None:
    """It used to be a bare ValueError from deep in the run ('internal error')."""
    from simulations.runner import run_scenario

    sc = apply_overrides(load_scenario(write(tmp_path, "[adversaries]\nforge = 1000\n")), nodes=20)
    with pytest.raises(ConfigError, match="adversaries: 1000 for 20 nodes; at most half"):
        run_scenario(sc)


def test_an_org_may_not_take_the_untrusted_adversaries_name(tmp_path: Path) -> None:
    # An org named as the untrusted adversaries' org shared it with them: every node
    # of it admitted the adversaries and untrusted-never-admitted failed.
    text = '[[orgs]]\nname = "acme"\n[[orgs]]\nname = "mallory"\n[adversaries]\nuntrusted = 1\n'
    with pytest.raises(ConfigError, match=r"orgs\.1\.name: 'mallory' is reserved"):
        load_scenario(write(tmp_path, text))
