"""resolver.config: parsing, defaults, and error messages that point at the right line."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import config as config_module
from resolver.config import (
    DEFAULT_CONFIG_PATH,
    AllowlistConfig,
    BlockingConfig,
    CacheConfig,
    Config,
    ConfigError,
    ListConfig,
    MetricsConfig,
    ServerConfig,
    UpstreamConfig,
    load_config,
    load_default_config,
    parse_config,
    resolv_conf_servers,
)
from resolver.policy import Action, Ede, MatchMode

DATA = Path(__file__).resolve().parent.parent / "data" / "config"


def parse(text: str, path: str | Path = "blokir.toml") -> Config:
    return parse_config(textwrap.dedent(text).lstrip("\n"), path)


def error_of(text: str, path: str | Path = "blokir.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Valid configs


def test_default_config_loads() -> None:
    package_dir = Path(config_module.__file__).resolve().parent.parent  # resolver/config/..
    assert package_dir.parent / "config" / "blokir.toml" == DEFAULT_CONFIG_PATH
    cfg = load_default_config()
    repo = DEFAULT_CONFIG_PATH.parent.parent
    assert cfg.source == DEFAULT_CONFIG_PATH
    assert cfg.server.listen == (("127.0.0.1", 5353),)
    assert cfg.server.workers == 1
    assert cfg.upstream.servers == ()
    assert cfg.blocking.landing_ipv4 == "192.0.2.10"
    assert cfg.blocking.landing_ipv6 == "2001:db8::10"
    assert cfg.blocking.index_path == DEFAULT_CONFIG_PATH.parent / "blokir.blkx"
    assert cfg.metrics == MetricsConfig(enabled=True, listen=("127.0.0.1", 9153), top_k=20)
    assert cfg.server == ServerConfig()  # the file spells out the defaults
    assert cfg.cache == CacheConfig()

    specs = cfg.list_specs()
    assert [(s.name, s.list_index) for s in specs] == [
        ("exceptions", 0),
        ("trustpositif-sample", 1),
        ("ads-hosts", 2),
        ("adblock-sample", 3),
        ("rpz-sample", 4),
    ]
    assert [Path(s.path) for s in specs] == [
        repo / "blocklists" / name
        for name in (
            "sample-allow.txt",
            "sample-domains.txt",
            "sample-hosts.txt",
            "sample-adblock.txt",
            "sample-rpz.rpz",
        )
    ]
    by_name = {s.name: s for s in specs}
    assert by_name["exceptions"].action is Action.ALLOW
    assert by_name["exceptions"].ede is Ede.NONE
    assert by_name["trustpositif-sample"].category == "negative-content"
    assert by_name["trustpositif-sample"].ede is Ede.CENSORED
    assert by_name["ads-hosts"].ede is Ede.BLOCKED
    assert by_name["adblock-sample"].ede is Ede.FILTERED
    assert by_name["rpz-sample"].format == "rpz"
    assert by_name["rpz-sample"].category == "fintech-illegal"
    assert all(s.landing_ipv4 == () and s.landing_ipv6 == () for s in specs)


def test_missing_default_config_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "blokir.toml")
    with pytest.raises(ConfigError, match=r"default config file is missing.*--config"):
        load_default_config()


def test_list_only_config_takes_every_default() -> None:
    cfg = load_config(DATA / "minimal.toml")
    assert cfg.server == ServerConfig()
    assert cfg.upstream == UpstreamConfig()
    assert cfg.cache == CacheConfig()
    assert cfg.metrics == MetricsConfig()
    assert cfg.blocking.landing_ipv4 is None
    assert cfg.blocking.ttl == 60
    assert cfg.blocking.index_path == DATA / "blokir.blkx"
    assert cfg.blocking.soa_mname == "blokir.invalid."
    assert cfg.lists == (ListConfig(name="regulator", path=DATA / "lists" / "domains.txt"),)
    assert cfg.allowlists == ()
    assert cfg.server.udp_payload_size == 1232
    assert cfg.server.allows("192.168.1.20")
    assert cfg.server.allows("100.64.3.4")
    assert cfg.server.allows("fd00::1")
    assert not cfg.server.allows("8.8.8.8")
    assert not cfg.server.allows("not an address")


def test_empty_config_is_valid() -> None:
    cfg = parse("")
    assert cfg.lists == () and cfg.allowlists == ()
    assert cfg.list_specs() == []


def test_every_key_parses() -> None:
    cfg = load_config(DATA / "full.toml")
    assert cfg.server == ServerConfig(
        listen=(("0.0.0.0", 53), ("::", 53), ("fe80::1%eth0", 5300)),
        workers=8,
        tcp_idle_timeout=5.0,
        tcp_max_connections=4096,
        allow=(
            ipaddress.ip_network("100.64.0.0/10"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("198.51.100.7/32"),
        ),
        udp_payload_size=1400,
    )
    assert isinstance(cfg.server.tcp_idle_timeout, float)
    assert cfg.upstream == UpstreamConfig(
        servers=(
            ("192.0.2.53", 53),
            ("198.51.100.53", 5353),
            ("2001:db8::53", 53),
            ("2001:db8::54", 53),
        ),
        timeout=0.5,
        attempts=3,
    )
    assert cfg.blocking == BlockingConfig(
        landing_ipv4="203.0.113.80",
        landing_ipv6="2001:db8::80",  # normalised
        ttl=300,
        index_path=Path("/var/lib/blokir/index.blkx"),
        contact="mailto:abuse@isp.example",
        justification="Blocked under national regulation",
        organisation="Example ISP",
        soa_mname="ns.isp.example.",  # trailing dot added
        soa_rname="hostmaster.isp.example.",
    )
    assert cfg.cache == CacheConfig(
        max_entries=0,
        max_bytes=1048576,
        min_ttl=30,
        max_ttl=3600,
        negative_ttl_max=900,
        servfail_ttl=0,
    )
    assert cfg.metrics == MetricsConfig(enabled=False, listen=("::1", 9100), top_k=0)
    assert cfg.lists == (
        ListConfig(
            name="regulator",
            path=Path("/srv/lists/domains.txt"),
            category="negative-content",
            action=Action.NXDOMAIN,
            ede=Ede.CENSORED,
            match=MatchMode.EXACT,
            format="plain",
        ),
        ListConfig(
            name="gambling",
            path=DATA / "gambling.hosts",
            category="gambling",
            format="hosts",
            landing_ipv4=("203.0.113.81",),
            landing_ipv6=("2001:db8::81", "2001:db8::82"),
        ),
    )
    assert cfg.allowlists == (
        AllowlistConfig(
            name="exceptions",
            path=DATA / "allow.txt",
            category="exceptions",
            match=MatchMode.EXACT,
            format="adblock",
        ),
    )
    # Explicit servers: resolv.conf is not read at all.
    assert cfg.upstream_servers(resolv_conf=DATA / "does-not-exist") == list(cfg.upstream.servers)


def test_config_is_frozen() -> None:
    cfg = load_config(DATA / "minimal.toml")
    with pytest.raises(AttributeError):
        cfg.server.workers = 2  # type: ignore[misc]


def test_list_specs_order_and_index() -> None:
    cfg = parse(
        """
        [blocking]
        landing_ipv4 = "192.0.2.10"

        [[lists]]
        name = "first"
        path = "a.txt"
        landing_ipv4 = ["192.0.2.77"]

        [[lists]]
        name = "second"
        path = "b.txt"
        action = "refused"
        ede = "none"

        [[allowlists]]
        name = "allow-one"
        path = "c.txt"

        [[allowlists]]
        name = "allow-two"
        path = "d.txt"
        match = "exact"
        """
    )
    specs = cfg.list_specs()
    assert [(s.name, s.list_index, s.action) for s in specs] == [
        ("allow-one", 0, Action.ALLOW),
        ("allow-two", 1, Action.ALLOW),
        ("first", 2, Action.LANDING),
        ("second", 3, Action.REFUSED),
    ]
    assert all(s.is_allowlist == (s.ede is Ede.NONE) for s in specs[:2])
    assert specs[1].match is MatchMode.EXACT
    assert specs[2].landing_ipv4 == ("192.0.2.77",)  # the per-list override only
    assert specs[3].landing_ipv4 == ()  # global landing address is not copied in
    assert specs[3].ede is Ede.NONE
    assert all(Path(s.path).is_absolute() for s in specs)


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "blokir"
    conf_dir.mkdir(parents=True)
    conf = conf_dir / "blokir.toml"
    conf.write_text(
        textwrap.dedent(
            """
            [blocking]
            index_path = "../../var/index.blkx"

            [[lists]]
            name = "a"
            path = "lists/a.txt"

            [[lists]]
            name = "b"
            path = "/abs/b.txt"

            [[allowlists]]
            name = "c"
            path = "../allow.txt"
            """
        )
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter...
    cfg = load_config(Path("etc/blokir/blokir.toml"))  # ...even for a relative config path
    base = conf_dir.resolve()
    assert cfg.source == conf.resolve()
    assert cfg.lists[0].path == base / "lists" / "a.txt"
    assert cfg.lists[1].path == Path("/abs/b.txt")
    assert cfg.allowlists[0].path == base.parent / "allow.txt"
    assert cfg.blocking.index_path == tmp_path.resolve() / "var" / "index.blkx"
    # parse_config resolves against the directory of the path it is given, too.
    cfg2 = parse_config(conf.read_text(), conf_dir / "other.toml")
    assert cfg2.lists[0].path == base / "lists" / "a.txt"


def test_landing_override_accepts_a_string_and_dedups() -> None:
    cfg = parse(
        """
        [[lists]]
        name = "x"
        path = "x.txt"
        landing_ipv4 = "192.0.2.1"
        landing_ipv6 = ["2001:db8::1", "2001:DB8::1", "2001:db8::2"]
        """
    )
    assert cfg.lists[0].landing_ipv4 == ("192.0.2.1",)
    assert cfg.lists[0].landing_ipv6 == ("2001:db8::1", "2001:db8::2")


def test_enum_values_are_case_insensitive_and_empty_landing_means_none() -> None:
    cfg = parse(
        """
        [blocking]
        landing_ipv4 = ""

        [[lists]]
        name = "x"
        path = "x.txt"
        action = "NXDOMAIN"
        ede = "Censored"
        """
    )
    assert cfg.blocking.landing_ipv4 is None
    assert cfg.lists[0].action is Action.NXDOMAIN
    assert cfg.lists[0].ede is Ede.CENSORED


# ---------------------------------------------------------------------------------------------
# Errors: exact message, right line


def test_bad_action_in_third_list_points_at_its_line() -> None:
    path = DATA / "bad-action.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:17 lists[2].action: 'nxdomian' is not one of landing, nxdomain, nodata, refused"
    )
    assert info.value.file == str(path)
    assert info.value.line == 17
    assert info.value.key == "lists[2].action"
    assert info.value.why.startswith("'nxdomian'")


def test_unknown_key_suggests_the_right_one() -> None:
    path = DATA / "unknown-key.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:3 server.listn: unknown key (did you mean 'listen'?)"


def test_toml_syntax_error_reports_tomllib_line() -> None:
    path = DATA / "syntax-error.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}:6: TOML syntax error: Unclosed array (at line 6, column 1)")
    assert info.value.line == 6


def test_syntax_error_at_end_of_document_uses_the_last_line() -> None:
    assert error_of('[server]\nlisten = ["127.0.0.1:53"\n\n') == (
        "blokir.toml:2: TOML syntax error: Unclosed array (at end of document)"
    )


ERROR_CASES = [
    # --- top level
    ("[sever]\nworkers = 2\n", "blokir.toml:1 sever: unknown section (did you mean 'server'?)"),
    ("[[list]]\nname = 'x'\n", "blokir.toml:1 list: unknown section (did you mean 'lists'?)"),
    (
        "[frobnicate]\n",
        "blokir.toml:1 frobnicate: unknown section "
        "(expected one of server, upstream, blocking, cache, metrics, landing, updates, querylog, "
        "rpz, allowlists, lists, groups)",
    ),
    (
        "workers = 2\n",
        "blokir.toml:1 workers: unknown top-level key (did you mean to put it under [server]?)",
    ),
    ("server = 5\n", "blokir.toml:1 server: expected a table ([server]), got integer 5"),
    (
        "[lists]\nname = 'x'\n",
        "blokir.toml:1 lists: expected an array of tables ([[lists]]), got table",
    ),
    ("lists = ['a.txt']\n", "blokir.toml:1 lists[0]: expected a table, got string 'a.txt'"),
    # --- [server]
    (
        "[server]\nlistn = []\n",
        "blokir.toml:2 server.listn: unknown key (did you mean 'listen'?)",
    ),
    (
        "[server]\nlisten = '127.0.0.1:53'\n",
        "blokir.toml:2 server.listen: expected an array, got string '127.0.0.1:53'",
    ),
    ("[server]\nlisten = []\n", "blokir.toml:2 server.listen: must name at least one address"),
    (
        '[server]\nlisten = [\n  "127.0.0.1:53",\n  "127.0.0.1",\n]\n',
        "blokir.toml:4 server.listen[1]: '127.0.0.1' has no port "
        '(write "127.0.0.1:5353" or "[::1]:5353")',
    ),
    (
        '[server]\nlisten = ["localhost:53"]\n',
        "blokir.toml:2 server.listen[0]: 'localhost:53': 'localhost' is not an IP address "
        "(host names are not allowed)",
    ),
    (
        '[server]\nlisten = ["127.0.0.1:70000"]\n',
        "blokir.toml:2 server.listen[0]: '127.0.0.1:70000': port 70000 is not between 0 and 65535",
    ),
    (
        '[server]\nlisten = ["127.0.0.1:dns"]\n',
        "blokir.toml:2 server.listen[0]: '127.0.0.1:dns': port 'dns' is not a number",
    ),
    (
        '[server]\nlisten = ["[::1:53"]\n',
        "blokir.toml:2 server.listen[0]: '[::1:53' has '[' without ']' "
        '(write "127.0.0.1:5353" or "[::1]:5353")',
    ),
    (
        '[server]\nlisten = ["[127.0.0.1]:53"]\n',
        "blokir.toml:2 server.listen[0]: '[127.0.0.1]:53': only IPv6 addresses go in brackets",
    ),
    (
        "[server]\nlisten = [53]\n",
        'blokir.toml:2 server.listen[0]: expected a string such as "127.0.0.1:5353" or '
        '"[::1]:5353", got integer 53',
    ),
    (
        '[server]\nlisten = ["[::1]:53", "[0:0::1]:53"]\n',
        "blokir.toml:2 server.listen[1]: '[::1]:53' is listed twice (first at listen[0])",
    ),
    ("[server]\nworkers = 0\n", "blokir.toml:2 server.workers: must be >= 1, got 0"),
    (
        "[server]\nworkers = '4'\n",
        "blokir.toml:2 server.workers: expected an integer, got string '4'",
    ),
    (
        "[server]\nworkers = true\n",
        "blokir.toml:2 server.workers: expected an integer, got boolean true",
    ),
    (
        "[server]\nworkers = 1.5\n",
        "blokir.toml:2 server.workers: expected an integer, got float 1.5",
    ),
    (
        "[server]\ntcp_idle_timeout = 0\n",
        "blokir.toml:2 server.tcp_idle_timeout: must be a finite number > 0, got 0",
    ),
    (
        "[server]\ntcp_idle_timeout = nan\n",
        "blokir.toml:2 server.tcp_idle_timeout: must be a finite number > 0, got nan",
    ),
    (
        "[server]\ntcp_idle_timeout = '10s'\n",
        "blokir.toml:2 server.tcp_idle_timeout: expected a number (seconds), got string '10s'",
    ),
    (
        "[server]\ntcp_max_connections = 0\n",
        "blokir.toml:2 server.tcp_max_connections: must be >= 1, got 0",
    ),
    (
        "[server]\nallow = ['10.0.0.0/8', '10.0.0.0/33']\n",
        "blokir.toml:2 server.allow[1]: '10.0.0.0/33' is not a CIDR network "
        'such as "10.0.0.0/8" or "fc00::/7"',
    ),
    (
        "[server]\nallow = [10]\n",
        'blokir.toml:2 server.allow[0]: expected a CIDR string such as "10.0.0.0/8", '
        "got integer 10",
    ),
    (
        "[server]\nallow = []\n",
        "blokir.toml:2 server.allow: an empty list refuses every client; to answer everyone "
        '(an open resolver) write allow = ["0.0.0.0/0", "::/0"]',
    ),
    (
        "[server]\nudp_payload_size = 4097\n",
        "blokir.toml:2 server.udp_payload_size: must be between 512 and 4096, got 4097",
    ),
    # --- [upstream]
    (
        "[upstream]\nservers = ['dns.google']\n",
        "blokir.toml:2 upstream.servers[0]: 'dns.google': 'dns.google' is not an IP address "
        "(host names are not allowed)",
    ),
    (
        "[upstream]\nservers = ['192.0.2.1:0']\n",
        "blokir.toml:2 upstream.servers[0]: '192.0.2.1:0': port 0 is not between 1 and 65535",
    ),
    (
        "[upstream]\nservers = ['192.0.2.1', '192.0.2.1:53']\n",
        "blokir.toml:2 upstream.servers[1]: '192.0.2.1:53' is listed twice (first at servers[0])",
    ),
    (
        "[upstream]\nservers = ['127.0.0.1:5353']\n",
        "blokir.toml:2 upstream.servers[0]: '127.0.0.1:5353' is blokir's own listen address "
        "(server.listen[0]); forwarding to it would loop",
    ),
    (
        "[server]\nlisten = ['0.0.0.0:53']\n[upstream]\nservers = ['127.0.0.1']\n",
        "blokir.toml:4 upstream.servers[0]: '127.0.0.1:53' is blokir's own listen address "
        "(server.listen[0]); forwarding to it would loop",
    ),
    (
        "[upstream]\ntimeout = -1\n",
        "blokir.toml:2 upstream.timeout: must be a finite number > 0, got -1",
    ),
    ("[upstream]\nattempts = 0\n", "blokir.toml:2 upstream.attempts: must be >= 1, got 0"),
    # --- [blocking]
    (
        "[blocking]\nlanding_ipv4 = '2001:db8::1'\n",
        "blokir.toml:2 blocking.landing_ipv4: '2001:db8::1' is an IPv6 address, expected IPv4",
    ),
    (
        "[blocking]\nlanding_ipv6 = 'landing.example'\n",
        "blokir.toml:2 blocking.landing_ipv6: 'landing.example' is not an IPv6 address",
    ),
    (
        "[blocking]\nlanding_ipv4 = 10\n",
        "blokir.toml:2 blocking.landing_ipv4: expected an IPv4 address string, got integer 10",
    ),
    (
        "[blocking]\nttl = 86401\n",
        "blokir.toml:2 blocking.ttl: must be between 0 and 86400, got 86401",
    ),
    ("[blocking]\nttl = -1\n", "blokir.toml:2 blocking.ttl: must be between 0 and 86400, got -1"),
    (
        "[blocking]\nindex_path = 5\n",
        "blokir.toml:2 blocking.index_path: expected a string, got integer 5",
    ),
    (
        "[blocking]\ncontact = 'call the NOC'\n",
        "blokir.toml:2 blocking.contact: 'call the NOC' is not a URI; write e.g. "
        '"mailto:abuse@example.net", "tel:+62-21-555-0100" or "https://example.net/blocked"',
    ),
    (
        f"[blocking]\njustification = '{'x' * 300}'\n",
        "blokir.toml:2 blocking.justification: is 300 characters long, at most 256 fit",
    ),
    (
        "[blocking]\norganisation = ['ISP']\n",
        "blokir.toml:2 blocking.organisation: expected a string, got array",
    ),
    (
        "[blocking]\nsoa_mname = 'bad..name'\n",
        "blokir.toml:2 blocking.soa_mname: 'bad..name' is not a domain name "
        "such as 'blokir.invalid.'",
    ),
    (
        "[blocking]\nsoa_rname = 'host master.example.'\n",
        "blokir.toml:2 blocking.soa_rname: 'host master.example.' is not a domain name "
        "such as 'hostmaster.blokir.invalid.'",
    ),
    # --- [cache]
    ("[cache]\nmax_entries = -1\n", "blokir.toml:2 cache.max_entries: must be >= 0, got -1"),
    ("[cache]\nmax_bytes = -1\n", "blokir.toml:2 cache.max_bytes: must be >= 0, got -1"),
    (
        "[cache]\nmin_ttl = 600\nmax_ttl = 60\n",
        "blokir.toml:3 cache.max_ttl: must be >= cache.min_ttl (600), got 60",
    ),
    (
        "[cache]\nmin_ttl = -5\n",
        "blokir.toml:2 cache.min_ttl: must be between 0 and 2147483647, got -5",
    ),
    (
        "[cache]\nnegative_ttl_max = -1\n",
        "blokir.toml:2 cache.negative_ttl_max: must be between 0 and 2147483647, got -1",
    ),
    (
        "[cache]\nservfail_ttl = 301\n",
        "blokir.toml:2 cache.servfail_ttl: must be between 0 and 300, got 301",
    ),
    # --- [metrics]
    (
        "[metrics]\nenabled = 'yes'\n",
        "blokir.toml:2 metrics.enabled: expected a boolean (true or false), got string 'yes'",
    ),
    (
        "[metrics]\nlisten = ['127.0.0.1:9153']\n",
        'blokir.toml:2 metrics.listen: expected a string such as "127.0.0.1:5353" or '
        '"[::1]:5353", got array',
    ),
    (
        "[metrics]\nlisten = '127.0.0.1'\n",
        "blokir.toml:2 metrics.listen: '127.0.0.1' has no port "
        '(write "127.0.0.1:5353" or "[::1]:5353")',
    ),
    (
        "[metrics]\ntop_k = 1001\n",
        "blokir.toml:2 metrics.top_k: must be between 0 and 1000, got 1001",
    ),
    # --- [[lists]]
    (
        "[[lists]]\nname = 'a'\npath = 'a.txt'\n\n[[lists]]\npath = 'b.txt'\n",
        "blokir.toml:5 lists[1].name: required key is missing",
    ),
    ("[[lists]]\nname = 'a'\n", "blokir.toml:1 lists[0].path: required key is missing"),
    ("[[lists]]\nname = ''\npath = 'a'\n", "blokir.toml:2 lists[0].name: must not be empty"),
    ("[[lists]]\nname = 'a'\npath = ' '\n", "blokir.toml:3 lists[0].path: must not be empty"),
    (
        "[[lists]]\nname = 'my list'\npath = 'a'\n",
        "blokir.toml:2 lists[0].name: 'my list' may only contain letters, digits, '_', '.' and '-'",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\ncategory = ''\n",
        "blokir.toml:4 lists[0].category: must not be empty",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nede = 'censor'\n",
        "blokir.toml:4 lists[0].ede: 'censor' is not one of blocked, censored, filtered, none",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nmatch = 'prefix'\n",
        "blokir.toml:4 lists[0].match: 'prefix' is not one of subtree, exact",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nformat = 'csv'\n",
        "blokir.toml:4 lists[0].format: 'csv' is not one of auto, plain, hosts, adblock, rpz, "
        "dnsmasq, unbound",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\naction = 'drop'\n",
        "blokir.toml:4 lists[0].action: 'drop' is not one of landing, nxdomain, nodata, refused",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\naction = 1\n",
        "blokir.toml:4 lists[0].action: expected a string, got integer 1",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nlanding_ipv4 = [\n  '192.0.2.1',\n  '::1',\n]\n",
        "blokir.toml:6 lists[0].landing_ipv4[1]: '::1' is an IPv6 address, expected IPv4",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nlanding_ipv6 = {addr = '::1'}\n",
        "blokir.toml:4 lists[0].landing_ipv6: expected an IPv6 address string or an array of "
        "them, got table",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\naction = 'nxdomain'\nlanding_ipv4 = '192.0.2.1'\n",
        'blokir.toml:5 lists[0].landing_ipv4: only used with action = "landing" '
        "(this list's action is nxdomain)",
    ),
    (
        "[[lists]]\nname = 'a'\npath = 'a'\nactoin = 'nxdomain'\n",
        "blokir.toml:4 lists[0].actoin: unknown key (did you mean 'action'?)",
    ),
    # --- [[allowlists]]
    (
        "[[allowlists]]\nname = 'a'\npath = 'a'\naction = 'allow'\n",
        "blokir.toml:4 allowlists[0].action: not used in an allowlist (its names are always "
        "allowed; move the list to [[lists]] to block them)",
    ),
    ("[[allowlists]]\npath = 'a'\n", "blokir.toml:1 allowlists[0].name: required key is missing"),
    # --- duplicate names, across lists and allowlists
    (
        "[[allowlists]]\nname = 'x'\npath = 'a'\n\n[[lists]]\nname = 'x'\npath = 'b'\n",
        "blokir.toml:6 lists[0].name: 'x' is already the name of allowlists[0] (line 2); "
        "list names must be unique across lists and allowlists",
    ),
    (
        "[[lists]]\nname = 'x'\npath = 'a'\n[[lists]]\nname = 'y'\npath = 'b'\n"
        "[[lists]]\nname = 'x'\npath = 'c'\n",
        "blokir.toml:8 lists[2].name: 'x' is already the name of lists[0] (line 2); "
        "list names must be unique across lists and allowlists",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_error_message_and_line(text: str, expected: str) -> None:
    assert error_of(text) == expected


def test_locator_handles_dotted_keys_inline_tables_and_multiline_values() -> None:
    text = """
        # a comment with [brackets] and key = value
        server.workers = 2
        metrics = { enabled = true, top_k = 5000 }
    """
    assert error_of(text) == "blokir.toml:3 metrics.top_k: must be between 0 and 1000, got 5000"
    text = '''
        [blocking]
        justification = """
        [metrics]
        top_k = 0
        """
        [metrics]
        top_k = 5000
    '''
    assert error_of(text) == "blokir.toml:7 metrics.top_k: must be between 0 and 1000, got 5000"
    text = """
        server.allow = [
            "10.0.0.0/8",  # ] a tricky comment
            "192.168.0.0/16", "bogus",
        ]
    """
    assert error_of(text) == (
        "blokir.toml:3 server.allow[2]: 'bogus' is not a CIDR network "
        'such as "10.0.0.0/8" or "fc00::/7"'
    )
    text = """
        [server]
        "workers" = 0
    """
    assert error_of(text) == "blokir.toml:2 server.workers: must be >= 1, got 0"
    text = """
        [[ lists ]]
        name = "a"
        path = "a"
        [[ lists ]]
        name = "b"
        path = "b"
        [server]
        [[lists]]
        name = "c"
        path = 'c # not a comment'
        match = 'all'
    """
    assert error_of(text) == "blokir.toml:11 lists[2].match: 'all' is not one of subtree, exact"


def test_inline_array_of_tables_points_at_the_element() -> None:
    text = """
        lists = [
            { name = "a", path = "a" },
            { name = "b", path = "b", ede = "loud" },
        ]
    """
    assert error_of(text) == (
        "blokir.toml:3 lists[1].ede: 'loud' is not one of blocked, censored, filtered, none"
    )


def test_error_for_a_file_path_uses_the_path_as_given(tmp_path: Path) -> None:
    conf = tmp_path / "blokir.toml"
    conf.write_text("[server]\nworkers = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    assert str(info.value) == f"{conf}:2 server.workers: must be >= 1, got 0"


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot read config file: No such file or directory"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"[blocking]\norganisation = 'Caf\xe9'\n")
    with pytest.raises(ConfigError) as info:
        load_config(latin1)
    assert str(info.value) == f"{latin1}:2: not valid UTF-8 (TOML files must be UTF-8)"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "bom.toml"
    conf.write_bytes(b"\xef\xbb\xbf[server]\nworkers = 3\n")
    assert load_config(conf).server.workers == 3


def test_config_error_without_location() -> None:
    assert str(ConfigError("plain")) == "plain"
    assert str(ConfigError("why", key="a.b")) == "a.b: why"
    assert str(ConfigError("why", file="f.toml")) == "f.toml: why"


# Random configs from plausible fragments: every outcome is a Config or a ConfigError.
_FRAGMENTS = [
    "[server]",
    "[upstream]",
    "[blocking]",
    "[cache]",
    "[metrics]",
    "[[lists]]",
    "[[allowlists]]",
    "[sever]",
    "workers = 2",
    "workers = -1",
    'listen = ["127.0.0.1:53"]',
    'listen = "[::1]:9153"',
    'servers = ["192.0.2.1", "[2001:db8::1]:53"]',
    'allow = ["10.0.0.0/8"]',
    "allow = []",
    "ttl = 30",
    "min_ttl = 100",
    "max_ttl = 10",
    'name = "n"',
    'path = "p.txt"',
    'action = "nodata"',
    'landing_ipv4 = ["192.0.2.1"]',
    'landing_ipv6 = "::1"',
    'ede = "none"',
    "enabled = false",
    'a.b = """x\ny"""',
    "x = { y = [1, 2] }",
    "# comment",
    "",
    "= broken",
]


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_any_input_gives_config_or_config_error(lines: list[str]) -> None:
    try:
        parse_config("\n".join(lines), "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml")


# ---------------------------------------------------------------------------------------------
# resolv.conf


def test_resolv_conf_parsing(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        textwrap.dedent(
            """
            # Generated by NetworkManager
            search isp.example
            ;nameserver 10.9.9.9
            nameserver 192.0.2.1   # primary
            nameserver 2001:db8::53;secondary
            nameserver fe80::1%eth0
            nameserver not-an-address
            nameserver
            nameserver 192.0.2.1
            options edns0 trust-ad
            """
        )
    )
    assert resolv_conf_servers(resolv) == [
        ("192.0.2.1", 53),
        ("2001:db8::53", 53),
        ("fe80::1%eth0", 53),
    ]


def test_resolv_conf_without_nameservers_is_an_error(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example.net\n# nameserver 192.0.2.1\n")
    with pytest.raises(ConfigError) as info:
        resolv_conf_servers(resolv)
    assert str(info.value) == (
        f"{resolv}: no usable 'nameserver' lines; set [upstream] servers in the config, "
        'e.g. servers = ["192.0.2.53"]'
    )
    with pytest.raises(ConfigError, match="cannot read"):
        resolv_conf_servers(tmp_path / "missing")


def test_upstream_servers_reads_resolv_conf_only_when_asked(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    cfg = parse("[server]\nlisten = ['127.0.0.1:53']\n")  # parsing never reads resolv.conf
    resolv.write_text("nameserver 127.0.0.1\nnameserver 127.0.0.53\n")
    # 127.0.0.1:53 is blokir itself: dropped, or it would forward to itself.
    assert cfg.upstream_servers(resolv) == [("127.0.0.53", 53)]
    resolv.write_text("nameserver 127.0.0.1\n")
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:53\) is one of blokir's own"):
        cfg.upstream_servers(resolv)
