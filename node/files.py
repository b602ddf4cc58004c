"""On-disk formats of keys, certificates, organizations and trust stores.

Every reader turns a problem into a one-line ``ConfigError`` naming the file;
every secret is written with mode 0600 through a temporary file and an atomic
rename, and refused on reading when its group or other permission bits are set.
The formats (also in ``docs/protocol.md``, section "Files"):

* **node key / org root key**: the Ed25519 private key as PKCS#8 PEM
  (``-----BEGIN PRIVATE KEY-----``), mode 0600.
* **public key** (``*.pub``): SubjectPublicKeyInfo PEM
  (``-----BEGIN PUBLIC KEY-----``); readers also take 64 hex characters.
* **certificate** (``*.cert``): the exact certificate bytes (see the spec).
* **revocation list** (``*.rev``): the exact signed revocation bytes.
* **org directory**: ``root.key`` (0600), ``org.toml`` (``name``, ``root_key``
  hex) and, once something is revoked, ``revocations.rev``.
* **trust store** (TOML)::

      [[org]]
      name = "acme"
      root_key = "<64 hex chars>"
      may_offer = ["*"]                 # capability names or fnmatch globs
      may_request = ["translate.*"]
      revocations = ["acme.rev"]        # optional, relative to the store file
      revocations_hex = ["92c4..."]     # optional, the same bytes inline
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from protocols.crypto import Ed25519Signer, Verifier, check_public_key
from protocols.errors import ConfigError, Malformed, MeshError, first_line
from protocols.identity import NodeIdentity
from protocols.trust import (
    Certificate,
    OrgPolicy,
    TrustStore,
    parse_certificate,
    parse_revocation,
)

__all__ = [
    "OrgDir",
    "TrustEntry",
    "TrustFile",
    "check_private_mode",
    "generate_seed",
    "load_identity",
    "load_trust_store",
    "read_certificate",
    "read_org",
    "read_private_key",
    "read_public_key",
    "read_revocation",
    "read_trust_file",
    "write_bytes",
    "write_private_key",
    "write_public_key",
    "write_trust_file",
]

ORG_KEY = "root.key"
ORG_TOML = "org.toml"
ORG_REVOCATIONS = "revocations.rev"
_MAX_FILE = 64 * 1024 * 1024


def generate_seed() -> bytes:
    """A fresh 32-byte Ed25519 seed from the operating system."""
    return os.urandom(32)


# -- writing -------------------------------------------------------------------


def write_bytes(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` atomically (temporary file, fsync, rename) with ``mode``."""
    path = Path(path)
    if not overwrite and path.exists():
        raise ConfigError(f"{path} already exists (refusing to overwrite it)")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write in {directory}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def write_private_key(path: Path, seed: bytes, *, overwrite: bool = False) -> None:
    """Write an Ed25519 seed as PKCS#8 PEM, mode 0600."""
    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    write_bytes(path, pem, mode=0o600, overwrite=overwrite)


def write_public_key(path: Path, public_key: bytes, *, overwrite: bool = False) -> None:
    """Write a raw 32-byte public key as SubjectPublicKeyInfo PEM."""
    pem = Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    write_bytes(path, pem, overwrite=overwrite)


# -- reading -------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > _MAX_FILE:
        raise ConfigError(f"{what} {path} is too large")
    return data


def check_private_mode(path: Path) -> None:
    """Refuse a secret file that its group or others may access (like ssh does)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )


def read_private_key(path: Path) -> bytes:
    """Read a PKCS#8 PEM Ed25519 private key (mode must be 0600 or stricter); returns the seed."""
    path = Path(path)
    check_private_mode(path)
    data = _read(path, "key file")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PKCS#8 PEM key: {first_line(exc)}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def load_identity(path: Path) -> NodeIdentity:
    """A node's identity from its key file."""
    return NodeIdentity.from_signer(Ed25519Signer(read_private_key(path)))


def read_public_key(path: Path) -> bytes:
    """A raw 32-byte public key from a public PEM, 64 hex characters, or a private key file."""
    path = Path(path)
    data = _read(path, "key file")
    text = data.decode("ascii", errors="replace").strip()
    if "PRIVATE KEY" in text:
        return Ed25519Signer(read_private_key(path)).public_key
    if "PUBLIC KEY" in text:
        try:
            key = load_pem_public_key(data)
        except (ValueError, TypeError):
            raise ConfigError(f"{path} is not a valid public key PEM") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    else:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{path} is neither a PEM key nor a hex public key") from None
    _check_key(raw, str(path))
    return raw


def _check_key(raw: bytes, where: str) -> None:
    try:
        check_public_key(raw)
    except MeshError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_certificate(path: Path) -> Certificate:
    """Parse (not verify) a ``.cert`` file."""
    data = _read(Path(path), "certificate")
    try:
        return parse_certificate(data)
    except Malformed:  # not msgpack, or not a certificate's structure: a codec detail says nothing
        empty = " (the file is empty)" if not data.strip() else ""
        raise ConfigError(f"{path} is not a Parley certificate{empty}") from None
    except MeshError as exc:
        raise ConfigError(f"certificate {path}: {exc}") from None


def read_revocation(path: Path, verifier: Verifier) -> bytes:
    """Read and verify a ``.rev`` file; returns its bytes."""
    data = _read(Path(path), "revocation list")
    try:
        parse_revocation(data, verifier)
    except MeshError as exc:
        raise ConfigError(f"revocation list {path}: {exc}") from None
    return data


# -- organizations ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrgDir:
    """An organization directory: its name and root key (the seed only if loaded)."""

    path: Path
    name: str
    root_key: bytes

    @property
    def key_path(self) -> Path:
        return self.path / ORG_KEY

    @property
    def revocations_path(self) -> Path:
        return self.path / ORG_REVOCATIONS

    def signer(self) -> Ed25519Signer:
        signer = Ed25519Signer(read_private_key(self.key_path))
        if signer.public_key != self.root_key:
            raise ConfigError(f"{self.key_path} does not match the root_key in {ORG_TOML}")
        return signer


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def write_org(path: Path, name: str, seed: bytes) -> OrgDir:
    """Create an org directory (mode 0700) with its root key and ``org.toml``."""
    path = Path(path)
    if (path / ORG_KEY).exists() or (path / ORG_TOML).exists():
        raise ConfigError(f"{path} already holds an organization")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    signer = Ed25519Signer(seed)
    write_private_key(path / ORG_KEY, seed)
    text = (
        "# Parley organization (root.key is its private root key: keep it secret)\n"
        f"name = {_toml_str(name)}\n"
        f"root_key = {_toml_str(signer.public_key.hex())}\n"
    )
    write_bytes(path / ORG_TOML, text.encode(), overwrite=False)
    return OrgDir(path, name, signer.public_key)


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    data = _read(path, what)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def _hex_key(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: root_key must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where}: root_key is not hex") from None
    _check_key(raw, where)
    return raw


def read_org(path: Path) -> OrgDir:
    """Read an org directory's ``org.toml`` (the root key is loaded on demand)."""
    path = Path(path)
    doc = _load_toml(path / ORG_TOML, "org file")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path / ORG_TOML}: name must be a non-empty string")
    return OrgDir(path, name, _hex_key(doc.get("root_key"), str(path / ORG_TOML)))


# -- trust stores ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One ``[[org]]`` of a trust store file."""

    name: str
    root_key: bytes
    may_offer: tuple[str, ...] = ("*",)
    may_request: tuple[str, ...] = ("*",)
    revocations: tuple[str, ...] = ()
    revocations_hex: tuple[str, ...] = ()

    def policy(self) -> OrgPolicy:
        return OrgPolicy(self.name, self.root_key, self.may_offer, self.may_request)


@dataclass(slots=True)
class TrustFile:
    """A trust store file as written on disk (entries in file order)."""

    path: Path
    entries: list[TrustEntry] = field(default_factory=list)

    def get(self, name: str) -> TrustEntry | None:
        return next((e for e in self.entries if e.name == name), None)


def _strings(value: Any, where: str, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


_ENTRY_KEYS = {"name", "root_key", "may_offer", "may_request", "revocations", "revocations_hex"}


def read_trust_file(path: Path) -> TrustFile:
    """Parse a trust store file; a missing file is an error."""
    path = Path(path)
    doc = _load_toml(path, "trust store")
    unknown = set(doc) - {"org"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} (expected [[org]] tables)")
    orgs = doc.get("org", [])
    if not isinstance(orgs, list):
        raise ConfigError(f"{path}: 'org' must be an array of tables ([[org]])")
    out = TrustFile(path)
    for i, org in enumerate(orgs):
        where = f"{path}: org #{i + 1}"
        if not isinstance(org, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(org) - _ENTRY_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
        name = org.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name must be a non-empty string")
        if out.get(name) is not None:
            raise ConfigError(f"{where}: org {name!r} is listed twice")
        out.entries.append(
            TrustEntry(
                name=name,
                root_key=_hex_key(org.get("root_key"), f"{where} ({name})"),
                may_offer=_strings(org.get("may_offer"), f"{where}: may_offer", ("*",)),
                may_request=_strings(org.get("may_request"), f"{where}: may_request", ("*",)),
                revocations=_strings(org.get("revocations"), f"{where}: revocations", ()),
                revocations_hex=_strings(
                    org.get("revocations_hex"), f"{where}: revocations_hex", ()
                ),
            )
        )
    return out


def write_trust_file(trust: TrustFile) -> None:
    """Write a trust store file (atomically); comments in an older file are not kept."""
    lines = ["# Parley trust store: the organizations this node accepts (see docs/protocol.md)"]
    for e in trust.entries:
        lines += [
            "",
            "[[org]]",
            f"name = {_toml_str(e.name)}",
            f"root_key = {_toml_str(e.root_key.hex())}",
            f"may_offer = {_toml_list(e.may_offer)}",
            f"may_request = {_toml_list(e.may_request)}",
        ]
        if e.revocations:
            lines.append(f"revocations = {_toml_list(e.revocations)}")
        if e.revocations_hex:
            lines.append(f"revocations_hex = {_toml_list(e.revocations_hex)}")
    write_bytes(trust.path, ("\n".join(lines) + "\n").encode())


def load_trust_store(path: Path, verifier: Verifier) -> TrustStore:
    """Build a ``TrustStore`` from a file, applying its verified revocation lists."""
    trust = read_trust_file(path)
    store = TrustStore()
    for entry in trust.entries:
        try:
            store.add(entry.policy())
        except MeshError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        blobs: list[tuple[str, bytes]] = []
        for rel in entry.revocations:
            rev_path = Path(rel) if Path(rel).is_absolute() else trust.path.parent / rel
            blobs.append((str(rev_path), _read(rev_path, "revocation list")))
        for i, text in enumerate(entry.revocations_hex):
            try:
                blobs.append(
                    (f"{path}: {entry.name} revocations_hex #{i + 1}", bytes.fromhex(text))
                )
            except ValueError:
                raise ConfigError(
                    f"{path}: {entry.name} revocations_hex #{i + 1} is not hex"
                ) from None
        for where, blob in blobs:
            try:
                rev = parse_revocation(blob, verifier)
                if rev.org != entry.name:
                    raise ConfigError(
                        f"{where}: revocation list of org {rev.org!r}, not {entry.name!r}"
                    )
                store.apply_revocation(rev)
            except ConfigError:
                raise
            except MeshError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    return store
