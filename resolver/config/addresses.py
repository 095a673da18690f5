"""Addresses in the configuration: the types, how they are shown, and resolv.conf's nameservers."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from resolver.config.locator import ConfigError

__all__ = [
    "RESOLV_CONF",
    "Address",
    "Network",
    "TlsServer",
    "format_address",
    "own_listener",
    "resolv_conf_servers",
]

RESOLV_CONF = "/etc/resolv.conf"

Address = tuple[str, int]  # (IP address text without brackets, port)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TlsServer(NamedTuple):
    """A DNS-over-TLS upstream (`tls://ip:port#name`): where it is and the name its
    certificate must be valid for (RFC 8310 section 8's authentication domain name)."""

    host: str
    port: int
    name: str

    def __str__(self) -> str:
        return f"tls://{format_address((self.host, self.port))}#{self.name}"


def format_address(address: Address) -> str:
    """`("::1", 53)` -> `[::1]:53`, `("192.0.2.1", 53)` -> `192.0.2.1:53`."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def own_listener(server: Address, listen: Sequence[Address]) -> int | None:
    """The index of the listen address `server` would reach, if it is one of ours."""
    host, port = server
    address = ipaddress.ip_address(host)
    for index, (lhost, lport) in enumerate(listen):
        if lport != port or lport == 0:
            continue
        laddress = ipaddress.ip_address(lhost)
        if laddress == address:
            return index
        # A wildcard listener answers on every local address; loopback is surely local.
        if laddress.is_unspecified and address.is_loopback and laddress.version == address.version:
            return index
    return None


def resolv_conf_servers(path: str | Path = RESOLV_CONF) -> list[Address]:
    """The `nameserver` addresses of a resolv.conf, in order, each with port 53.

    Comments (`#` or `;`, whole-line or trailing) are ignored, as are nameserver lines whose
    address does not parse (glibc skips those too). IPv6 addresses may carry a `%scope`."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"cannot read ({exc.strerror or exc}); set [upstream] servers in the config",
            file=str(path),
        ) from exc
    servers: list[Address] = []
    for line in text.splitlines():
        words = re.split(r"[#;]", line, maxsplit=1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = str(ipaddress.ip_address(words[1]))
        except ValueError:
            continue
        if (address, 53) not in servers:
            servers.append((address, 53))
    if not servers:
        raise ConfigError(
            "no usable 'nameserver' lines; set [upstream] servers in the config, "
            'e.g. servers = ["192.0.2.53"]',
            file=str(path),
        )
    return servers
