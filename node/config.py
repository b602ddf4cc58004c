"""Daemon configuration (TOML), parsed into frozen dataclasses.

Every problem becomes a one-line ``ConfigError``; see ``docs/operations.md``
for the reference. Relative paths are resolved against the config file's
directory. Example::

    [node]
    name = "alpha"
    identity = "alpha.key"
    certificate = "alpha.cert"
    trust = "trust.toml"
    listen = "tcp://127.0.0.1:7001"
    seeds = ["tcp://127.0.0.1:7002"]

    [mdns]
    enabled = false
    interfaces = ["127.0.0.1"]

    [limits]
    grace_seconds = 10

    [[capability]]
    name = "wordcount"
    command = ["python3", "examples/wordcount.py"]   # or python = "pkg.mod:func", or url = "http://..."
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.core_adapter import CAPABILITY_NAME_MAX, MAX_CONCURRENCY_MAX
from node.supervision import RISK_LEVELS
from node.transport import endpoint_problem
from protocols.capabilities.versions import parse_version
from protocols.errors import ConfigError, LocalProtocolError
from protocols.membership.config import MembershipConfig, tuned

__all__ = [
    "CapabilityConfig",
    "DaemonConfig",
    "LimitsConfig",
    "MdnsConfig",
    "default_control_dir",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class CapabilityConfig:
    name: str
    version: str = "1"
    max_concurrency: int = 1
    bid: float = 1.0
    timeout: float = 60.0
    #: expected run time (s): a cfp whose deadline leaves less is refused; None: 1 s
    eta: float | None = None
    python: str | None = None
    command: tuple[str, ...] | None = None
    url: str | None = None
    #: tasks of this risk or above wait for ``mesh-node approve`` (node.supervision)
    approve_at: str | None = None

    @property
    def handler_kind(self) -> str:
        if self.python is not None:
            return "python"
        if self.command is not None:
            return "subprocess"
        return "http"


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    enabled: bool = False
    interfaces: tuple[str, ...] = ("127.0.0.1",)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_frame: int = 1 << 20
    max_peers: int = 256
    max_concurrency: int = 8
    grace_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    name: str
    identity: Path
    certificate: Path
    trust: Path
    listen: str = "tcp://127.0.0.1:7001"
    advertise: str | None = None
    seeds: tuple[str, ...] = ()
    preset: str = "lan"
    #: the ``[membership]`` table (``preset`` and knobs), the same as a scenario's;
    #: None: the preset's settings
    membership: MembershipConfig | None = None
    control_dir: Path = field(default_factory=lambda: default_control_dir("node"))
    mdns: MdnsConfig = MdnsConfig()
    limits: LimitsConfig = LimitsConfig()
    capabilities: tuple[CapabilityConfig, ...] = ()
    source: Path | None = None
    #: the signed, hash-chained audit log (``[audit] path``; node.audit), if any
    audit: Path | None = None


def default_control_dir(name: str) -> Path:
    """``$XDG_RUNTIME_DIR/parley/<name>`` when that runtime dir is safe to use (an
    absolute path to a directory of ours, mode 0700: nobody else can rename or replace
    what we create in it); else ``/tmp/parley-<uid>/parley/<name>``. The directories
    are created 0700 and checked by ``node.control.prepare_control_dir``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = runtime if _private_runtime_dir(runtime) else f"/tmp/parley-{os.getuid()}"
    return Path(base) / "parley" / name


def _private_runtime_dir(path: str) -> bool:
    """True if ``path`` is an absolute path to a directory owned by us, mode 0700."""
    if not path or not os.path.isabs(path):
        return False  # unset, or relative (the XDG spec says to ignore it)
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the variable
        return False
    return (
        stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    )


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: wrong type ({type(value).__name__})")
    return value


def _number(
    table: dict[str, Any],
    key: str,
    where: str,
    default: float,
    *,
    whole: bool = False,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
) -> Any:
    """``table[key]`` (or ``default``) as a finite number in range, else a ConfigError
    naming the key (TOML allows nan and inf; a bool is not a number here)."""
    value: Any = table.get(key, default)
    ok = isinstance(value, int if whole else int | float) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = math.isfinite(number) and number <= high
        ok = ok and (number > low if low_open else number >= low)
    if not ok:
        what = "a whole number" if whole else "a number"
        lo = f"above {low:g}" if low_open else f"from {low:g}"
        span = f"{lo} to {high:g}" if high < math.inf else lo.replace("from", "at least")
        raise ConfigError(f"{where}.{key}: {what} {span}, not {value!r}")
    return value


def _reject_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def _capability(raw: Any, index: int) -> CapabilityConfig:
    where = f"capability[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    allowed = {"name", "version", "max_concurrency", "bid", "timeout", "python", "command", "url"}
    allowed |= {"approve_at", "eta"}
    _reject_unknown(raw, allowed, where)
    if "name" not in raw:
        raise ConfigError(f"{where}: missing key 'name'")
    handlers = [k for k in ("python", "command", "url") if k in raw]
    if len(handlers) != 1:
        raise ConfigError(f"{where}: give exactly one handler: python, command or url")
    command = None
    if "command" in raw:
        cmd = _get(raw, "command", list, where)
        if not cmd or not all(isinstance(c, str) for c in cmd):
            raise ConfigError(f"{where}.command: a non-empty list of strings")
        command = tuple(cmd)
    python = _get(raw, "python", str, where) if "python" in raw else None
    if python is not None and ":" not in python:
        raise ConfigError(f"{where}.python: expected 'module:function', got {python!r}")
    url = _get(raw, "url", str, where) if "url" in raw else None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    approve_at = _get(raw, "approve_at", str, where) if "approve_at" in raw else None
    if approve_at is not None and approve_at not in RISK_LEVELS:
        levels = ", ".join(RISK_LEVELS)
        raise ConfigError(f"{where}.approve_at: {approve_at!r} is not one of {levels}")
    name = _get(raw, "name", str, where)
    if not 1 <= len(name) <= CAPABILITY_NAME_MAX:
        raise ConfigError(f"{where}.name: 1 to {CAPABILITY_NAME_MAX} characters")
    version = raw.get("version", "1")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)  # version = 1.2 (a TOML float) means "1.2"
    if not isinstance(version, str) or len(version) > 32:
        raise ConfigError(f'{where}.version: a version such as "1.2", not {version!r}')
    try:
        parse_version(version)
    except LocalProtocolError:
        raise ConfigError(
            f"{where}.version: {version!r} is not a version such as 1, 1.2 or 1.2.3"
        ) from None
    return CapabilityConfig(
        name=name,
        version=version,
        max_concurrency=_number(
            raw, "max_concurrency", where, 1, whole=True, low=1, high=MAX_CONCURRENCY_MAX
        ),
        bid=float(_number(raw, "bid", where, 1.0)),
        timeout=float(_number(raw, "timeout", where, 60.0, low_open=True)),
        eta=float(_number(raw, "eta", where, 1.0, low_open=True, high=86400.0))
        if "eta" in raw
        else None,
        python=python,
        command=command,
        url=url,
        approve_at=approve_at,
    )


def membership_table(data: dict[str, Any]) -> dict[str, Any]:
    """A node.toml's ``[membership]`` table with its preset (``node.preset`` or
    ``membership.preset``, not both; default lan): what ``tuned`` takes, and what
    ``mesh-node simulate --membership-from node.toml`` simulates."""
    node = data.get("node", {})
    raw = data.get("membership", {})
    if not isinstance(raw, dict) or not isinstance(node, dict):
        raise ConfigError("membership: use a [membership] table")
    if "preset" in node and "preset" in raw:
        raise ConfigError("node.preset and membership.preset: give the preset once")
    return {**raw, "preset": raw.get("preset", node.get("preset", "lan"))}


def parse_config(data: dict[str, Any], base: Path) -> DaemonConfig:
    _reject_unknown(data, {"node", "mdns", "limits", "capability", "membership", "audit"}, "config")
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError("config: missing [node] table")
    allowed = {"name", "identity", "certificate", "trust", "listen", "advertise", "seeds"}
    _reject_unknown(node, allowed | {"preset", "control_dir"}, "node")
    for key in ("name", "identity", "certificate", "trust"):
        if key not in node:
            raise ConfigError(f"node: missing key {key!r}")
    name = _get(node, "name", str, "node")
    seeds = node.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, str) for s in seeds):
        raise ConfigError("node.seeds: a list of tcp://host:port strings")
    advertise = node.get("advertise")
    if advertise is not None and not isinstance(advertise, str):
        raise ConfigError("node.advertise: a tcp://host:port string")
    listen = str(node.get("listen", "tcp://127.0.0.1:7001"))
    problem = endpoint_problem(listen, advertise, seeds)
    if problem is not None:
        key, value, why = problem
        if why == "not-tcp":  # peers drop it: a typo would leave the node alone, silently
            raise ConfigError(f"node.{key}: {value!r} is not tcp://host:port")
        if key == "advertise":
            raise ConfigError(f"node.advertise: {value!r} is not an address peers can dial")
        raise ConfigError(
            f"node.listen {value!r} binds every interface: set node.advertise to the "
            "tcp://ADDRESS:PORT peers should dial"
        )

    def path(key: str) -> Path:
        p = Path(_get(node, key, str, "node")).expanduser()
        return p if p.is_absolute() else (base / p)

    mdns_raw = data.get("mdns", {})
    _reject_unknown(mdns_raw, {"enabled", "interfaces"}, "mdns")
    enabled = mdns_raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"mdns.enabled: true or false, not {enabled!r}")
    interfaces = mdns_raw.get("interfaces", ["127.0.0.1"])
    if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
        raise ConfigError('mdns.interfaces: a list of addresses, e.g. ["192.168.1.10"]')
    mdns = MdnsConfig(enabled=enabled, interfaces=tuple(interfaces))
    lim_raw = data.get("limits", {})
    _reject_unknown(
        lim_raw, {"max_frame", "max_peers", "max_concurrency", "grace_seconds"}, "limits"
    )
    limits = LimitsConfig(
        max_frame=_number(lim_raw, "max_frame", "limits", 1 << 20, whole=True, low=64 << 10),
        max_peers=_number(lim_raw, "max_peers", "limits", 256, whole=True, low=1),
        max_concurrency=_number(lim_raw, "max_concurrency", "limits", 8, whole=True, low=1),
        grace_seconds=float(_number(lim_raw, "grace_seconds", "limits", 10.0)),
    )
    caps_raw = data.get("capability", [])
    if not isinstance(caps_raw, list):
        raise ConfigError("capability: use [[capability]] tables")
    caps = tuple(_capability(c, i) for i, c in enumerate(caps_raw))
    names = [c.name for c in caps]
    if len(set(names)) != len(names):
        raise ConfigError("capability: a name appears twice")
    audit_raw = data.get("audit", {})
    if not isinstance(audit_raw, dict):
        raise ConfigError("audit: use an [audit] table")
    _reject_unknown(audit_raw, {"path"}, "audit")
    audit = None
    if "path" in audit_raw:
        audit = Path(_get(audit_raw, "path", str, "audit")).expanduser()
        audit = audit if audit.is_absolute() else base / audit
    table = membership_table(data)
    preset = str(table["preset"])
    membership = tuned(table)
    control = node.get("control_dir")
    return DaemonConfig(
        name=name,
        identity=path("identity"),
        certificate=path("certificate"),
        trust=path("trust"),
        listen=listen,
        advertise=advertise,
        seeds=tuple(seeds),
        preset=preset,
        membership=membership,
        control_dir=(base / Path(control).expanduser()) if control else default_control_dir(name),
        mdns=mdns,
        limits=limits,
        capabilities=caps,
        source=base,
        audit=audit,
    )


def load_config(path: str | Path) -> DaemonConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    try:
        return parse_config(data, p.parent.resolve())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
