"""mesh-node org revoke --cert: a missing file or one that is not a certificate is a
one-line error naming the file and what it should be, exit 2 (a config error)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from node.cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert run("org", "init", "acme", "--out", "acme").exit_code == 0
    assert run("keygen", "--out", "n.key").exit_code == 0
    return tmp_path


def _one_line_error(out: Result, *needles: str) -> None:
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: ") and out.output.count("\n") == 1, out.output
    for needle in needles:
        assert needle in out.output, out.output


def test_a_file_that_is_not_a_certificate_is_named(org: Path) -> None:
    """It said 'error: trailing bytes after the msgpack object', naming no file."""
    out = run("org", "revoke", "--org", "acme", "--cert", "n.key.pub")
    _one_line_error(out, "--cert: n.key.pub is not a Parley certificate ", "node's .cert file")
    assert not (org / "acme" / "revocations.rev").exists()


def test_a_missing_certificate_is_a_config_error(org: Path) -> None:
    """It exited 1 where every other missing file exits 2."""
    out = run("org", "revoke", "--org", "acme", "--cert", "nope.cert")
    _one_line_error(out, "--cert: certificate nope.cert does not exist")
    assert not (org / "acme" / "revocations.rev").exists()
