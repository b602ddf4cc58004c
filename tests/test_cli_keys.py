"""mesh-node keygen / org / trust / inspect through click's CliRunner."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from node.cli import main
from node.cli_keys import parse_duration
from node.files import read_certificate, read_trust_file

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _node_id(result: Result) -> str:
    return result.output.split("node id: ")[1].split()[0]


def test_full_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("keygen", "--out", "a.key")
    assert r.exit_code == 0, r.output
    node_id = _node_id(r)
    assert stat.S_IMODE(Path("a.key").stat().st_mode) == 0o600 and Path("a.key.pub").exists()
    assert run("org", "init", "acme", "--out", "acme").exit_code == 0
    r = run(
        "org", "issue", "--org", "acme", "--node-key", "a.key.pub", "--name", "alpha",
        "--valid-for", "2h", "--offer", "echo", "--request", "translate.*", "--out", "a.cert",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cert = read_certificate(Path("a.cert"))
    assert cert.node_id == node_id and cert.org == "acme" and cert.name == "alpha"
    assert cert.offers == ("echo",) and cert.requests == ("translate.*",)
    assert 7100 < cert.not_after - cert.not_before - 60 < 7300
    r = run("trust", "add", "--store", "t.toml", "acme", "--may-request", "echo")
    assert r.exit_code == 0, r.output
    r = run("trust", "list", "--store", "t.toml", "--json")
    row = json.loads(r.output)
    assert row["name"] == "acme" and row["may_request"] == ["echo"] and row["may_offer"] == ["*"]
    r = run("org", "revoke", "--org", "acme", "--cert", "a.cert")
    assert r.exit_code == 0 and "version 1" in r.output
    r = run("org", "revoke", "--org", "acme", "--node", "b" * 52)
    assert "version 2 (2 nodes)" in r.output
    r = run("trust", "add", "--store", "t.toml", "acme", "--revocations", "acme/revocations.rev")
    assert r.exit_code == 0, r.output
    assert run("trust", "list", "--store", "t.toml").exit_code == 0
    assert run("trust", "remove", "--store", "t.toml", "acme").exit_code == 0
    assert read_trust_file(Path("t.toml")).entries == []
    r = CliRunner().invoke(main, ["trust", "remove", "--store", "t.toml", "acme"])
    assert r.exit_code == 2 and "error: org 'acme' is not in" in r.output


def test_trust_add_from_public_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run("keygen", "--out", "root.key")
    r = CliRunner().invoke(main, ["trust", "add", "--store", "t.toml", "root.key.pub"])
    assert r.exit_code == 2 and "--name" in r.output
    assert run("trust", "add", "--store", "t.toml", "--name", "b", "root.key.pub").exit_code == 0
    assert read_trust_file(Path("t.toml")).entries[0].name == "b"


def test_unsafe_key_file_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run("keygen", "--out", "a.key")
    run("org", "init", "acme", "--out", "acme")
    os.chmod("acme/root.key", 0o644)
    r = CliRunner().invoke(
        main, ["org", "issue", "--org", "acme", "--node-key", "a.key", "--name", "x", "--out", "x"]
    )
    assert r.exit_code == 2
    assert r.output.startswith("error: key file acme/root.key is accessible by group or others")
    assert r.output.count("\n") == 1 and "Traceback" not in r.output


def test_keygen_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run("keygen", "--out", "a.key")
    r = CliRunner().invoke(main, ["keygen", "--out", "a.key"])
    assert r.exit_code == 2 and "already exists" in r.output
    assert run("keygen", "--out", "a.key", "--force").exit_code == 0


def test_inspect_the_test_vectors(tmp_path: Path) -> None:
    vectors = json.loads((DOCS / "test-vectors.json").read_text())
    files = []
    for i, v in enumerate(vectors):
        path = tmp_path / f"{i:02d}-{v['name']}.bin"
        path.write_bytes(bytes.fromhex(v["frame_hex"]))
        files.append(str(path))
    args = ["inspect", "--trust", str(DOCS / "test-vectors.trust"), "--as", vectors[0]["recipient"]]
    r = CliRunner().invoke(main, [*args, "--now", str(vectors[0]["now"]), *files])
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["file"] for row in rows] == files
    assert ["ok" if row["ok"] else row["error"] for row in rows] == [v["expect"] for v in vectors]
    ok = [row for row in rows if row["ok"]]
    assert {"kind", "sender"} <= set(ok[0]) and {"error", "message"} <= set(rows[-1])
    r = CliRunner().invoke(main, [*args, "--now", str(vectors[0]["now"]), files[0], files[1]])
    assert r.exit_code == 0


def test_inspect_usage_errors(tmp_path: Path) -> None:
    trust = str(DOCS / "test-vectors.trust")
    assert CliRunner().invoke(main, ["inspect", "--trust", trust]).exit_code == 2
    r = CliRunner().invoke(main, ["inspect", "--trust", trust, "--as", "nope", trust])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["inspect", "--trust", trust, str(tmp_path / "missing")])
    assert r.exit_code == 2


def test_bad_trust_store_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text("[[org\n")
    (tmp_path / "f.bin").write_bytes(b"x")
    r = CliRunner().invoke(
        main, ["inspect", "--trust", str(tmp_path / "t.toml"), str(tmp_path / "f.bin")]
    )
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1


@pytest.mark.parametrize(
    "cmd",
    [
        ["keygen"], ["org"], ["org", "init"], ["org", "issue"], ["org", "revoke"], ["trust"],
        ["trust", "add"], ["trust", "list"], ["trust", "remove"], ["inspect"], [],
    ],
)  # fmt: skip
def test_every_command_has_help_with_an_example(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Example" in r.output and "mesh-node" in r.output


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800
    assert parse_duration("24h") == 86400 and parse_duration("2w") == 14 * 86400
    r = CliRunner().invoke(main, ["org", "issue", "--org", ".", "--node-key", "k", "--name", "n",
                                  "--valid-for", "soon", "--out", "o"])  # fmt: skip
    assert r.exit_code == 2 and "not a duration" in r.output


def test_missing_command_modules_only_mean_fewer_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.cli as cli

    monkeypatch.setattr(cli, "_present", lambda module: module == "node.cli_keys")
    group = cli.MeshGroup(name="x")
    ctx = cli.click.Context(group)
    assert group.list_commands(ctx) == ["inspect", "keygen", "org", "trust"]
    assert group.get_command(ctx, "simulate") is None


def test_trust_add_from_the_org_toml_another_org_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md: the two orgs exchange org.toml (no secret in it) and add
    each other with it; only an org directory was accepted."""
    monkeypatch.chdir(tmp_path)
    assert run("org", "init", "globex", "--out", "globex").exit_code == 0
    received = tmp_path / "inbox"
    received.mkdir()
    (received / "org.toml").write_bytes((tmp_path / "globex" / "org.toml").read_bytes())
    r = run("trust", "add", "--store", "t.toml", received / "org.toml")
    assert r.exit_code == 0, r.output
    (entry,) = read_trust_file(Path("t.toml")).entries
    assert entry.name == "globex"
