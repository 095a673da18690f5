"""blokir serve end to end: a real process on loopback, a programmable upstream, dnspython,
dig and kdig as clients."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.dnsutil import free_port, names
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
LANDING_V4 = "192.0.2.10"
LANDING_V6 = "2001:db8::10"
BLOCKED = ["judi-contoh.example", "pinjol-palsu.example", "cname-target-blocked.example"]
ALLOWED_CHILD = "berita.judi-contoh.example"
START_TIMEOUT = 30.0


class Blokir:
    def __init__(
        self,
        tmp: Path,
        upstream_port: int,
        workers: int = 1,
        timeout: float = 1.0,
        metrics_port: int | None = None,
        server_extra: str = "",
    ):
        self.port = free_port()
        self.metrics_port = metrics_port
        metrics = (
            f'enabled = true\nlisten = "{LOOPBACK}:{metrics_port}"\ntop_k = 5'
            if metrics_port
            else "enabled = false"
        )
        self.tmp = tmp
        (tmp / "block.txt").write_text(names(BLOCKED))
        (tmp / "nx.txt").write_text(names(["nx-only.example"]))
        (tmp / "allow.txt").write_text(names([ALLOWED_CHILD]))
        self.config = tmp / "blokir.toml"
        self.config.write_text(
            f"""
[server]
listen = ["{LOOPBACK}:{self.port}"]
workers = {workers}
tcp_idle_timeout = 2.0
{server_extra}
[upstream]
servers = ["{LOOPBACK}:{upstream_port}"]
timeout = {timeout}
attempts = 1
[blocking]
landing_ipv4 = "{LANDING_V4}"
landing_ipv6 = "{LANDING_V6}"
ttl = 77
index_path = "index.blkx"
[metrics]
{metrics}
[[allowlists]]
name = "exceptions"
path = "allow.txt"
[[lists]]
name = "trustpositif"
path = "block.txt"
category = "gambling"
ede = "censored"
[[lists]]
name = "nx"
path = "nx.txt"
action = "nxdomain"
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resolver", "serve", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"blokir exited early:\n{out}")
            try:
                reply = self.ask(BLOCKED[0], timeout=0.3)
                if reply.answer:
                    return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise AssertionError("blokir did not answer within the start timeout")

    def ask(
        self, name: str, rdtype: str = "A", timeout: float = 3.0, **kw: object
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
        return dns.query.udp(query, LOOPBACK, port=self.port, timeout=timeout)

    def ask_tcp(self, name: str, rdtype: str = "A") -> dns.message.Message:
        return dns.query.tcp(
            dns.message.make_query(name, rdtype), LOOPBACK, port=self.port, timeout=3
        )

    def __enter__(self) -> Blokir:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add("www.allowed.example", "A", "198.51.100.1")
        fake.add("www.allowed.example", "AAAA", "2001:db8:1::1")
        fake.add(ALLOWED_CHILD, "A", "198.51.100.2")
        fake.add("cached.example", "A", "198.51.100.3")
        fake.add("big.example", "TXT", *[f'"{"x" * 200} {i}"' for i in range(12)])
        fake.add("cname-target-blocked.example", "A", "203.0.113.66")
        fake.add("fine-target.example", "A", "198.51.100.4")
        fake.cname("alias.allowed.example", "cname-target-blocked.example")
        fake.cname("alias2.allowed.example", "fine-target.example")
        fake.program("silent.example", drop=True)
        yield fake


@pytest.fixture
def blokir(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Blokir]:
    server = Blokir(tmp_path, upstream.port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_blocked_names_get_landing_answers_with_ede(blokir: Blokir, upstream: FakeUpstream) -> None:
    reply = blokir.ask("Judi-Contoh.Example", use_edns=0)
    assert [rd.address for rrset in reply.answer for rd in rrset] == [LANDING_V4]
    assert reply.answer[0].ttl == 77
    assert str(reply.question[0].name) == "Judi-Contoh.Example."
    assert not reply.flags & dns.flags.AA
    (ede,) = reply.options
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == dns.edns.EDECode.CENSORED
    assert "trustpositif" in (ede.text or "")
    sub = blokir.ask("www.m.pinjol-palsu.example", "AAAA")
    assert [rd.address for rrset in sub.answer for rd in rrset] == [LANDING_V6]
    https = blokir.ask("judi-contoh.example", "HTTPS")
    assert https.rcode() == dns.rcode.NOERROR and not https.answer
    assert https.authority[0].rdtype == dns.rdatatype.SOA
    nx = blokir.ask("a.nx-only.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen("judi-contoh.example") == 0  # never forwarded


def test_allowed_names_forwarded_and_cached(blokir: Blokir, upstream: FakeUpstream) -> None:
    first = blokir.ask("cached.example")
    second = blokir.ask("CACHED.example")
    assert [rd.address for rd in first.answer[0]] == ["198.51.100.3"]
    assert [rd.address for rd in second.answer[0]] == ["198.51.100.3"]
    assert str(second.question[0].name) == "CACHED.example."
    assert second.answer[0].ttl <= 300
    assert upstream.seen("cached.example") == 1
    child = blokir.ask(ALLOWED_CHILD)  # allowlisted under a blocked parent
    assert [rd.address for rd in child.answer[0]] == ["198.51.100.2"]
    missing = blokir.ask("nope.allowed.example")
    assert missing.rcode() == dns.rcode.NXDOMAIN


def test_cname_to_blocked_name_is_blocked(blokir: Blokir) -> None:
    reply = blokir.ask("alias.allowed.example", use_edns=0)
    assert [rd.address for rrset in reply.answer for rd in rrset] == [LANDING_V4]
    assert "trustpositif" in (reply.options[0].text or "")
    fine = blokir.ask("alias2.allowed.example")
    assert {rrset.rdtype for rrset in fine.answer} == {dns.rdatatype.CNAME, dns.rdatatype.A}


def test_truncation_and_tcp(blokir: Blokir) -> None:
    udp = blokir.ask("big.example", "TXT")  # no EDNS: 512 octets
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = blokir.ask_tcp("big.example", "TXT")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 12
    edns = blokir.ask("big.example", "TXT", use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC  # our 1232 cap applies even if the client offers more


def test_tcp_pipelining_several_queries_one_connection(blokir: Blokir) -> None:
    queries = [
        dns.message.make_query(n, "A")
        for n in ("judi-contoh.example", "cached.example", "www.allowed.example")
    ]
    with socket.create_connection((LOOPBACK, blokir.port), timeout=5) as conn:
        conn.sendall(
            b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        answers = {}
        buffer = b""
        while len(answers) < 3:
            chunk = conn.recv(4096)
            assert chunk, "connection closed early"
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                size = struct.unpack("!H", buffer[:2])[0]
                reply = dns.message.from_wire(buffer[2 : 2 + size])
                answers[reply.id] = reply
                buffer = buffer[2 + size :]
    assert set(answers) == {q.id for q in queries}


def test_silent_upstream_gives_servfail_within_timeout(blokir: Blokir) -> None:
    started = time.monotonic()
    reply = blokir.ask("silent.example", use_edns=0, timeout=5)
    elapsed = time.monotonic() - started
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert elapsed < 2.5  # upstream timeout 1.0 s x 1 attempt, plus slack
    assert any(isinstance(o, dns.edns.EDEOption) and o.code == 22 for o in reply.options)


def test_malformed_packets_do_not_kill_the_worker(blokir: Blokir) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        for junk in (b"", b"\x00", b"\x12\x34" + b"\x00" * 10, os.urandom(40), b"\xff" * 512):
            sock.sendto(junk, (LOOPBACK, blokir.port))
        formerr = dns.message.make_query("x.example", "A").to_wire()
        sock.sendto(formerr[:4] + b"\x00\x02" + formerr[6:], (LOOPBACK, blokir.port))
        reply = dns.message.from_wire(sock.recv(4096), question_only=True)
        assert reply.rcode() == dns.rcode.FORMERR
    assert blokir.ask("judi-contoh.example").answer  # still serving


@pytest.mark.parametrize("client", ["dig", "kdig"])
def test_dig_and_kdig_clients(blokir: Blokir, client: str) -> None:
    binary = shutil.which(client)
    if binary is None:
        pytest.skip(f"{client} not installed (scripts/install-test-deps installs it)")
    limits = ["+tries=1", "+time=3"] if client == "dig" else ["+retry=0", "+timeout=3"]
    out = subprocess.run(
        [
            binary,
            f"@{LOOPBACK}",
            "-p",
            str(blokir.port),
            "+edns=0",
            *limits,
            "judi-contoh.example",
            "A",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert LANDING_V4 in out
    assert "EDE: 16" in out  # both print the Extended DNS Error code they received


def test_sighup_reload_picks_up_new_entries_and_sigterm_exits_cleanly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = Blokir(tmp_path, upstream.port)
    server.start()
    try:
        upstream.add("later-blocked.example", "A", "198.51.100.9")
        assert [rd.address for rd in server.ask("later-blocked.example").answer[0]] == [
            "198.51.100.9"
        ]
        (tmp_path / "block.txt").write_text(names([*BLOCKED, "later-blocked.example"]))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            answer = server.ask("x.later-blocked.example").answer
            if answer and answer[0][0].address == LANDING_V4:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("SIGHUP did not load the changed list")
    finally:
        assert server.stop() == 0


def test_sighup_moves_both_workers_to_new_upstream_servers(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """`[upstream] servers` changed in the file + SIGHUP: every worker forwards to the new
    server from then on, with no restart."""
    probes = [f"p{i}.moved.example" for i in range(60)]
    with (
        FakeUpstream() as replacement,
        Blokir(tmp_path, upstream.port, workers=2) as server,
    ):
        for name in probes:
            replacement.add(name, "A", "198.51.100.44")  # the old upstream: NXDOMAIN for these
        text = server.config.read_text()
        server.config.write_text(text.replace(f':{upstream.port}"]', f':{replacement.port}"]'))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        remaining = iter(probes)
        while time.monotonic() < deadline:
            if server.ask(next(remaining)).answer:  # a fresh name each time: no negative cache
                break
            time.sleep(0.2)
        else:
            raise AssertionError("SIGHUP did not move forwarding to the new upstream")
        after = list(remaining)[:20]  # random source ports: both workers get some of these
        answered = [bool(server.ask(name).answer) for name in after]
        assert all(answered), answered
        assert not any(upstream.seen(name) for name in after)


def test_workers_share_the_port_and_a_killed_worker_is_restarted(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = Blokir(tmp_path, upstream.port, workers=2)
    server.start()
    try:
        assert server.proc is not None
        children = _children(server.proc.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
        started = time.monotonic()
        # A datagram already queued on the killed worker's socket dies with it (SO_REUSEPORT
        # gives each worker its own queue); clients retry. Query once it is gone.
        while time.monotonic() - started < 2 and _alive(children[0]):
            time.sleep(0.01)
        for _ in range(50):  # the survivor keeps answering meanwhile
            assert server.ask("judi-contoh.example", timeout=1).answer
        deadline = started + 5
        replacement: set[int] = set()
        while time.monotonic() < deadline and len(replacement) < 2:
            replacement = set(_children(server.proc.pid)) - {children[0]}
            time.sleep(0.05)
        assert len(replacement) == 2, "the supervisor did not restart the killed worker"
        assert time.monotonic() - started < 1.5  # restarted within about a second
    finally:
        assert server.stop() == 0


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
