"""`mesh-node simulate` and scenario files: every mistake is one clear line, at once.

Each test here is a mistake a reviewer made the simulator hang on, run the wrong
file, lose a run over, or answer with a traceback or an "internal error".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.cli import main
from node.cli_sim import simulate
from protocols.errors import ConfigError
from protocols.units import parse_duration
from simulations.scenario import (
    SCENARIO_DIR,
    apply_overrides,
    load_scenario,
    parse_partition,
    validate_scenario,
)

TOY = ["--nodes", "12", "--node", "toy", "--duration", "4s", "--liveness", "4s", "--quiet"]


def one_line_error(data: dict[str, Any], pattern: str) -> str:
    """The ``ConfigError`` of ``data``: it matches ``pattern`` and is one line."""
    with pytest.raises(ConfigError, match=pattern) as info:
        validate_scenario(data, "s.toml")
    text = str(info.value)
    assert "\n" not in text and "validation error" not in text and "function-" not in text
    return text


def refused(args: list[str], *names: str) -> str:
    """The CLI's answer to ``args``: exit 2, one line naming ``names``, no traceback."""
    res = CliRunner().invoke(main, ["simulate", *args])  # as mesh-node prints errors
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    for name in names:
        assert name in res.output, res.output
    return res.output


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation started fails the test: the mistake must be found before."""
    import simulations.runner as runner

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(runner, "run_scenario", never)


# --- 2: non-finite numbers (an infinite rate hung the run at one virtual time) -----


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"workload": {"tasks_per_s": math.inf}}, r"workload\.tasks_per_s: .*finite"),
        ({"adversaries": {"rate": math.inf}}, r"adversaries\.rate: .*finite"),
        ({"adversaries": {"rate": math.nan}}, r"adversaries\.rate: .*finite"),
        ({"orgs": [{"name": "a", "share": math.inf}]}, r"orgs\.0\.share: .*finite"),
        ({"workload": {"capabilities": {"x": math.inf}}}, r"workload\.capabilities\.x"),
        ({"network": {"lan": {"latency": {"sigma": math.nan}}}}, r"latency\.sigma"),
        ({"run": {"duration": "1e400s"}}, r"run\.duration: .*finite"),
        ({"run": {"liveness": math.inf}}, r"run\.liveness"),
        ({"membership": {"push_pull_interval": "1e400s"}}, r"membership\.push_pull_interval"),
        ({"workload": {"tasks_per_s": 1e300}}, r"workload\.tasks_per_s: .*10000"),
        ({"adversaries": {"rate": 1e300}}, r"adversaries\.rate: .*10000"),
    ],
)
def test_non_finite_and_unbounded_numbers_are_refused(data: dict[str, Any], key: str) -> None:
    one_line_error(data, key)


def test_toml_inf_is_refused_when_loading(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text("[adversaries]\nforge = 1\nrate = inf\n")
    with pytest.raises(ConfigError, match=r"adversaries\.rate: .*finite"):
        load_scenario(p)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--tasks-per-s", "inf"], "--tasks-per-s"),
        (["--tasks-per-s", "nan"], "--tasks-per-s"),
        (["--crash", "nan"], "--crash"),
        (["--loss", "nan"], "--loss"),
        (["--duration", "1e400"], "--duration"),
        (["--liveness", "1e400s"], "--liveness"),
    ],
)
def test_non_finite_flags_are_refused(args: list[str], flag: str, no_run: None) -> None:
    refused([*TOY, *args], flag)


# --- 3: a missing file is not replaced by the bundled scenario of the same name -----


def test_a_path_to_a_missing_file_is_an_error_not_the_bundled_scenario(tmp_path: Path) -> None:
    assert (SCENARIO_DIR / "three-orgs.toml").exists()
    with pytest.raises(ConfigError, match="no such scenario file"):
        load_scenario(tmp_path / "nodir" / "three-orgs.toml")
    with pytest.raises(ConfigError, match="no such scenario file"):
        load_scenario("/nonexistent/dir/three-orgs.toml")
    # A bare name still finds the bundled one (the documented shortcut).
    assert load_scenario("three-orgs.toml").run.name == "three-orgs"


# --- 4: output paths and the plot format are checked before the run ----------------


@pytest.mark.parametrize(
    ("args", "flag", "what"),
    [
        (["--json", "/nonexistent/dir/r.json"], "--json", "no such directory"),
        (["--plot", "/nonexistent/dir/r.png"], "--plot", "no such directory"),
        (["--plot", "r.xyz"], "--plot", "format 'xyz' is not supported"),
        (["--json", "/nonexistent/dir/r.json", "--seeds", "1-2"], "--json", "no such"),
    ],
)
def test_outputs_are_checked_before_the_run(
    args: list[str], flag: str, what: str, no_run: None
) -> None:
    refused([*TOY, *args], flag, what)


def test_an_output_that_is_a_directory_is_refused(tmp_path: Path, no_run: None) -> None:
    refused([*TOY, "--json", str(tmp_path)], "--json", "is a directory")


def test_the_supported_plot_formats_come_from_matplotlib(tmp_path: Path) -> None:
    from node.cli_sim import _check_plot

    for ok in ("r.png", "r.pdf", "r.svg", "R.PNG", "noext"):
        _check_plot(str(tmp_path / ok))


# --- 5: values that ended in "internal error" or were taken silently ---------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {"network": {"wan": {"latency": {"dist": "uniform", "low": 2, "high": 1}}}},
            r"network\.wan\.latency: uniform: high \(1s\) is below low \(2s\)",
        ),
        (
            {"workload": {"duration": {"dist": "uniform", "low": "2s", "high": "1s"}}},
            r"workload\.duration: uniform: high",
        ),
        (
            {"network": {"lan": {"latency": {"dist": "exponential", "mean": 0}}}},
            r"network\.lan\.latency: exponential: mean",
        ),
        ({"workload": {"capabilities": {"a": 0, "b": 0}}}, r"workload\.capabilities: at least"),
        ({"workload": {"capabilities": {"a": -1}}}, r"workload\.capabilities\.a"),
        ({"workload": {"capabilities": {}}}, r"workload\.capabilities: at least one weight"),
        ({"workload": {"capabilities": {"": 1}}}, r"workload\.capabilities"),
        ({"workload": {"semantics": {}}}, r"workload\.semantics: at least one weight"),
        ({"workload": {"semantics": {"at-most-once": 0}}}, r"workload\.semantics: at least"),
        ({"workload": {"semantics": {"at-most-once": -2}}}, r"workload\.semantics\.at-most-once"),
        ({"orgs": []}, r"orgs: .*at least 1 item"),
        ({"workload": {"timeout": "0s"}}, r"workload\.timeout: .*greater than 0"),
    ],
)
def test_bad_values_are_named_when_loading(data: dict[str, Any], key: str) -> None:
    one_line_error(data, key)


def test_a_scenario_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_bytes(b"[run]\nname = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_scenario(p)
    refused([str(p), *TOY], "not a UTF-8 text file")


def test_a_membership_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_bytes(b"[membership]\npreset = '\xff'\n")
    refused([*TOY, "--membership-from", str(p)], "--membership-from", "not a UTF-8 text file")


def test_bad_workload_values_never_reach_the_run(tmp_path: Path, no_run: None) -> None:
    for text, key in [
        ('[workload]\ntimeout = "0s"\n', "workload.timeout"),
        ("[workload]\nsemantics = {}\n", "workload.semantics"),
        ("orgs = []\n", "orgs"),
    ]:
        p = tmp_path / "s.toml"
        p.write_text(text)
        refused([str(p), *TOY], key)


# --- 6: the reproducing command gives the same run ---------------------------------


@pytest.mark.parametrize("seconds", [10.1234567, 0.1, 30.0, 1e16, 1e-7, 123456789.123456789])
def test_the_reproduce_command_keeps_every_digit_of_the_duration(seconds: float) -> None:
    import shlex

    from node.cli_sim import _flags
    from simulations.runner import reproduce_command
    from simulations.scenario import Scenario

    sc = apply_overrides(Scenario(), duration=seconds)
    words = shlex.split(reproduce_command(sc, None))
    assert parse_duration(words[words.index("--duration") + 1]) == seconds
    given = _flags({"duration": seconds, "liveness": seconds, "nodes": 20, "seed": 1})
    assert parse_duration(given[given.index("--duration") + 1]) == seconds
    assert parse_duration(given[given.index("--liveness") + 1]) == seconds


def test_a_run_reproduces_with_its_printed_command(tmp_path: Path) -> None:
    import json
    import shlex

    out = tmp_path / "r.json"
    args = ["--nodes", "12", "--node", "toy", "--liveness", "2s", "--tasks-per-s", "3"]
    first = CliRunner().invoke(
        simulate, [*args, "--duration", "4.1234567s", "--json", str(out), "--quiet"]
    )
    assert first.exit_code == 0, first.output
    report = json.loads(out.read_text())
    words = shlex.split(report["reproduce"])
    assert words[:2] == ["mesh-node", "simulate"] and "4.1234567s" in words
    again = CliRunner().invoke(simulate, [*words[2:], "--quiet"])
    assert f"seed 1 trace {report['trace_hash']}" in again.output


# --- 8: flags can make valid a file that is not valid without them -----------------


def test_cross_key_checks_come_after_the_flags(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text("[topology]\njoiners = 5\n")  # needs start = "formed"
    sc = load_scenario(p)  # each key is valid on its own
    formed = apply_overrides(sc, nodes=40, start="formed", source=str(p))
    assert formed.topology.joiners == 5 and formed.topology.start == "formed"
    with pytest.raises(ConfigError, match=r"s\.toml .*: topology\.joiners needs start = 'formed'"):
        apply_overrides(sc, nodes=40, source=str(p))


def test_the_cli_applies_the_flags_before_the_cross_key_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulations.runner as runner

    seen: list[Any] = []

    def stop(sc: Any, **kw: object) -> None:
        seen.append(sc)
        raise ConfigError("stopped here")

    monkeypatch.setattr(runner, "run_scenario", stop)
    p = tmp_path / "s.toml"
    p.write_text("[topology]\njoiners = 5\n")
    res = CliRunner().invoke(
        simulate, [str(p), "--nodes", "40", "--start", "formed", "--duration", "1s", "--quiet"]
    )
    assert str(res.exception) == "stopped here", res.output
    assert seen[0].topology.joiners == 5 and seen[0].topology.start == "formed"


def test_a_scenario_built_in_python_is_checked_when_it_runs() -> None:
    from simulations.runner import run_scenario
    from simulations.scenario import Scenario

    bad = Scenario.model_validate({"run": {"nodes": 20}, "topology": {"joiners": 3}})
    with pytest.raises(ConfigError, match="joiners needs start = 'formed'"):
        run_scenario(bad)


# --- 9: one line naming the flag or key and what is allowed ------------------------


@pytest.mark.parametrize(
    ("spec", "part"),
    [
        ("symmetric:1.5@1s-2s", "FRACTIONS: fractions between 0 and 1"),
        ("symmetric:0.5@abc-2s", "START: a duration"),
        ("symmetric:0.5@1s-2s-3s", "END: a duration"),
        ("symmetric:,,@1s-2s", "FRACTIONS: '' is not a number"),
        ("symmetric:@1s-2s", "FRACTIONS: '' is not a number"),
        ("symmetric:0.5@3s-2s", "END (2s) is before START"),
    ],
)
def test_partition_specs_are_explained_in_one_line(spec: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_partition(spec)
    text = str(info.value)
    assert text.startswith(f"--partition {spec!r}: ") and part in text
    assert "\n" not in text and "pydantic" not in text


def test_a_bad_liveness_is_one_line(tmp_path: Path) -> None:
    text = one_line_error({"run": {"liveness": "sometime"}}, r"run\.liveness: ")
    assert "'auto'" in text and "'sometime'" in text
    one_line_error({"run": {"liveness": -1}}, r"run\.liveness: ")


def test_pydantic_errors_are_one_line_naming_each_key() -> None:
    text = one_line_error(
        {"faults": {"crash_fraction": 2, "crash_fractoin": 1}}, r"faults\.crash_fraction: "
    )
    assert "faults.crash_fractoin: unknown key" in text


# --- 10: the minor ones ------------------------------------------------------------


def test_an_inverted_crash_window_is_an_error() -> None:
    one_line_error(
        {"faults": {"crash_window": ["8s", "2s"]}},
        r"faults\.crash_window: the end \(2s\) is before the start \(8s\)",
    )


def test_more_joiners_than_nodes_is_an_error() -> None:
    data = {"run": {"nodes": 20}, "topology": {"start": "formed", "joiners": 50}}
    one_line_error(data, r"topology\.joiners: 50 for 20 nodes; at most 17")
    data["topology"]["joiners"] = 17
    assert validate_scenario(data).topology.joiners == 17


def test_a_partition_needs_a_fraction() -> None:
    one_line_error(
        {"faults": {"partitions": [{"at": 1, "heal": 2, "fractions": []}]}},
        r"faults\.partitions\.0\.fractions",
    )


def test_a_marker_after_the_end_of_the_run_is_an_error() -> None:
    data: dict[str, Any] = {
        "run": {"duration": "10s", "liveness": "5s"},
        "convergence": {"marker_at": "20s"},
    }
    one_line_error(data, r"convergence\.marker_at \(20s\) is not before the end of the run \(15s")
    data["convergence"]["marker_at"] = "14s"
    assert validate_scenario(data).convergence.marker_at == 14.0


def test_a_membership_error_names_the_key_the_user_wrote() -> None:
    text = one_line_error({"membership": {"fanout": -3}}, r"membership\.fanout")
    assert "gossip_nodes" not in text
    one_line_error({"membership": {"gossip_nodes": -3}}, r"membership\.gossip_nodes")


def test_the_crash_flag_says_what_it_is() -> None:
    res = CliRunner().invoke(simulate, ["--help"])
    assert "honest non-seed nodes" in " ".join(res.output.split())


# --- 7: the documented memory refusal is what the command prints ------------------


def test_the_documented_memory_refusal_is_true(
    monkeypatch: pytest.MonkeyPatch, no_run: None
) -> None:
    import re

    import simulations.memory as memory

    doc = (Path(__file__).parent.parent / "docs" / "simulation.md").read_text()
    m = re.search(r"\$ (mesh-node simulate [^\n]+)\nError: (10,000 nodes need[^\n]+)", doc)
    assert m is not None
    command, message = m.group(1).split()[2:], m.group(2)
    have = re.search(r"this machine has ([0-9.]+) GB available", message)
    assert have is not None
    monkeypatch.setattr(memory, "available_bytes", lambda: int(float(have.group(1)) * 1024**3))
    res = CliRunner().invoke(simulate, command)
    assert res.exit_code == 2
    # The available memory is the doc machine's, rounded: the rest must be the same.
    need = message.split(" and this machine has")[0]
    assert " ".join(need.split()) in " ".join(res.output.split())


def test_faults_the_safety_phase_is_too_short_for_are_named(tmp_path: Path) -> None:
    """A crash or partition asked for after the safety phase is healed away before it
    starts: the run says so, on stderr and in the report (it ran them as no-ops)."""
    out = tmp_path / "r.json"
    flags = ["--crash", "0.5", "--partition", "symmetric:0.5@12s-15s", "--json", str(out)]
    res = CliRunner().invoke(simulate, [*TOY, *flags])
    assert res.exit_code == 0, res.output
    assert "warning: no node will crash: crashes are drawn from" in res.stderr
    assert "warning: partition symmetric from 12s will not happen" in res.stderr
    report = json.loads(out.read_text())
    assert len(report["warnings"]) == 2 and report["detection"]["crashed"] == 0


@pytest.mark.parametrize("name", ["lan-1000.toml", "chaos-1000.toml", "three-orgs.toml"])
def test_the_bundled_scenarios_inject_every_fault_they_ask_for(name: str) -> None:
    from simulations.faults import fault_warnings

    assert fault_warnings(load_scenario(name)) == []


def test_a_workload_capability_no_org_offers_is_named(tmp_path: Path) -> None:
    """Every task asking for a capability no org lists fails (no-bidders): the run says
    why, on stderr and in the report, as it does for faults it will not inject."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[[orgs]]\nname = "acme"\ncapabilities = { summarize = 1.0 }\n'
        "[workload]\ncapabilities = { summarize = 1.0, translate = 1.0, ocr = 0.0 }\n"
    )
    out = tmp_path / "r.json"
    res = CliRunner().invoke(simulate, [str(scenario), *TOY, "--json", str(out)])
    assert res.exit_code == 0, res.output
    line = (
        "no org offers workload capability 'translate': every task asking for it will "
        "fail (add it to an [[orgs]] table's capabilities)"
    )
    assert f"warning: {line}" in res.stderr and "'summarize'" not in res.stderr
    assert "'ocr'" not in res.stderr  # a weight of 0: never asked for
    assert json.loads(out.read_text())["warnings"] == [line]
    # no tasks, no warning; the bundled scenarios offer what they ask for
    from simulations.runner import scenario_warnings

    sc = load_scenario(str(scenario))
    assert len(scenario_warnings(sc)) == 1
    assert scenario_warnings(apply_overrides(sc, tasks_per_s=0.0)) == []
    for name in ("lan-1000.toml", "chaos-1000.toml", "three-orgs.toml"):
        assert scenario_warnings(load_scenario(name)) == []
