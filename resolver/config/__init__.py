"""The configuration file: TOML in, frozen and validated dataclasses out.

- schema.py: every section and key, declared once (type, default, range or choices, description)
- validate.py: parsed TOML -> `Config`, with the schema's defaults and ranges
- locator.py: `ConfigError` and the line a key path is written on, for messages such as
  `blokir.toml:12 lists[2].action: 'nxdomian' is not one of landing, nxdomain, nodata, refused`
- addresses.py: listen and upstream addresses, and resolv.conf's nameservers
- docs.py: docs/configuration.md, written from the schema (`python -m resolver.config.docs`)

Every name importers use is re-exported here, so `from resolver.config import X` is the API.
"""

from __future__ import annotations

from pathlib import Path

from resolver.config.addresses import (
    RESOLV_CONF,
    Address,
    Network,
    TlsServer,
    format_address,
    own_listener,
    resolv_conf_servers,
)
from resolver.config.locator import ConfigError, KeyPath, Locator, format_key_path
from resolver.config.schema import (
    DEFAULT_ALLOW,
    LIST_ACTIONS,
    MAX_SDE_TEXT,
    MAX_TTL,
    SCHEMA,
    SECTION_KEYS,
    SECTIONS,
    AllowlistConfig,
    BlockingConfig,
    CacheConfig,
    Config,
    GroupConfig,
    KeySpec,
    LandingConfig,
    ListConfig,
    ListSource,
    MetricsConfig,
    QueryLogConfig,
    RpzConfig,
    Section,
    ServerConfig,
    Setting,
    TsigKey,
    UpdatesConfig,
    UpstreamConfig,
)
from resolver.config.validate import ValueParsers, load_config, parse_config

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_CONFIG_PATH",
    "LIST_ACTIONS",
    "MAX_SDE_TEXT",
    "MAX_TTL",
    "RESOLV_CONF",
    "SCHEMA",
    "SECTIONS",
    "SECTION_KEYS",
    "Address",
    "AllowlistConfig",
    "BlockingConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "GroupConfig",
    "KeyPath",
    "KeySpec",
    "LandingConfig",
    "ListConfig",
    "ListSource",
    "Locator",
    "MetricsConfig",
    "Network",
    "QueryLogConfig",
    "RpzConfig",
    "Section",
    "ServerConfig",
    "Setting",
    "TlsServer",
    "TsigKey",
    "UpdatesConfig",
    "UpstreamConfig",
    "ValueParsers",
    "format_address",
    "format_key_path",
    "load_config",
    "load_default_config",
    "own_listener",
    "parse_config",
    "resolv_conf_servers",
]

# The repository's config/blokir.toml. Here rather than in a submodule so that it is one
# attribute of the package that load_default_config reads at call time (tests point it elsewhere).
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent.parent / "config" / "blokir.toml"


def load_default_config() -> Config:
    """The config shipped in the repository (`config/blokir.toml`)."""
    if not DEFAULT_CONFIG_PATH.is_file():
        raise ConfigError(
            "the default config file is missing (it ships in the source tree, not in an "
            "installed wheel); pass a config file with --config, e.g. "
            "--config /etc/blokir/blokir.toml",
            file=str(DEFAULT_CONFIG_PATH),
        )
    return load_config(DEFAULT_CONFIG_PATH)
