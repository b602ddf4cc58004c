"""One `[membership]` table for the simulator and the daemon: tune a mesh in a scenario,
copy the table into node.toml, and the daemons run with the same settings."""

from __future__ import annotations

import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from node.api import LocalOrg
from node.config import load_config
from node.core_adapter import build_core
from protocols.errors import ConfigError
from protocols.membership.config import MembershipConfig, lan, local, tuned, wan
from protocols.trust import TrustStore
from simulations.scenario import load_scenario

TABLE = """
[membership]
preset = "wan"
fanout = 5
probe_interval = "2s"
probe_timeout = "1500ms"
push_pull_interval = 45
suspicion_mult = 5
join_catch_up = "3s"
"""

NODE = """
[node]
name = "alpha"
identity = "alpha.key"
certificate = "alpha.cert"
trust = "trust.toml"
"""


def test_a_table_is_its_preset_with_the_knobs_changed() -> None:
    cfg = tuned(tomllib.loads(TABLE)["membership"])
    assert cfg == wan().with_(
        gossip_nodes=5,
        probe_interval=2.0,
        probe_timeout=1.5,
        push_pull_interval=45.0,
        suspicion_mult=5,
        join_catch_up=3.0,
    )
    assert tuned({}) == lan()
    assert tuned({"preset": "local"}) == local()


def test_the_same_table_gives_the_same_settings_in_a_scenario_and_in_node_toml(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "tuned.toml"
    scenario.write_text("[run]\nnodes = 10\n" + TABLE)
    node = tmp_path / "node.toml"
    node.write_text(NODE + TABLE)
    simulated = load_scenario(str(scenario)).membership.resolve()
    deployed = load_config(node).membership
    assert simulated == deployed == tuned(tomllib.loads(TABLE)["membership"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"preset": "moon"}, "membership.preset: 'moon' is not one of lan, wan, local"),
        ({"probe_intervall": "1s"}, "membership.probe_intervall: unknown key"),
        ({"probe_interval": "soon"}, "membership.probe_interval: a duration such as"),
        ({"fanout": 2.5}, "membership.fanout: a whole number was expected"),
        ({"fanout": True}, "membership.fanout: a whole number was expected"),
        ({"fanout": 3, "gossip_nodes": 3}, "membership.gossip_nodes: the same knob as 'fanout'"),
        ({"probe_timeout": "5s"}, "membership.probe_timeout must not exceed probe_interval"),
        ({"gossip_interval": 0}, "membership.gossip_interval must be > 0"),
        ({"push_pull_interval": float("nan")}, "membership.push_pull_interval: a finite"),
        ({"probe_interval": float("inf")}, "membership.probe_interval: a finite"),
    ],
)
def test_a_bad_table_is_refused_naming_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        tuned(table)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_node_toml_errors_are_one_line_config_errors(tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text(NODE + '[membership]\nsuspicion_mult = "lots"\n')
    with pytest.raises(ConfigError, match=r"membership\.suspicion_mult: a whole number"):
        load_config(node)
    node.write_text(NODE + 'preset = "local"\n[membership]\npreset = "wan"\n')
    with pytest.raises(ConfigError, match="give the preset once"):
        load_config(node)


def test_the_preset_may_stay_in_the_node_table(tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text(NODE + 'preset = "local"\n[membership]\nmax_piggyback = 5\n')
    cfg = load_config(node)
    assert cfg.preset == "local"
    assert cfg.membership == local().with_(max_piggyback=5)
    node.write_text(NODE)
    assert load_config(node).membership == lan()


def test_an_embedded_node_runs_with_the_membership_it_is_given() -> None:
    import random

    org = LocalOrg("acme")
    ident, cert = org.issue("alpha")
    trust = TrustStore([org.policy()])
    settings: MembershipConfig = tuned({"preset": "local", "probe_interval": "3s"})
    make = build_core(ident, cert, trust, [], rng=random.Random(1), membership=settings)
    core = make("tcp://127.0.0.1:7001")
    assert core.config.membership == settings
    plain = build_core(ident, cert, trust, [], rng=random.Random(1), preset="wan")
    assert plain("tcp://127.0.0.1:7001").config.membership == wan()


def test_a_daemons_settings_can_be_simulated_as_they_are(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from node.cli_sim import simulate

    node = tmp_path / "node.toml"
    node.write_text(NODE + 'preset = "local"\n[membership]\nprobe_interval = "2s"\nfanout = 5\n')
    out = tmp_path / "run.json"
    args = ["--nodes", "12", "--duration", "4s", "--liveness", "4s", "--tasks-per-s", "1"]
    res = CliRunner().invoke(
        simulate, [*args, "--membership-from", str(node), "--json", str(out), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    # The run used the daemon's settings, and its reproducing command names the file.
    report = json.loads(out.read_text())
    assert report["membership"] == asdict(load_config(node).membership)
    assert (
        report["membership"]["probe_interval"] == 2.0 and report["membership"]["gossip_nodes"] == 5
    )
    assert f"--membership-from {node}" in report["reproduce"]
    node.write_text(NODE + '[membership]\nprobe_interval = "fast"\n')
    bad = CliRunner().invoke(simulate, [*args, "--membership-from", str(node)])
    assert bad.exit_code == 2
    assert f"{node}: membership.probe_interval: a duration" in bad.output
