"""resolver.envconfig: BLOKIR_* environment variables over the config file, as containers use."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from resolver import cli
from resolver.config import Config, ConfigError, parse_config
from resolver.envconfig import ENV_VARIABLES, apply_env

CONFIG = """
[server]
listen = ["127.0.0.1:5353"]
workers = 2
[upstream]
servers = ["192.0.2.53"]
[blocking]
landing_ipv4 = "192.0.2.10"
[metrics]
listen = "127.0.0.1:9153"
[[lists]]
name = "l"
path = "l.txt"
"""


def config(text: str = CONFIG) -> Config:
    return parse_config(textwrap.dedent(text), "/etc/blokir/blokir.toml")


def env_error(environ: dict[str, str], text: str = CONFIG) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        apply_env(config(text), environ)
    return info.value


def test_no_variables_returns_the_config_unchanged() -> None:
    base = config()
    assert apply_env(base, {}) is base
    assert apply_env(base, {"HOME": "/root", "BLOKIR_VERIFY_SCREENSHOT_DIR": "/x"}) is base


def test_every_variable_overrides_its_setting() -> None:
    base = config()
    out = apply_env(
        base,
        {
            "BLOKIR_LISTEN": "0.0.0.0:53,[::]:53",
            "BLOKIR_WORKERS": "4",
            "BLOKIR_ALLOW": "10.0.0.0/8, 203.0.113.0/24",
            "BLOKIR_UPSTREAMS": "10.0.0.1,10.0.0.2:5353,[2001:db8::53]:53",
            "BLOKIR_METRICS_LISTEN": "0.0.0.0:9153",
            "BLOKIR_LANDING_IPV4": "203.0.113.80",
            "BLOKIR_LANDING_IPV6": "2001:DB8::80",
        },
    )
    assert out.server.listen == (("0.0.0.0", 53), ("::", 53))
    assert out.server.workers == 4
    assert out.server.allow == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("203.0.113.0/24"),
    )
    assert out.upstream.servers == (("10.0.0.1", 53), ("10.0.0.2", 5353), ("2001:db8::53", 53))
    assert out.metrics.listen == ("0.0.0.0", 9153)
    assert out.blocking.landing_ipv4 == "203.0.113.80"
    assert out.blocking.landing_ipv6 == "2001:db8::80"  # normalised as in the file
    # Everything else is the file's, and the original is untouched (frozen dataclasses).
    assert out.lists == base.lists and out.cache == base.cache and out.source == base.source
    assert out.upstream.timeout == base.upstream.timeout
    assert base.server.listen == (("127.0.0.1", 5353),) and base.server.workers == 2


def test_each_variable_alone_changes_only_its_setting() -> None:
    base = config()
    out = apply_env(base, {"BLOKIR_WORKERS": "3"})
    assert out.server.workers == 3
    assert out.server.listen == base.server.listen
    assert out.upstream == base.upstream and out.metrics == base.metrics


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_values_leave_the_file_setting(value: str) -> None:
    base = config()
    out = apply_env(base, {name: value for name in ENV_VARIABLES})
    assert out == base


def test_items_may_be_separated_by_commas_or_whitespace() -> None:
    out = apply_env(config(), {"BLOKIR_UPSTREAMS": " 10.0.0.1  10.0.0.2:53 ,10.0.0.3, "})
    assert out.upstream.servers == (("10.0.0.1", 53), ("10.0.0.2", 53), ("10.0.0.3", 53))


def test_workers_accepts_a_plus_sign() -> None:
    assert apply_env(config(), {"BLOKIR_WORKERS": "+8"}).server.workers == 8


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("BLOKIR_LISTEN", "0.0.0.0", "'0.0.0.0' has no port"),
        ("BLOKIR_LISTEN", "0.0.0.0:53,dns.example:53", "'dns.example' is not an IP address"),
        ("BLOKIR_LISTEN", "0.0.0.0:99999", "port 99999 is not between 0 and 65535"),
        ("BLOKIR_LISTEN", "[10.0.0.1]:53", "only IPv6 addresses go in brackets"),
        ("BLOKIR_LISTEN", "0.0.0.0:53,0.0.0.0:53", "'0.0.0.0:53' is listed twice"),
        ("BLOKIR_WORKERS", "0", "must be >= 1, got 0"),
        ("BLOKIR_WORKERS", "two", "expected an integer, got 'two'"),
        ("BLOKIR_WORKERS", "1.5", "expected an integer"),
        ("BLOKIR_ALLOW", "10.0.0.0/8,everyone", "'everyone' is not a CIDR network"),
        ("BLOKIR_UPSTREAMS", "10.0.0.1:0", "port 0 is not between 1 and 65535"),
        ("BLOKIR_UPSTREAMS", "resolver.isp.example", "host names are not allowed"),
        ("BLOKIR_UPSTREAMS", "10.0.0.1,10.0.0.1:53", "'10.0.0.1:53' is listed twice"),
        ("BLOKIR_METRICS_LISTEN", "0.0.0.0", "has no port"),
        ("BLOKIR_METRICS_LISTEN", "127.0.0.1:1,127.0.0.1:2", "takes one address, got 2"),
        ("BLOKIR_LANDING_IPV4", "2001:db8::1", "is an IPv6 address, expected IPv4"),
        ("BLOKIR_LANDING_IPV6", "landing", "'landing' is not an IPv6 address"),
    ],
)
def test_errors_name_the_variable(name: str, value: str, why: str) -> None:
    error = env_error({name: value})
    assert str(error).startswith(f"{name}: "), str(error)
    assert why in str(error)
    assert error.key == name and error.file is None and error.line is None


def test_an_upstream_that_is_our_own_listener_is_refused() -> None:
    error = env_error({"BLOKIR_UPSTREAMS": "127.0.0.1:5353"})
    assert str(error) == (
        "BLOKIR_UPSTREAMS: '127.0.0.1:5353' is blokir's own listen address (server.listen "
        "entry 127.0.0.1:5353); forwarding to it would loop"
    )
    error = env_error({"BLOKIR_LISTEN": "0.0.0.0:5300", "BLOKIR_UPSTREAMS": "127.0.0.1:5300"})
    assert error.key == "BLOKIR_UPSTREAMS"
    assert "(BLOKIR_LISTEN entry 0.0.0.0:5300)" in str(error)


def test_a_listen_address_that_the_files_upstream_would_reach_is_refused() -> None:
    # The file forwards to 192.0.2.53:53, which a wildcard listener does not reach: fine.
    assert apply_env(config(), {"BLOKIR_LISTEN": "0.0.0.0:53"}).server.listen == (("0.0.0.0", 53),)
    text = CONFIG.replace('servers = ["192.0.2.53"]', 'servers = ["127.0.0.1:53"]')
    error = env_error({"BLOKIR_LISTEN": "0.0.0.0:53"}, text)
    assert str(error) == (
        "BLOKIR_LISTEN: '0.0.0.0:53' would reach upstream.servers[0] ('127.0.0.1:53') of "
        "/etc/blokir/blokir.toml; forwarding to it would loop"
    )


def test_the_cli_applies_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "l.txt").write_text("blocked.example\n")
    path = tmp_path / "blokir.toml"
    path.write_text(textwrap.dedent(CONFIG))
    monkeypatch.setenv("BLOKIR_LISTEN", "127.0.0.1:5300")
    monkeypatch.setenv("BLOKIR_UPSTREAMS", "10.0.0.1")
    loaded = cli._config(str(path))
    assert loaded.server.listen == (("127.0.0.1", 5300),)
    assert loaded.upstream.servers == (("10.0.0.1", 53),)
    default = cli._config(None)  # the embedded default config too
    assert default.server.listen == (("127.0.0.1", 5300),)

    monkeypatch.setenv("BLOKIR_WORKERS", "zero")
    assert cli.main(["check", "-c", str(path), "blocked.example"]) == 2
    assert "blokir: BLOKIR_WORKERS: expected an integer, got 'zero'" in capsys.readouterr().err
