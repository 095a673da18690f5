"""IP triggers and the dnstap query log end to end: `blokir serve` on loopback forwarding to the
fake upstream, dnspython as the client, dnstap-read (bind9-dnsutils) reading what blokir wrote
to a file and what a Frame Streams receiver in this test took from its socket."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from resolver.querylog import framestream as fs
from resolver.querylog.schema import message_classes
from tests.integration.dnsutil import free_port
from tests.support.framestream import Receiver
from tests.support.processes import Deadline, ManagedProcess
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
LANDING = "192.0.2.250"
START_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]


class Server:
    """blokir serve with an IP list and a domain list, stopped in `stop` (SIGTERM, bounded)."""

    def __init__(self, tmp: Path, upstream: FakeUpstream, querylog: str = "") -> None:
        self.port = free_port()
        (tmp / "ips.txt").write_text("# regulator IP list\n192.0.2.0/24\n2001:db8:bad::/48\n")
        (tmp / "ip-allow.txt").write_text("192.0.2.128/25\n")
        (tmp / "domains.txt").write_text("judi.example\n")
        self.ips = tmp / "ips.txt"
        self.config = tmp / "blokir.toml"
        self.config.write_text(
            f"""
[server]
listen = ["{LOOPBACK}:{self.port}"]
[upstream]
servers = ["{LOOPBACK}:{upstream.address[1]}"]
timeout = 1.0
attempts = 1
[blocking]
landing_ipv4 = "{LANDING}"
index_path = "index.blkx"
[metrics]
enabled = false
[updates]
watch = false
{querylog}
[[allowlists]]
name = "own-cdn"
path = "ip-allow.txt"
kind = "ip"
[[lists]]
name = "domains"
path = "domains.txt"
category = "gambling"
action = "nxdomain"
[[lists]]
name = "regulator-ip"
path = "ips.txt"
kind = "ip"
category = "regulator"
action = "nxdomain"
ede = "censored"
"""
        )
        self.process = ManagedProcess(
            "blokir",
            [sys.executable, "-m", "resolver", "serve", "-c", str(self.config)],
            tmp / "blokir.log",
            env={"PYTHONPATH": str(ROOT)},
        )
        self.proc = self.process.proc
        ready = Deadline(START_TIMEOUT)
        try:
            while not self._answers():
                self.process.check_alive()
                assert ready.remaining() > 0, "blokir did not answer in time"
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        try:
            return self.ask("judi.example", timeout=0.3).rcode() == dns.rcode.NXDOMAIN
        except (dns.exception.Timeout, OSError):
            return False

    def ask(self, name: str, rdtype: str = "A", timeout: float = 3.0) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=0)
        return dns.query.udp(query, LOOPBACK, port=self.port, timeout=timeout)

    def stop(self) -> None:
        self.process.stop(timeout=20)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add("listed.example", "A", "192.0.2.5")
        fake.add("clean.example", "A", "198.51.100.5")
        fake.add("exempt.example", "A", "192.0.2.200")  # inside the IP allowlist's /25
        fake.add("mixed.example", "A", "198.51.100.6", "192.0.2.6")
        fake.add("listed6.example", "AAAA", "2001:db8:bad:1::5")
        fake.add("clean6.example", "AAAA", "2001:db8:900d::5")
        fake.cname("alias.example", "hop.example")
        fake.cname("hop.example", "edge.cdn.example")
        fake.add("edge.cdn.example", "A", "192.0.2.77")
        fake.add("edge.cdn.example", "AAAA", "2001:db8:bad::77")
        fake.cname("alias-clean.example", "clean.example")
        fake.add("later.example", "A", "203.0.113.9")
        yield fake


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset if rrset.rdtype in (1, 28))


def test_answers_pointing_into_a_listed_prefix_are_blocked(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = Server(tmp_path, upstream)
    try:
        for name, rdtype in [
            ("listed.example", "A"),
            ("mixed.example", "A"),
            ("listed6.example", "AAAA"),
            ("alias.example", "A"),  # through a CNAME chain
            ("alias.example", "AAAA"),
        ]:
            for attempt in range(2):  # never cached: the second answer is blocked too
                reply = server.ask(name, rdtype)
                assert reply.rcode() == dns.rcode.NXDOMAIN, (name, rdtype, attempt, reply)
                assert not reply.answer
                assert [o.code for o in reply.options] == [16], reply  # EDE 16 Censored
        for name, rdtype, expected in [
            ("clean.example", "A", ["198.51.100.5"]),
            ("clean6.example", "AAAA", ["2001:db8:900d::5"]),
            ("alias-clean.example", "A", ["198.51.100.5"]),
            ("exempt.example", "A", ["192.0.2.200"]),  # the IP allowlist wins
        ]:
            reply = server.ask(name, rdtype)
            assert reply.rcode() == dns.rcode.NOERROR, (name, reply)
            assert addresses(reply) == expected
        assert upstream.seen("listed.example") == 2  # asked upstream each time: not cached

        # A cached answer whose address a reload lists is checked again on its next use.
        assert addresses(server.ask("later.example")) == ["203.0.113.9"]
        seen = upstream.seen("later.example")
        assert addresses(server.ask("later.example")) == ["203.0.113.9"]
        assert upstream.seen("later.example") == seen  # from the cache
        server.ips.write_text(server.ips.read_text() + "203.0.113.0/24\n")
        assert server.proc.pid
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while server.ask("later.example").rcode() != dns.rcode.NXDOMAIN:
            assert time.monotonic() < deadline, "the reload did not block the cached answer"
            time.sleep(0.2)
        check = subprocess.run(
            [sys.executable, "-m", "resolver", "check", "-c", str(server.config), "192.0.2.5"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "list=regulator-ip rule=192.0.2.0/24" in check.stdout
    finally:
        server.stop()


def dnstap_read(path: Path) -> str:
    binary = shutil.which("dnstap-read")
    if binary is None:
        pytest.skip("dnstap-read (bind9-dnsutils) is not installed")
    run = subprocess.run([binary, "-y", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def decoded(path: Path) -> list[object]:
    dnstap, _, _ = message_classes()
    frames = fs.FrameReader().feed(path.read_bytes())
    return [dnstap.FromString(f) for f in frames if isinstance(f, bytes)]


def exercise(server: Server) -> None:
    assert server.ask("judi.example").rcode() == dns.rcode.NXDOMAIN
    assert server.ask("listed.example").rcode() == dns.rcode.NXDOMAIN
    assert server.ask("clean.example").rcode() == dns.rcode.NOERROR


def shown_policies(text: str) -> dict[str, set[str]]:
    """From dnstap-read -y: per question of a CLIENT_RESPONSE, the EDE EXTRA-TEXTs it shows
    (how a blocked answer's policy reaches dnstap-read, which prints no dnstap policy field)."""
    found: dict[str, set[str]] = {}
    for document in text.split("\n---"):
        if "type: CLIENT_RESPONSE" not in document:
            continue
        questions = re.findall(r"QUESTION_SECTION:\n\s+- '([^']+)'", document)
        texts = re.findall(r'EXTRA-TEXT: "([^"]*)"', document)
        for question in questions:
            found.setdefault(question, set()).update(texts)
    return found


def check_log(messages: list[object], text: str) -> None:
    # dnstap-read shows every logged query and its answer: the blocked names with NXDOMAIN,
    # and their policy (list, category, action) in the answer's EDE EXTRA-TEXT.
    assert "judi.example. IN A" in text and "listed.example. IN A" in text
    assert "status: NXDOMAIN" in text and "type: CLIENT_RESPONSE" in text
    shown = shown_policies(text)
    assert shown["judi.example. IN A"] == {
        "blocked by blokir: list domains, category gambling, action nxdomain"
    }
    assert shown["listed.example. IN A"] == {
        "blocked by blokir: list regulator-ip, category regulator, action nxdomain"
    }
    assert shown["clean.example. IN A"] == set()
    policies = {
        m.message.policy.value: m.message.policy  # type: ignore[attr-defined]
        for m in messages
        if m.message.HasField("policy")  # type: ignore[attr-defined]
    }
    assert set(policies) == {b"judi.example", b"192.0.2.5"}
    qname, address = policies[b"judi.example"], policies[b"192.0.2.5"]
    assert qname.rule == b"list=domains category=gambling action=nxdomain"
    assert (qname.match, qname.action) == (1, 1)  # QNAME, NXDOMAIN
    assert address.rule == b"list=regulator-ip category=regulator action=nxdomain"
    assert address.match == 3  # RESPONSE_IP
    clients = {
        (m.message.HasField("policy"), str(ipaddress.ip_address(m.message.query_address)))  # type: ignore[attr-defined]
        for m in messages
    }
    # Blocked: the whole client address; allowed: cut to /24 (127.0.0.1 -> 127.0.0.0).
    assert clients == {(True, "127.0.0.1"), (False, "127.0.0.1"), (False, "127.0.0.0")}


def test_dnstap_file_read_by_dnstap_read(tmp_path: Path, upstream: FakeUpstream) -> None:
    log = tmp_path / "dnstap.fstrm"
    server = Server(tmp_path, upstream, f'[querylog]\ndnstap = "file:{log}"\n')
    try:
        exercise(server)
    finally:
        server.stop()
    check_log(decoded(log), dnstap_read(log))


def test_dnstap_socket_read_by_a_receiver(tmp_path: Path, upstream: FakeUpstream) -> None:
    receiver = Receiver(tmp_path / "dnstap.sock", tmp_path / "captured.fstrm")
    try:
        server = Server(
            tmp_path, upstream, f'[querylog]\ndnstap = "unix:{tmp_path / "dnstap.sock"}"\n'
        )
        try:
            exercise(server)
        finally:
            server.stop()
    finally:
        receiver.close()
    assert receiver.controls[:2] == [fs.READY, fs.START] and receiver.controls[-1] == fs.STOP
    check_log(decoded(receiver.out), dnstap_read(receiver.out))


def test_dnstap_socket_read_by_fstrm_capture(tmp_path: Path, upstream: FakeUpstream) -> None:
    """fstrm_capture (Debian fstrm-bin), the Frame Streams library's own receiver, takes the
    stream from blokir's unix socket sink and writes a file; dnstap-read reads that file."""
    binary = shutil.which("fstrm_capture")
    if binary is None:
        pytest.skip("fstrm_capture (fstrm-bin) is not installed")
    sock, out = tmp_path / "dnstap.sock", tmp_path / "captured.fstrm"
    capture = ManagedProcess(
        "fstrm_capture",
        [binary, "-t", "protobuf:dnstap.Dnstap", "-u", str(sock), "-w", str(out)],
        tmp_path / "fstrm_capture.log",
    )
    try:
        listening = Deadline(10)
        while not sock.exists():
            capture.check_alive()
            assert listening.remaining() > 0, "fstrm_capture did not listen"
            time.sleep(0.05)
        server = Server(tmp_path, upstream, f'[querylog]\ndnstap = "unix:{sock}"\n')
        try:
            exercise(server)
        finally:
            server.stop()
    finally:
        capture.stop(timeout=10)  # SIGTERM: it finishes its file with STOP and exits
    check_log(decoded(out), dnstap_read(out))
