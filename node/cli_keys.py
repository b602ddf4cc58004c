"""``mesh-node keygen | org | trust | inspect``: keys, organizations, trust, frames.

File formats are described in ``node/files.py`` and ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from node.files import (
    TrustEntry,
    TrustFile,
    generate_seed,
    load_trust_store,
    read_certificate,
    read_org,
    read_public_key,
    read_revocation,
    read_trust_file,
    write_bytes,
    write_org,
    write_private_key,
    write_public_key,
    write_trust_file,
)
from protocols.crypto import Ed25519Signer, Ed25519Verifier
from protocols.envelope import Wire
from protocols.errors import ConfigError, MeshError, RemoteProtocolError
from protocols.identity import node_id_from_public_key
from protocols.trust import (
    Certificate,
    TrustStore,
    issue_certificate,
    issue_revocation,
    parse_revocation,
)

__all__ = ["COMMANDS", "open_frames", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)\Z")
_NODE_ID = re.compile(r"[a-z2-7]{52}\Z")


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


# -- keygen ----------------------------------------------------------------------


@click.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(out: Path, force: bool) -> None:
    """Create a node key: OUT (PKCS#8 PEM, mode 0600) and OUT.pub (public key PEM).

    \b
    Example:
      mesh-node keygen --out alpha.key
    """
    seed = generate_seed()
    signer = Ed25519Signer(seed)
    write_private_key(out, seed, overwrite=force)
    pub = out.with_name(out.name + ".pub")
    write_public_key(pub, signer.public_key, overwrite=True)
    click.echo(f"node id: {node_id_from_public_key(signer.public_key)}")
    click.echo(f"key:     {out} (keep it secret)")
    click.echo(f"public:  {pub}")


# -- org -------------------------------------------------------------------------


@click.group()
def org() -> None:
    """Organizations: a root key that issues node certificates and revocations.

    \b
    Example:
      mesh-node org init acme --out acme/
      mesh-node org issue --org acme/ --node-key alpha.key.pub --name alpha --out alpha.cert
      mesh-node org revoke --org acme/ --cert alpha.cert
    """


@org.command("init")
@click.argument("name")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
def org_init(name: str, out: Path) -> None:
    """Create organization NAME in directory OUT (root.key, org.toml).

    \b
    Example:
      mesh-node org init acme --out acme/
    """
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise click.BadParameter("an org name is 1-64 characters without spaces", param_hint="NAME")
    made = write_org(out, name, generate_seed())
    click.echo(f"org {name!r} created in {out}")
    click.echo(f"root key: {made.root_key.hex()}")


@org.command("issue")
@click.option("--org", "org_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--node-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's public key file (.pub) or key file.",
)
@click.option("--name", required=True, help="The node's name, written in the certificate.")
@click.option("--valid-for", default="24h", show_default=True, help="Lifetime: 90s, 30m, 24h, 7d.")
@click.option("--offer", "offers", multiple=True, help="Capability (or glob) it may offer.")
@click.option("--request", "requests", multiple=True, help="Capability (or glob) it may request.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def org_issue(
    org_dir: Path,
    node_key: Path,
    name: str,
    valid_for: str,
    offers: tuple[str, ...],
    requests: tuple[str, ...],
    out: Path,
) -> None:
    """Sign a node certificate with the org's root key.

    Without --offer (or --request) the node may offer (request) anything ("*").
    The certificate is valid from one minute ago (for clock skew) for --valid-for.

    \b
    Example:
      mesh-node org issue --org acme/ --node-key alpha.key.pub --name alpha \\
          --valid-for 7d --offer 'translate.*' --request echo --out alpha.cert
    """
    life = parse_duration(valid_for)
    org_info = read_org(org_dir)
    signer = org_info.signer()
    public = read_public_key(node_key)
    now = time.time()
    cert = issue_certificate(
        signer,
        org_info.name,
        public,
        name,
        not_before=now - 60,
        not_after=now + life,
        offers=offers or ("*",),
        requests=requests or ("*",),
    )
    write_bytes(out, cert)
    click.echo(f"certificate for {name!r} ({node_id_from_public_key(public)}) written to {out}")


@org.command("revoke")
@click.option("--org", "org_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--node", "nodes", multiple=True, help="Node id to revoke.")
@click.option(
    "--cert",
    "certs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Revoke the node of this certificate.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Revocation list to update (default ORG/revocations.rev).",
)
def org_revoke(
    org_dir: Path, nodes: tuple[str, ...], certs: tuple[Path, ...], out: Path | None
) -> None:
    """Add nodes to the org's signed revocation list (its version goes up by one).

    \b
    Example:
      mesh-node org revoke --org acme/ --cert alpha.cert
      mesh-node trust add --store trust.toml acme/ --revocations acme/revocations.rev
    """
    org_info = read_org(org_dir)
    target = out or org_info.revocations_path
    revoked: set[str] = set()
    version = 0
    verifier = Ed25519Verifier()
    if target.exists():
        try:
            rev = parse_revocation(read_revocation(target, verifier), verifier)
        except MeshError as exc:
            raise ConfigError(f"{target}: {exc}") from None
        if rev.org_key != org_info.root_key:
            raise ConfigError(f"{target} is the revocation list of another organization")
        revoked, version = set(rev.revoked), rev.version
    for node in nodes:
        if not _NODE_ID.match(node):
            raise click.BadParameter(f"{node!r} is not a node id", param_hint="--node")
        revoked.add(node)
    for cert_path in certs:
        cert = _certificate_of(cert_path)
        if cert.org_key != org_info.root_key:
            raise ConfigError(f"{cert_path} was not issued by org {org_info.name!r}")
        revoked.add(cert.node_id)
    if not nodes and not certs:
        raise click.UsageError("name at least one --node or --cert to revoke")
    blob = issue_revocation(
        org_info.signer(), org_info.name, version + 1, sorted(revoked), now=time.time()
    )
    write_bytes(target, blob)
    click.echo(f"revocation list version {version + 1} ({len(revoked)} nodes) written to {target}")


def _certificate_of(path: Path) -> Certificate:
    """The node certificate in ``org revoke --cert PATH``; a ``ConfigError`` (exit 2)
    naming the file if it is missing or holds something else (a key, say)."""
    try:
        return read_certificate(path)
    except ConfigError as exc:
        raise ConfigError(
            f"--cert: {exc.message} (give the node's .cert file, as `mesh-node org issue` "
            "writes it)"
        ) from None


# -- trust -----------------------------------------------------------------------


@click.group()
def trust() -> None:
    """The trust store: which org roots this node accepts and what they may do.

    \b
    Example:
      mesh-node trust add --store trust.toml acme/ --may-offer '*' --may-request 'translate.*'
      mesh-node trust list --store trust.toml
      mesh-node trust remove --store trust.toml acme
    """


_STORE = click.option(
    "--store", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Trust store."
)


@trust.command("add")
@_STORE
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Org name (required when SOURCE is a public key file).")
@click.option("--may-offer", multiple=True, help="Capability pattern its nodes may offer us.")
@click.option("--may-request", multiple=True, help="Capability pattern they may request.")
@click.option(
    "--revocations",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A revocation list file of this org.",
)
def trust_add(
    store: Path,
    source: Path,
    name: str | None,
    may_offer: tuple[str, ...],
    may_request: tuple[str, ...],
    revocations: tuple[Path, ...],
) -> None:
    """Accept the org whose root key is in SOURCE (an org directory, its org.toml, or a
    public key file).

    Without --may-offer (--may-request) the org's nodes may offer (request) anything.
    Adding an org that is already listed replaces its entry.

    \b
    Example:
      mesh-node trust add --store trust.toml acme/ --may-request 'translate.*'
      mesh-node trust add --store trust.toml globex/org.toml
      mesh-node trust add --store trust.toml --name beta beta-root.pub
    """
    if source.is_dir() or source.name == "org.toml":
        # An org directory, or the org.toml another org sent you (it holds no secret).
        info = read_org(source if source.is_dir() else source.parent)
        org_name, root_key = name or info.name, info.root_key
    else:
        if not name:
            raise click.UsageError("--name is required when SOURCE is a key file")
        org_name, root_key = name, read_public_key(source)
    trust_file = read_trust_file(store) if store.exists() else TrustFile(store)
    verifier = Ed25519Verifier()
    rev_paths: list[str] = []
    for rev_path in revocations:
        rev = parse_revocation(read_revocation(rev_path, verifier), verifier)
        if rev.org_key != root_key:
            raise ConfigError(f"{rev_path} is the revocation list of another organization")
        rev_paths.append(str(rev_path.resolve()))
    entry = TrustEntry(
        name=org_name,
        root_key=root_key,
        may_offer=may_offer or ("*",),
        may_request=may_request or ("*",),
        revocations=tuple(rev_paths),
    )
    trust_file.entries = [e for e in trust_file.entries if e.name != org_name] + [entry]
    write_trust_file(trust_file)
    click.echo(f"org {org_name!r} trusted in {store}")


@trust.command("list")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="One JSON object per org.")
def trust_list(store: Path, as_json: bool) -> None:
    """List the accepted orgs and their policies.

    \b
    Example:
      mesh-node trust list --store trust.toml --json
    """
    trust_file = read_trust_file(store)
    load_trust_store(store, Ed25519Verifier())  # validates revocation lists too
    for e in trust_file.entries:
        if as_json:
            row = {
                "name": e.name,
                "root_key": e.root_key.hex(),
                "may_offer": list(e.may_offer),
                "may_request": list(e.may_request),
                "revocations": list(e.revocations),
            }
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{e.name}  root {e.root_key.hex()[:16]}…  offer {','.join(e.may_offer)}"
                f"  request {','.join(e.may_request)}"
            )


@trust.command("remove")
@_STORE
@click.argument("name")
def trust_remove(store: Path, name: str) -> None:
    """Stop accepting org NAME.

    \b
    Example:
      mesh-node trust remove --store trust.toml acme
    """
    trust_file = read_trust_file(store)
    if trust_file.get(name) is None:
        raise ConfigError(f"org {name!r} is not in {store}")
    trust_file.entries = [e for e in trust_file.entries if e.name != name]
    write_trust_file(trust_file)
    click.echo(f"org {name!r} removed from {store}")


# -- inspect ---------------------------------------------------------------------


def open_frames(
    frames: Sequence[tuple[str, bytes]], trust: TrustStore, as_node: str | None, now: float
) -> list[dict[str, Any]]:
    """Open ``(name, frame)`` pairs in order with one receive-only Wire; one row each."""
    from protocols.kinds import PAYLOADS  # the whole payload registry: import on use

    wire = Wire.receiver(as_node, trust, Ed25519Verifier(), PAYLOADS)
    rows: list[dict[str, Any]] = []
    for name, frame in frames:
        try:
            opened = wire.open(frame, now)
        except RemoteProtocolError as exc:
            rows.append({"file": name, "ok": False, "error": exc.code, "message": exc.message})
        else:
            rows.append(
                {
                    "file": name,
                    "ok": True,
                    "kind": opened.kind,
                    "sender": opened.sender,
                    "org": opened.org,
                }
            )
    return rows


@click.command()
@click.option(
    "--trust",
    "trust_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust store to open the frames against.",
)
@click.option("--as", "as_node", help="Open as this node id (default: accept any recipient).")
@click.option("--now", type=float, help="Receiver's clock, unix seconds (default: now).")
@click.argument(
    "frames", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def inspect(
    trust_path: Path, as_node: str | None, now: float | None, frames: tuple[Path, ...]
) -> None:
    """Open each FRAME file (raw frame bytes) in order, as one receiver; one JSON line each.

    Exit status 0 when every frame opened, 1 when any was rejected.

    \b
    Example:
      mesh-node inspect --trust docs/test-vectors.trust --as <node id> --now 1767225600 f1.bin
    """
    if as_node is not None and not _NODE_ID.match(as_node):
        raise click.BadParameter(f"{as_node!r} is not a node id", param_hint="--as")
    store = load_trust_store(trust_path, Ed25519Verifier())
    clock = time.time() if now is None else now
    rows = open_frames([(str(p), p.read_bytes()) for p in frames], store, as_node, clock)
    for row in rows:
        click.echo(json.dumps(row))
    if not all(row["ok"] for row in rows):
        click.get_current_context().exit(1)


COMMANDS: tuple[click.Command, ...] = (keygen, org, trust, inspect)
