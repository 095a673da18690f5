"""Environment variables that override the config file, as containers and unit files expect.

`apply_env(config, os.environ)` returns a new `Config` with these settings replaced:

| Variable | Setting | Example |
|---|---|---|
| `BLOKIR_LISTEN` | `[server] listen` | `0.0.0.0:53,[::]:53` |
| `BLOKIR_WORKERS` | `[server] workers` | `4` |
| `BLOKIR_ALLOW` | `[server] allow` | `10.0.0.0/8,100.64.0.0/10` |
| `BLOKIR_UPSTREAMS` | `[upstream] servers` | `10.0.0.1,10.0.0.2:5353` |
| `BLOKIR_METRICS_LISTEN` | `[metrics] listen` | `0.0.0.0:9153` |
| `BLOKIR_LANDING_IPV4` | `[blocking] landing_ipv4` | `203.0.113.80` |
| `BLOKIR_LANDING_IPV6` | `[blocking] landing_ipv6` | `2001:db8::80` |

Lists are separated by commas (whitespace around items is ignored, and so is whitespace alone as a
separator). A variable that is unset, empty or only whitespace leaves the file's setting alone, so
`-e BLOKIR_UPSTREAMS=` in a compose file changes nothing. Other `BLOKIR_*` variables are not read.

Values are checked by the same rules as the TOML keys (the config package's ValueParsers), and an
error names the variable instead of a file and line, for example

    BLOKIR_LISTEN: '0.0.0.0' has no port (write "127.0.0.1:5353" or "[::1]:5353")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from resolver.config import (
    Address,
    Config,
    ConfigError,
    KeyPath,
    Network,
    ValueParsers,
    format_address,
    own_listener,
)

__all__ = ["ENV_VARIABLES", "apply_env"]

# Variable -> the config key it overrides (for messages and the README).
ENV_VARIABLES: dict[str, str] = {
    "BLOKIR_LISTEN": "server.listen",
    "BLOKIR_WORKERS": "server.workers",
    "BLOKIR_ALLOW": "server.allow",
    "BLOKIR_UPSTREAMS": "upstream.servers",
    "BLOKIR_METRICS_LISTEN": "metrics.listen",
    "BLOKIR_LANDING_IPV4": "blocking.landing_ipv4",
    "BLOKIR_LANDING_IPV6": "blocking.landing_ipv6",
}

_SEPARATORS = re.compile(r"[\s,]+")
_T = TypeVar("_T")


class _EnvParsers(ValueParsers):
    """The config file's value parsers, with errors that name the environment variable."""

    def error(self, path: KeyPath, why: str) -> ConfigError:
        return ConfigError(why, key=str(path[0]))


def apply_env(config: Config, environ: Mapping[str, str]) -> Config:
    """`config` with the settings named by `BLOKIR_*` variables in `environ` replaced.

    Raises ConfigError (naming the variable) for a value the config file would refuse too."""
    ctx = _EnvParsers()
    values = {
        name: environ[name].strip()
        for name in ENV_VARIABLES
        if name in environ and environ[name].strip()
    }
    if not values:
        return config

    server, upstream = config.server, config.upstream
    blocking, metrics = config.blocking, config.metrics

    if "BLOKIR_LISTEN" in values:
        listen = _items(ctx, "BLOKIR_LISTEN", values["BLOKIR_LISTEN"], _listen_parser(ctx))
        server = replace(server, listen=tuple(listen))
    if "BLOKIR_WORKERS" in values:
        server = replace(server, workers=_workers(values["BLOKIR_WORKERS"]))
    if "BLOKIR_ALLOW" in values:
        allow: list[Network] = _items(ctx, "BLOKIR_ALLOW", values["BLOKIR_ALLOW"], ctx.network)
        server = replace(server, allow=tuple(allow))
    if "BLOKIR_UPSTREAMS" in values:
        servers = _items(
            ctx,
            "BLOKIR_UPSTREAMS",
            values["BLOKIR_UPSTREAMS"],
            lambda path, value: ctx.host_port(path, value, required_port=False),
        )
        upstream = replace(upstream, servers=tuple(servers))
    if "BLOKIR_METRICS_LISTEN" in values:
        found = _items(
            ctx, "BLOKIR_METRICS_LISTEN", values["BLOKIR_METRICS_LISTEN"], _listen_parser(ctx)
        )
        if len(found) != 1:
            raise ConfigError(
                f"takes one address, got {len(found)} ({values['BLOKIR_METRICS_LISTEN']!r})",
                key="BLOKIR_METRICS_LISTEN",
            )
        metrics = replace(metrics, listen=found[0])
    if "BLOKIR_LANDING_IPV4" in values:
        ipv4 = ctx.address(("BLOKIR_LANDING_IPV4",), values["BLOKIR_LANDING_IPV4"], 4)
        blocking = replace(blocking, landing_ipv4=ipv4)
    if "BLOKIR_LANDING_IPV6" in values:
        ipv6 = ctx.address(("BLOKIR_LANDING_IPV6",), values["BLOKIR_LANDING_IPV6"], 6)
        blocking = replace(blocking, landing_ipv6=ipv6)

    _check_loop(server.listen, upstream.servers, values, config.source)
    return replace(config, server=server, upstream=upstream, blocking=blocking, metrics=metrics)


def _listen_parser(ctx: _EnvParsers) -> Callable[[KeyPath, object], Address]:
    return lambda path, value: ctx.host_port(path, value, required_port=True)


def _items(
    ctx: _EnvParsers, name: str, text: str, parse: Callable[[KeyPath, object], _T]
) -> list[_T]:
    """A comma (or whitespace) separated value, each item parsed; duplicates are errors."""
    items = [item for item in _SEPARATORS.split(text) if item]
    out: list[_T] = []
    for index, item in enumerate(items):
        value = parse((name, index), item)
        if value in out:
            raise ConfigError(f"{item!r} is listed twice", key=name)
        out.append(value)
    return out


def _workers(text: str) -> int:
    if not text.isascii() or not text.lstrip("+").isdigit():
        raise ConfigError(f"expected an integer, got {text!r}", key="BLOKIR_WORKERS")
    workers = int(text)
    if workers < 1:
        raise ConfigError(f"must be >= 1, got {workers}", key="BLOKIR_WORKERS")
    return workers


def _check_loop(
    listen: tuple[Address, ...],
    servers: tuple[Address, ...],
    values: Mapping[str, str],
    source: Path,
) -> None:
    """The config file's rule, after the overrides: an upstream must not be our own listener."""
    for index, server in enumerate(servers):
        own = own_listener(server, listen)
        if own is None:
            continue
        shown = format_address(server)
        if "BLOKIR_UPSTREAMS" in values:
            where = "BLOKIR_LISTEN" if "BLOKIR_LISTEN" in values else "server.listen"
            raise ConfigError(
                f"'{shown}' is blokir's own listen address ({where} entry "
                f"{format_address(listen[own])}); forwarding to it would loop",
                key="BLOKIR_UPSTREAMS",
            )
        raise ConfigError(
            f"'{format_address(listen[own])}' would reach upstream.servers[{index}] ('{shown}') "
            f"of {source}; forwarding to it would loop",
            key="BLOKIR_LISTEN",
        )
