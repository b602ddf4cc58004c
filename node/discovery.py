"""mDNS / DNS-SD discovery with zeroconf's asyncio API.

Advertises ``_parley._tcp.local.`` with a small TXT record (node id, org,
protocol version, digest of the current capability record, endpoint) and
browses for the others. A discovered endpoint is only a hint: it is handed to
the core as a join candidate, and trust comes from the signed record.

Interfaces are always explicit (default: loopback); zeroconf is never told to
use every interface on its own. To advertise on a real LAN, list that LAN's
interface addresses in the config (``[mdns] interfaces``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from protocols.errors import TransportError

__all__ = ["PROTOCOL_VERSION", "SERVICE_TYPE", "MdnsDiscovery"]

SERVICE_TYPE = "_parley._tcp.local."
PROTOCOL_VERSION = "1"
log = logging.getLogger("parley.discovery")


def _split_tcp(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        raise TransportError(f"cannot advertise endpoint {endpoint!r}", code="bad-endpoint")
    return parts.hostname, parts.port


class MdnsDiscovery:
    """One advertisement and one browser on explicit interfaces."""

    def __init__(
        self,
        *,
        node_id: str,
        org: str,
        endpoint: str,
        interfaces: Sequence[str],
        on_candidate: Callable[[str, dict[str, str]], None],
        digest: str = "",
    ) -> None:
        if not interfaces:
            raise TransportError("mDNS needs at least one explicit interface", code="config")
        self.node_id = node_id
        self.org = org
        self.endpoint = endpoint
        self.interfaces = list(interfaces)
        self._on_candidate = on_candidate
        self._digest = digest
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.seen: dict[str, str] = {}  # node id -> endpoint

    @property
    def instance_name(self) -> str:
        return f"{self.node_id[:40]}.{SERVICE_TYPE}"

    def _properties(self) -> dict[str, str]:
        return {
            "id": self.node_id,
            "org": self.org,
            "v": PROTOCOL_VERSION,
            "d": self._digest[:16],
            "ep": self.endpoint,
        }

    def _service_info(self) -> AsyncServiceInfo:
        host, port = _split_tcp(self.endpoint)
        try:
            addr = ipaddress.ip_address(host)
            addresses = [addr.packed]
        except ValueError:
            addresses = [socket.inet_aton(socket.gethostbyname(host))]
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            addresses=addresses,
            port=port,
            properties=self._properties(),
            server=f"{self.node_id[:24]}.local.",
        )

    async def start(self) -> None:
        try:
            self._azc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
            self._info = self._service_info()
            await self._azc.async_register_service(self._info, allow_name_change=False)
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change]
            )
        except TransportError:
            await self.close()
            raise
        except Exception as exc:  # zeroconf raises many types (OSError, BadTypeInName, ...)
            await self.close()
            raise TransportError(f"mDNS start failed: {exc}", code="mdns") from exc

    async def update(self, digest: str) -> None:
        """Re-announce with the digest of a new capability record."""
        if self._azc is None or self._info is None or digest[:16] == self._digest[:16]:
            return
        self._digest = digest
        self._info = self._service_info()
        try:
            await self._azc.async_update_service(self._info)
        except Exception as exc:
            log.warning("mDNS update failed: %s", exc)

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        if name == self.instance_name:
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._azc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        try:
            ok = await info.async_request(self._azc.zeroconf, 3000)
        except Exception as exc:
            log.debug("mDNS resolve of %s failed: %s", name, exc)
            return
        if not ok:
            return
        props = _decode_props(info.properties)
        node_id = props.get("id", "")
        if node_id == self.node_id or props.get("v") != PROTOCOL_VERSION:
            return
        endpoint = props.get("ep", "")
        if not endpoint.startswith("tcp://"):
            addrs = info.parsed_addresses(IPVersion.V4Only)
            if not addrs or info.port is None:
                return
            endpoint = f"tcp://{addrs[0]}:{info.port}"
        self.seen[node_id] = endpoint
        self._on_candidate(endpoint, props)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            with contextlib.suppress(Exception):
                if self._info is not None:
                    await asyncio.wait_for(self._azc.async_unregister_service(self._info), 2)
            with contextlib.suppress(Exception):
                await self._azc.async_close()
            self._azc = None


def _decode_props(raw: dict[Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        if isinstance(v, bytes):
            out[key] = v.decode("utf-8", "replace")
        elif v is not None:
            out[key] = str(v)
    return out
