"""node/files.py: key permissions, org directories, certificates, trust store files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.files import (
    TrustEntry,
    TrustFile,
    load_identity,
    load_trust_store,
    read_certificate,
    read_org,
    read_private_key,
    read_public_key,
    read_trust_file,
    write_bytes,
    write_org,
    write_private_key,
    write_public_key,
    write_trust_file,
)
from protocols.crypto import Ed25519Signer, Ed25519Verifier
from protocols.errors import ConfigError
from protocols.trust import issue_revocation, parse_certificate
from tests.strategies import NOW, fixed_seed, make_node, make_org

SEED = fixed_seed("files")
V = Ed25519Verifier()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_key_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "n.key"
    write_private_key(path, SEED)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert read_private_key(path) == SEED
    assert load_identity(path).public_key == Ed25519Signer(SEED).public_key
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(path, SEED)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602])
def test_key_readable_by_group_or_world_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "n.key"
    write_private_key(path, SEED)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as info:
        read_private_key(path)
    assert "\n" not in str(info.value) and "chmod 600" in str(info.value)
    os.chmod(path, 0o400)
    assert read_private_key(path) == SEED


def test_bad_key_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError, match="does not exist"):
        read_private_key(missing)
    junk = tmp_path / "junk.key"
    write_bytes(junk, b"not a key", mode=0o600)
    with pytest.raises(ConfigError):
        read_private_key(junk)
    with pytest.raises(ConfigError):
        read_public_key(junk)
    small = tmp_path / "small.pub"
    small.write_text("01" + "00" * 31)
    with pytest.raises(ConfigError, match="small order"):
        read_public_key(small)


def test_public_key_formats(tmp_path: Path) -> None:
    public = Ed25519Signer(SEED).public_key
    pem = tmp_path / "n.pub"
    write_public_key(pem, public)
    assert read_public_key(pem) == public
    hex_file = tmp_path / "n.hex"
    hex_file.write_text(public.hex() + "\n")
    assert read_public_key(hex_file) == public
    key = tmp_path / "n.key"
    write_private_key(key, SEED)
    assert read_public_key(key) == public


def test_org_directory(tmp_path: Path) -> None:
    made = write_org(tmp_path / "acme", "acme", SEED)
    assert _mode(tmp_path / "acme" / "root.key") == 0o600
    org = read_org(tmp_path / "acme")
    assert org.name == "acme" and org.root_key == made.root_key
    assert org.signer().public_key == made.root_key
    with pytest.raises(ConfigError, match="already holds"):
        write_org(tmp_path / "acme", "acme", SEED)
    with pytest.raises(ConfigError):
        read_org(tmp_path / "nowhere")


def test_certificate_file(tmp_path: Path) -> None:
    _, raw = make_node(make_org("acme"), "a")
    write_bytes(tmp_path / "a.cert", raw)
    assert read_certificate(tmp_path / "a.cert") == parse_certificate(raw)
    (tmp_path / "bad.cert").write_bytes(b"\x00")
    with pytest.raises(ConfigError, match=r"bad\.cert"):
        read_certificate(tmp_path / "bad.cert")


@pytest.mark.parametrize(
    "content, tail",
    [
        (b"garbage\n", ""),  # `echo garbage > alpha.cert`
        (b"", " (the file is empty)"),
        (b"\n", " (the file is empty)"),
        (b"\xc1", ""),  # no msgpack at all
        (b"\x91\x01", ""),  # msgpack, not a certificate
        (None, ""),  # a certificate cut short
    ],
)
def test_a_file_that_holds_no_certificate_is_named_and_said_to_be_none(
    tmp_path: Path, content: bytes | None, tail: str
) -> None:
    """One line naming the file, not the codec's detail (`not valid msgpack: ValueError`)."""
    if content is None:
        content = make_node(make_org("acme"), "a")[1][:-10]
    path = tmp_path / "alpha.cert"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_certificate(path)
    assert err.value.message == f"{path} is not a Parley certificate{tail}"


def test_trust_file_round_trip_with_revocations(tmp_path: Path) -> None:
    acme, beta = make_org("acme"), make_org("beta")
    ident, _ = make_node(acme, "mallory")
    rev = issue_revocation(acme.signer, "acme", 1, [ident.node_id], now=NOW)
    write_bytes(tmp_path / "acme.rev", rev)
    trust = TrustFile(
        tmp_path / "trust.toml",
        [
            TrustEntry("acme", acme.root_key, ("*",), ('translate."x"',), ("acme.rev",)),
            TrustEntry("beta", beta.root_key, revocations_hex=(rev.hex(),)),
        ],
    )
    write_trust_file(trust)
    assert read_trust_file(tmp_path / "trust.toml").entries == trust.entries
    with pytest.raises(ConfigError, match="not 'beta'"):
        load_trust_store(tmp_path / "trust.toml", V)  # acme's list under beta
    trust.entries[1] = TrustEntry("beta", beta.root_key)
    write_trust_file(trust)
    store = load_trust_store(tmp_path / "trust.toml", V)
    assert store.revoked("acme") == {ident.node_id}
    assert [o.name for o in store.orgs()] == ["acme", "beta"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[org]]\nname = 1\n", "name"),
        ("[[org]]\nname = 'a'\nroot_key = 'zz'\n", "not hex"),
        ("[[org]]\nname = 'a'\nroot_key = '" + "00" * 32 + "'\n", "small order"),
        ("[[org]]\nname = 'a'\nroot_key = 'aa'\ncolour = 1\n", "colour"),
        ("org = 1\n", "array of tables"),
        ("oops = 1\n", "oops"),
        ("[[org\n", "not valid TOML"),
    ],
)
def test_bad_trust_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "trust.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_trust_store(path, V)


def test_duplicate_org_and_missing_revocation_file(tmp_path: Path) -> None:
    key = make_org("acme").root_key.hex()
    path = tmp_path / "trust.toml"
    path.write_text(f"[[org]]\nname='a'\nroot_key='{key}'\n[[org]]\nname='a'\nroot_key='{key}'\n")
    with pytest.raises(ConfigError, match="twice"):
        load_trust_store(path, V)
    path.write_text(f"[[org]]\nname='a'\nroot_key='{key}'\nrevocations=['gone.rev']\n")
    with pytest.raises(ConfigError, match=r"gone\.rev"):
        load_trust_store(path, V)
