"""DNS servers as managed child processes on free 127.0.0.1 ports: NSD (an authoritative
upstream) and `blokir serve` from this checkout, with bounded waits until they answer, and
blokir's Prometheus endpoint read back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.processes import (
    LOOPBACK,
    REPO,
    Deadline,
    ManagedProcess,
    SetupError,
    find_binary,
    free_port,
    require_binary,
    tail,
)


def ask(port: int, name: str, rdtype: str = "A", timeout: float = 1.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, LOOPBACK, port=port, timeout=timeout)


def addresses(reply: dns.message.Message, rdtype: str = "A") -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rd in rrset]


def describe(reply: dns.message.Message) -> str:
    answer = "; ".join(rrset.to_text().replace("\n", "; ") for rrset in reply.answer)
    return f"{dns.rcode.to_text(reply.rcode())} [{answer or 'no answer'}]"


def wait_for_answer(
    server: ManagedProcess,
    port: int,
    name: str,
    deadline: float,
    want_address: str | None = None,
    rdtype: str = "A",
) -> float:
    """Poll until `name` gets NOERROR (and `want_address` among the answers, if given); the
    seconds since the server was started. Raises when the server dies or time runs out."""
    last = "no reply"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            reply = ask(port, name, rdtype, timeout=0.2)
        except (dns.exception.Timeout, OSError) as exc:
            last = type(exc).__name__
            time.sleep(0.02)
            continue
        last = describe(reply)
        if reply.rcode() == dns.rcode.NOERROR and (
            want_address is None or want_address in addresses(reply, rdtype)
        ):
            return time.perf_counter() - server.started
        time.sleep(0.02)
    raise SetupError(
        f"{server.name} did not answer {name} {rdtype} as expected in time (last: {last}); "
        f"last lines of {server.log}:\n{tail(server.log)}"
    )


# -- NSD --------------------------------------------------------------------------------------


def start_nsd(
    workdir: Path,
    zone: str,
    zonefile: Path,
    probe: str,
    deadline: Deadline,
    *,
    clauses: str = "",
    zone_options: str = "",
    load_within: float = 60.0,
) -> tuple[ManagedProcess, int]:
    """NSD serving `zonefile` on a free port, rate limiting off; returns once it answers (within
    `load_within` seconds: a zone of millions of names takes minutes to load).
    `clauses` (e.g. a `key:`) and `zone_options` (e.g. `provide-xfr:`) are nsd.conf text added
    before the zone and inside it."""
    nsd = require_binary("nsd")
    checkconf = find_binary("nsd-checkconf")
    port = free_port()
    conf = workdir / "nsd.conf"

    def render(rrl: bool) -> str:
        limits = "    rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n" if rrl else ""
        return f"""server:
    ip-address: {LOOPBACK}@{port}
    port: {port}
    do-ip4: yes
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    xfrdfile: "{workdir}/nsd-xfrd.state"
    xfrd-reload-timeout: 1
    database: ""
    zonelistfile: "{workdir}/nsd-zone.list"
    logfile: "{workdir}/nsd.log"
    verbosity: 0
    server-count: 1
    hide-version: yes
{limits}remote-control:
    control-enable: no
{clauses}zone:
    name: "{zone}"
    zonefile: "{zonefile}"
{zone_options}"""

    conf.write_text(render(rrl=True))
    if checkconf:
        checked = subprocess.run([checkconf, str(conf)], capture_output=True, text=True)
        if checked.returncode != 0:
            # An NSD built without rate limiting rejects the rrl options, and has no RRL anyway.
            conf.write_text(render(rrl=False))
            checked = subprocess.run([checkconf, str(conf)], capture_output=True, text=True)
            if checked.returncode != 0:
                raise SetupError(f"nsd-checkconf rejected {conf}: {checked.stderr.strip()}")
    server = ManagedProcess(
        "nsd", [nsd, "-d", "-c", str(conf)], workdir / "nsd.stdout", under_test=False
    )
    try:
        wait_for_answer(server, port, probe, time.monotonic() + deadline.cap(load_within))
    except BaseException:
        server.stop()
        raise
    return server, port


# -- blokir -----------------------------------------------------------------------------------


def unbound_conf(
    workdir: Path,
    port: int,
    threads: int,
    rpz: Path | None,
    upstream_port: int,
    tag: str,
    *,
    modules: str = "respip iterator",
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Path:
    """Unbound forwarding everything to `upstream_port`, with the list as an RPZ zone file
    (`rpz`), or without one and `modules` / `extra` sections (the blokir plugin, which needs
    its `env` to load in unbound-checkconf too)."""
    conf = workdir / f"unbound-{tag}.conf"
    rpz_section = f'rpz:\n    name: "rpz.blokir."\n    zonefile: "{rpz}"\n' if rpz else ""
    conf.write_text(f"""server:
    interface: {LOOPBACK}
    port: {port}
    do-ip4: yes
    do-ip6: no
    num-threads: {threads}
    so-reuseport: yes
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound-{tag}.pid"
    use-syslog: no
    logfile: "{workdir}/unbound-{tag}.log"
    verbosity: 0
    module-config: "{modules}"
    do-not-query-localhost: no
    statistics-cumulative: no
    extended-statistics: no
remote-control:
    control-enable: yes
    control-interface: "{workdir}/unbound-{tag}.ctl"
    control-use-cert: no
{rpz_section}forward-zone:
    name: "."
    forward-addr: {LOOPBACK}@{upstream_port}
{extra}""")
    checkconf = find_binary("unbound-checkconf")
    if checkconf:
        checked = subprocess.run(
            [checkconf, str(conf)],
            capture_output=True,
            text=True,
            env=None if env is None else {**os.environ, **env},  # the plugin reads its config
        )
        if checked.returncode != 0:
            raise SetupError(f"unbound-checkconf rejected {conf}: {checked.stdout}{checked.stderr}")
    return conf


def unbound_secondary_conf(
    workdir: Path, port: int, primary_port: int, upstream_port: int, zone: str = "rpz.blokir."
) -> Path:
    """Unbound as an RPZ secondary of blokir's primary on 127.0.0.1:primary_port (AXFR, then
    IXFR on NOTIFY), forwarding everything else to 127.0.0.1:upstream_port."""
    conf = workdir / "unbound-secondary.conf"
    conf.write_text(f"""server:
    interface: {LOOPBACK}
    port: {port}
    do-ip6: no
    num-threads: 1
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound-secondary.pid"
    use-syslog: no
    logfile: "{workdir}/unbound-secondary.log"
    verbosity: 1
    module-config: "respip iterator"
    do-not-query-localhost: no
remote-control:
    control-enable: no
rpz:
    name: "{zone}"
    primary: {LOOPBACK}@{primary_port}
    allow-notify: {LOOPBACK}
forward-zone:
    name: "."
    forward-addr: {LOOPBACK}@{upstream_port}
""")
    return conf


def start_unbound(conf: Path, tag: str, env: dict[str, str] | None = None) -> ManagedProcess:
    unbound = require_binary("unbound")
    argv = [unbound, "-d", "-c", str(conf)]
    return ManagedProcess(tag, argv, conf.with_suffix(".stdout"), env=env)


def start_blokir(
    config: Path,
    tag: str,
    log: Path | None = None,
    *,
    pure_python: bool = False,
    checkout: str | None = None,
    udp_batch: bool = True,
) -> ManagedProcess:
    """`python -m resolver serve -c config` from this checkout, or from `checkout` with its own
    .venv (the benchmark's base<N> peers); its output in `log` (default: the config's name with
    .log). `pure_python`: the plain sources even where the checkout has a compiled build
    (BLOKIR_PURE_PYTHON, docs/architecture.md "Compiled hot path"). `udp_batch` False: the
    plain recvfrom/sendto UDP path even where the batched one is built (BLOKIR_UDP_BATCH=0)."""
    python = str(Path(checkout) / ".venv" / "bin" / "python") if checkout else sys.executable
    return ManagedProcess(
        tag,
        [python, "-m", "resolver", "serve", "-c", str(config)],
        log or config.with_suffix(".log"),
        cwd=Path(checkout) if checkout else REPO,
        env={
            **({"BLOKIR_PURE_PYTHON": "1"} if pure_python else {}),
            **({} if udp_batch else {"BLOKIR_UDP_BATCH": "0"}),
        }
        or None,
    )


def scrape_metrics(port: int, timeout: float) -> str:
    """The text of blokir's Prometheus endpoint on 127.0.0.1:port; raises OSError when it does
    not answer."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=timeout) as reply:
        text: str = reply.read().decode()
    return text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` in a Prometheus text exposition whose labels
    include all of `labels` (0.0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, number = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(number)
    return total
