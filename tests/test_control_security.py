"""The control dir and socket are ours alone: created 0700 whatever the umask, refused
under a directory another user may rename, and a socket of another user is never
talked to (a fake daemon could answer there)."""

from __future__ import annotations

import os
import socket
import stat
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.config import default_control_dir
from node.control import (
    ControlClient,
    check_control_dir_free,
    prepare_control_dir,
    socket_path,
)
from protocols.errors import ConfigError

OTHER_UID = 54321


def give_away(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` another user's: chown it as root; otherwise pretend to be another
    user (then every file of ours looks like someone else's, which still must fail)."""
    if os.getuid() == 0:
        os.chown(path, OTHER_UID, -1, follow_symlinks=False)
    else:
        fake = os.getuid() + 1
        monkeypatch.setattr(os, "getuid", lambda: fake)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_every_directory_the_node_creates_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 000 the parents of the control dir (/tmp/parley-<uid>, .../parley)
    were created drwxrwxrwx: anyone could rename the node's dir and plant a socket."""
    old = os.umask(0)
    try:
        prepare_control_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert _mode(d) == 0o700, (d, oct(_mode(d)))


def test_a_control_dir_under_another_users_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's XDG_RUNTIME_DIR of another user: that user could rename our
    'parley' dir away (status then said 'no daemon listening')."""
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    give_away(other, monkeypatch)
    with pytest.raises(ConfigError, match="belongs to another user") as info:
        prepare_control_dir(other / "parley" / "alpha")
    assert "\n" not in str(info.value)
    assert not (other / "parley").exists()  # refused before creating anything there
    with pytest.raises(ConfigError, match="belongs to another user"):
        check_control_dir_free(other / "parley" / "alpha")  # the daemon's early check


def test_a_directory_writable_by_others_on_the_way_is_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir()
    wide.chmod(0o777)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0777\)"):
        prepare_control_dir(wide / "alpha")
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o777)  # the control dir itself, left open by an older release
    with pytest.raises(ConfigError, match="chmod 700"):
        prepare_control_dir(mine)
    readable = tmp_path / "readable"
    readable.mkdir()
    readable.chmod(0o755)  # ours, not writable by others: made private as before
    prepare_control_dir(readable)
    assert _mode(readable) == 0o700


def test_a_symbolic_link_of_another_user_on_the_way_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    give_away(link, monkeypatch)
    with pytest.raises(ConfigError, match="another user"):
        prepare_control_dir(link / "alpha")


def test_a_dir_in_the_sticky_root_owned_tmp_is_fine() -> None:
    st = os.stat("/tmp")
    if st.st_uid != 0 or not st.st_mode & stat.S_ISVTX:
        pytest.skip("/tmp is not root's sticky directory here")
    path = Path("/tmp") / f"parley-test-{uuid.uuid4().hex}"
    try:
        prepare_control_dir(path / "parley" / "alpha")
        assert _mode(path) == 0o700
    finally:
        for d in (path / "parley" / "alpha", path / "parley", path):
            d.rmdir()


def test_xdg_runtime_dir_is_used_only_when_it_is_ours_and_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    assert default_control_dir("alpha") == run / "parley" / "alpha"
    run.chmod(0o755)
    fallback = Path(f"/tmp/parley-{os.getuid()}") / "parley" / "alpha"
    assert default_control_dir("alpha") == fallback
    monkeypatch.setenv("XDG_RUNTIME_DIR", "run")  # relative: ignored (XDG spec)
    assert default_control_dir("alpha") == fallback
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert default_control_dir("alpha") == fallback
    run.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    give_away(run, monkeypatch)
    assert default_control_dir("alpha") == Path(f"/tmp/parley-{os.getuid()}/parley/alpha")


def _plant_socket(cdir: Path) -> Path:
    prepare_control_dir(cdir)
    path = socket_path(cdir)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def test_the_client_refuses_a_socket_of_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdir = tmp_path / "ctl"
    give_away(_plant_socket(cdir), monkeypatch)
    with pytest.raises(ConfigError, match="belongs to another user"):
        ControlClient(cdir).call({"cmd": "status"}, timeout=0.5)
    for cmd in (["status"], ["peers", "--json"], ["submit", "echo"], ["approve", "abcdef"]):
        out = CliRunner().invoke(main, [*cmd, "--control", str(cdir)])
        assert out.exit_code == 2, (cmd, out.output)
        assert out.output.startswith("error: control socket ") and out.output.count("\n") == 1
        assert "belongs to another user" in out.output


def test_the_client_refuses_a_socket_in_a_directory_others_may_write(tmp_path: Path) -> None:
    cdir = tmp_path / "ctl"
    _plant_socket(cdir)
    cdir.chmod(0o777)
    out = CliRunner().invoke(main, ["status", "--control", str(cdir)])
    assert out.exit_code == 2 and "refusing to use its socket" in out.output, out.output
