"""blokir as the RPZ primary of real resolvers: Unbound (`rpz:` with `primary:`), BIND 9
(`response-policy` over a secondary zone) and PowerDNS Recursor (`rpzPrimary`). Each takes the
zone from a running `blokir serve` by zone transfer, answers a listed name with blokir's policy
and an unlisted one from the NSD upstream, and picks up a changed list through NOTIFY and IXFR
without a restart. Every server has its own config, working directory and loopback port."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.dnsutil import addresses
from tests.support.processes import Deadline, ManagedProcess, find_binary, free_port
from tests.support.servers import start_blokir, start_nsd, unbound_secondary_conf

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
ZONE = "rpz.blokir."
LANDING = "192.0.2.10"
OPEN_ADDRESS = "198.51.100.1"
CHANGE_BOUND = 20.0  # seconds a change may take to reach a secondary in this test (2 s typical)


@dataclass
class Fleet:
    workdir: Path
    blokir: ManagedProcess
    rpz_port: int
    nsd_port: int
    ports: dict[str, int]  # engine -> the loopback port blokir sends NOTIFY to
    nx_list: Path

    def ixfr_count(self) -> int:
        return self.blokir.log.read_text(errors="replace").count("rpz: IXFR to ")

    def add_listed(self, name: str) -> None:
        with self.nx_list.open("a") as lists:
            lists.write(f"{name}\n")


def ask(port: int, name: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), LOOPBACK, port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None


def wait_until(check: Callable[[], bool], seconds: float, what: str, log: Path) -> float:
    """Poll `check` every 0.1 s; the seconds it took. Fails with the log's end when it never
    holds."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    pytest.fail(f"{what} not within {seconds:.0f} s; end of {log}:\n{tail}")


def rcode_is(port: int, name: str, rcode: dns.rcode.Rcode) -> Callable[[], bool]:
    def check() -> bool:
        reply = ask(port, name)
        return reply is not None and reply.rcode() == rcode

    return check


def fresh_rcode_is(port: int, parent: str, rcode: dns.rcode.Rcode) -> Callable[[], bool]:
    """Each poll asks a new name below `parent`: an answer cached before the change cannot
    hide it (PowerDNS Recursor's packet cache keeps an answer for its TTL, RPZ or not)."""
    count = iter(range(1_000_000))

    def check() -> bool:
        return rcode_is(port, f"poll{next(count)}.{parent}", rcode)()

    return check


def address_is(port: int, name: str, address: str) -> Callable[[], bool]:
    def check() -> bool:
        reply = ask(port, name)
        return reply is not None and address in addresses(reply)

    return check


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("rpz-fleet")
    zonefile = workdir / "example.zone"
    zonefile.write_text(
        "$ORIGIN example.\n$TTL 30\n@ SOA ns.example. h.example. 1 60 60 600 30\n@ NS ns\n"
        f"ns A 127.0.0.1\nopen A {OPEN_ADDRESS}\n* A 198.51.100.9\n"
    )
    nsd, nsd_port = start_nsd(workdir, "example.", zonefile, "open.example", Deadline(60))
    ports = {engine: free_port() for engine in ("unbound", "bind", "pdns")}
    rpz_port = free_port()
    nx_list = workdir / "nx.txt"
    nx_list.write_text("blocked.example\n")
    (workdir / "landing.txt").write_text("landed.example\n")
    notify = ", ".join(f'"{LOOPBACK}:{p}"' for p in ports.values())
    config = workdir / "blokir.toml"
    config.write_text(f"""
[server]
listen = ["{LOOPBACK}:{free_port()}"]
workers = 1
[upstream]
servers = ["{LOOPBACK}:{nsd_port}"]
[blocking]
index_path = "{workdir}/index.blkx"
landing_ipv4 = "{LANDING}"
[metrics]
enabled = false
[updates]
watch_interval = 0.2
[[lists]]
name = "nx"
path = "{nx_list}"
action = "nxdomain"
[[lists]]
name = "landing"
path = "{workdir}/landing.txt"
[rpz]
listen = ["{LOOPBACK}:{rpz_port}"]
notify = [{notify}]
""")
    blokir = start_blokir(config, "blokir-primary", workdir / "blokir.log")
    try:
        soa = dns.message.make_query(ZONE, "SOA")

        def primary_ready() -> bool:
            try:
                reply = dns.query.udp(soa, LOOPBACK, port=rpz_port, timeout=0.5)
            except (dns.exception.Timeout, OSError):
                return False
            return bool(reply.answer)

        wait_until(primary_ready, 60, "blokir's RPZ primary answering SOA", blokir.log)
        yield Fleet(workdir, blokir, rpz_port, nsd_port, ports, nx_list)
    finally:
        blokir.stop()
        nsd.stop()


def check_engine(
    fleet: Fleet, engine: str, process: ManagedProcess, log: Path, cached_first: bool = True
) -> None:
    """The policy arrives, an unlisted name resolves, and a change arrives by NOTIFY + IXFR.
    `cached_first`: resolve the name before it is listed, so its answer is in the engine's
    cache when the change arrives (Unbound and BIND apply RPZ to cached answers; PowerDNS
    Recursor's packet cache answers from before the change until the answer's TTL ends)."""
    port = fleet.ports[engine]
    wait_until(rcode_is(port, "blocked.example.", dns.rcode.NXDOMAIN), 30, "the policy", log)
    wait_until(address_is(port, "landed.example.", LANDING), 5, "the landing answer", log)
    wait_until(address_is(port, "open.example.", OPEN_ADDRESS), 5, "an unlisted name", log)
    new = f"new-{engine}.example."
    if cached_first:
        assert address_is(port, new, "198.51.100.9")()  # not listed yet: resolved upstream
    before = fleet.ixfr_count()
    fleet.add_listed(new.rstrip("."))
    wait_until(fresh_rcode_is(port, new, dns.rcode.NXDOMAIN), CHANGE_BOUND, "the change", log)
    if cached_first:  # Unbound and BIND: RPZ also rewrites the answer cached before
        assert rcode_is(port, new, dns.rcode.NXDOMAIN)()
    assert fleet.ixfr_count() > before, "the change did not travel by IXFR"
    process.check_alive()  # no restart happened


def test_unbound_secondary(fleet: Fleet) -> None:
    unbound = find_binary("unbound") or pytest.skip("unbound is not installed")
    port = fleet.ports["unbound"]
    conf = unbound_secondary_conf(fleet.workdir, port, fleet.rpz_port, fleet.nsd_port, ZONE)
    log = fleet.workdir / "unbound-secondary.log"
    with ManagedProcess("unbound", [unbound, "-d", "-c", str(conf)], log) as process:
        check_engine(fleet, "unbound", process, log)


def _own_dir(prefix: str, user: str) -> Path:
    """A working directory the engine's unprivileged user can write: pytest's tmp directories
    are private to root (mode 0700), so it gets its own under the temp dir."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


def test_bind_secondary(fleet: Fleet) -> None:
    named = find_binary("named") or pytest.skip("named (bind9) is not installed")
    port = fleet.ports["bind"]
    as_root = os.geteuid() == 0
    workdir = _own_dir("blokir-bind-", "bind" if as_root else pwd.getpwuid(os.geteuid()).pw_name)
    try:
        conf = workdir / "named.conf"
        conf.write_text(f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port {port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    allow-recursion {{ 127.0.0.0/8; }};
    forward only;
    forwarders {{ {LOOPBACK} port {fleet.nsd_port}; }};
    dnssec-validation no;
    notify no;
    # RPZ updates apply at most once a minute by default: at once here.
    response-policy {{ zone "{ZONE}" min-update-interval 0; }};
}};
controls {{ }};
zone "{ZONE}" {{
    type secondary;
    primaries port {fleet.rpz_port} {{ {LOOPBACK}; }};
    file "rpz.db";
    allow-notify {{ {LOOPBACK}; }};
}};
""")
        conf.chmod(0o644)
        argv = [named, "-g", "-n", "1", "-4", "-c", str(conf)]
        if as_root:
            argv += ["-u", "bind"]  # binds, then runs as the unprivileged bind user
        log = fleet.workdir / "named.log"
        with ManagedProcess("named", argv, log) as process:
            check_engine(fleet, "bind", process, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_powerdns_recursor_secondary(fleet: Fleet) -> None:
    recursor = find_binary("pdns_recursor") or pytest.skip("pdns-recursor is not installed")
    port = fleet.ports["pdns"]
    as_root = os.geteuid() == 0
    workdir = _own_dir("blokir-pdns-", "pdns" if as_root else pwd.getpwuid(os.geteuid()).pw_name)
    try:
        # refresh=1: pdns-recursor 4.x also polls the SOA each second, so the change arrives
        # whether or not this version acts on the NOTIFY.
        (workdir / "rpz.lua").write_text(
            f'rpzPrimary("{LOOPBACK}:{fleet.rpz_port}", "{ZONE}", {{ refresh = 1 }})\n'
        )
        (workdir / "recursor.conf").write_text(f"""local-address={LOOPBACK}
local-port={port}
socket-dir={workdir}
lua-config-file={workdir}/rpz.lua
forward-zones-recurse=.={LOOPBACK}:{fleet.nsd_port}
dont-query=
dnssec=off
threads=1
daemon=no
write-pid=no
disable-syslog=yes
loglevel=6
allow-notify-from={LOOPBACK}
allow-notify-for={ZONE}
""")
        argv = [recursor, f"--config-dir={workdir}"]
        if as_root:
            argv += ["--setuid=pdns", "--setgid=pdns"]
        log = fleet.workdir / "pdns-recursor.log"
        with ManagedProcess("pdns-recursor", argv, log) as process:
            check_engine(fleet, "pdns", process, log, cached_first=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
