"""Small helpers for integration tests that run real DNS servers on 127.0.0.1.

Nothing here ever sends a packet off the machine: servers bind to 127.0.0.1, and a
`FakeUpstream` programmed by `answer_everything` is the upstream resolver every engine under test
forwards to.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

# One implementation for the benchmarks and the tests.
from tests.support.processes import find_binary as find_binary
from tests.support.processes import free_port as free_port
from tests.support.upstream import FakeUpstream

LOOPBACK = "127.0.0.1"
# What the fake upstream answers for every name: documentation addresses (RFC 5737, RFC 3849).
UPSTREAM_IPV4 = "198.51.100.7"
UPSTREAM_IPV6 = "2001:db8:ffff::7"


def require_binary(name: str) -> str:
    """The path of an executable, or skip the test saying what is missing and how to get it."""
    found = find_binary(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install-test-deps installs it)")
    return found


def answer_everything(upstream: FakeUpstream) -> FakeUpstream:
    """Program `upstream` as the upstream resolver every engine under test forwards to: it
    answers every name, A with `UPSTREAM_IPV4`, AAAA with `UPSTREAM_IPV6` (AA set, TTL 30),
    anything else NOERROR without records. What reached it says whether a blocked name
    left the engine (`upstream.seen`)."""
    upstream.program(answer=(), ttl=30, flags=dns.flags.AA)
    upstream.program(rdtype="A", answer=[UPSTREAM_IPV4])
    upstream.program(rdtype="AAAA", answer=[UPSTREAM_IPV6])
    return upstream


def query(
    port: int, name: str, rdtype: str = "A", *, timeout: float = 2.0, tries: int = 3
) -> dns.message.Message:
    """One UDP query to 127.0.0.1:port, retried a bounded number of times on timeout."""
    request = dns.message.make_query(name, rdtype)
    last: Exception | None = None
    for _ in range(tries):
        try:
            return dns.query.udp(request, LOOPBACK, port=port, timeout=timeout)
        except dns.exception.Timeout as exc:
            last = exc
    raise TimeoutError(f"no answer from 127.0.0.1:{port} for {name} {rdtype}") from last


def addresses(response: dns.message.Message, rdtype: str = "A") -> list[str]:
    """The addresses of the given type in an answer section, sorted."""
    wanted = dns.rdatatype.from_text(rdtype)
    found: list[str] = []
    for rrset in response.answer:
        if isinstance(rrset, dns.rrset.RRset) and rrset.rdtype == wanted:
            found.extend(rdata.to_text() for rdata in rrset)
    return sorted(found)


def wait_for_dns(
    port: int, process: subprocess.Popen[bytes], *, timeout: float = 15.0, name: str = "localhost."
) -> None:
    """Wait until a server answers anything on 127.0.0.1:port; bounded in time and tries. Raises
    with the process's exit status if it died first."""
    deadline = time.monotonic() + timeout
    request = dns.message.make_query(name, "A")
    for _ in range(int(timeout / 0.1) + 1):
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before answering")
        try:
            dns.query.udp(request, LOOPBACK, port=port, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port} within {timeout} s")


def start_server(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server in the foreground with its output going to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT)


def stop_server(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate, wait, kill on timeout."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def serving(
    argv: Sequence[str], port: int, log: Path, *, timeout: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a DNS server until the block ends: started, waited for (bounded), then stopped even
    if the block fails. A server that never answers fails with the end of its log."""
    process = start_server(argv, log)
    try:
        try:
            wait_for_dns(port, process, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            stop_server(process)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[0]} did not start: {exc}\n{tail}") from exc
        yield process
    finally:
        stop_server(process)


def unbound_config(
    tmp: Path, port: int, upstream: int, body: str, nodefault: str = "test."
) -> Path:
    """An unbound.conf for tests: loopback only, one thread, no rate limits, RPZ-capable
    (`body` holds the rpz: clause or local-zone lines), forwarding everything to `upstream`.
    Unbound serves some names (`test.` among them) as local zones unless told `nodefault`."""
    config = tmp / "unbound.conf"
    config.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: "{tmp}/unbound.log"
    verbosity: 1
    num-threads: 1
    module-config: "respip iterator"
    local-zone: "{nodefault}" nodefault
    ratelimit: 0
    ip-ratelimit: 0
{body}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream}
"""
    )
    return config


def names(items: Iterable[str]) -> str:
    """A plain list file's text: one name a line."""
    return "\n".join(items) + "\n"
