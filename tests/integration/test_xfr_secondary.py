"""blokir as a secondary: its list is an RPZ zone it takes by zone transfer.

With a real NSD as the primary (TSIG on, IXFR data kept): AXFR at start, IXFR after the zone
changes, started by NSD's NOTIFY, and the new policy answered by the running blokir within a
couple of seconds; a serial that goes backwards and a wrong TSIG secret are refused while the
old policy keeps answering, and `blokir status` and the metrics say so. A tiny fake primary
covers what NSD will not do: cut the stream short, send garbage, refuse IXFR (blokir falls back
to AXFR, RFC 1995 section 4).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.integration.dnsutil import UPSTREAM_IPV4, answer_everything, free_port
from tests.integration.test_live_updates import LANDING, STAYING, LiveBlokir
from tests.support.processes import Deadline, ManagedProcess, find_binary
from tests.support.servers import start_nsd, wait_for_answer
from tests.support.upstream import FakeUpstream, udp_tcp_pair

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
ZONE = "rpz.example."
KEY_NAME = "xfr-key."
SECRET = "c2VjcmV0LWZvci10aGUtdGVzdC1wcmltYXJ5LTAx"  # base64 of a 30-byte test secret
WRONG_SECRET = "d3Jvbmctc2VjcmV0LWZvci10aGUtdGVzdC0wMQ=="
APPLY_WITHIN = 5.0  # seconds from the primary's reload to the new answer (NOTIFY+IXFR+build)


def zone_text(serial: int, blocked: list[str]) -> str:
    lines = [
        f"$ORIGIN {ZONE}",
        "$TTL 60",
        f"@ SOA ns.{ZONE} hostmaster.{ZONE} {serial} 3600 600 86400 60",
        "@ NS localhost.",
    ]
    # The names LiveBlokir.start() waits for, as RPZ local data (a landing answer).
    lines += [f"{name} A {LANDING}" for name in STAYING]
    lines += [f"{name} CNAME ." for name in blocked]
    return "\n".join(lines) + "\n"


class XfrBlokir(LiveBlokir):
    """`blokir serve` (tests/integration/test_live_updates.py) with one axfr:// list."""

    def __init__(
        self,
        tmp: Path,
        upstream_port: int,
        primary_port: int,
        secret: str | None,
        notify_port: int | None = None,
    ) -> None:
        self.notify_port = notify_port or free_port()
        self.secret = secret
        super().__init__(tmp, upstream_port, f"axfr://{LOOPBACK}:{primary_port}/{ZONE}")

    def write_config(self, extra_list: str = "") -> None:
        tsig = f'tsig = {{ name = "{KEY_NAME}", secret = "{self.secret}" }}' if self.secret else ""
        self.config.write_text(
            f"""
[server]
listen = ["{LOOPBACK}:{self.port}"]
[upstream]
servers = ["{LOOPBACK}:{self.upstream_port}"]
timeout = 1.0
attempts = 1
[blocking]
index_path = "index.blkx"
[cache]
max_entries = 0
[metrics]
listen = "{LOOPBACK}:{self.metrics_port}"
[updates]
watch_interval = 0.3
download_timeout = 2.0
[rpz]
notify_listen = "{LOOPBACK}:{self.notify_port}"
notify_from = ["127.0.0.1/32"]
[[lists]]
name = "regulator"
path = "{self.url}"
{tsig}
"""
        )

    def use_secret(self, secret: str) -> None:
        self.secret = secret
        self.write_config()

    def wait_answer(self, name: str, expected: str, within: float) -> float:
        """Seconds until `name` is answered `expected`; fails after `within`."""
        started = time.monotonic()
        seen: str | None = ""
        while time.monotonic() - started < within:
            seen = self.address(name)
            if seen == expected:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{name}: {seen}, not {expected}, after {within} s\n{self.tail()}")

    def list_status(self) -> dict[str, object]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        (entry,) = json.loads(done.stdout)["lists"]
        assert isinstance(entry, dict)
        return entry

    def metrics(self) -> str:
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def start_nsd_primary(
    workdir: Path, zonefile: Path, notify_port: int
) -> tuple[ManagedProcess, int]:
    """NSD as an RPZ primary: transfers to loopback signed with the key only, IXFR data made
    from the zone file on every reload (create-ixfr + store-ixfr), NOTIFY to blokir."""
    key = f"""key:
    name: "{KEY_NAME}"
    algorithm: hmac-sha256
    secret: "{SECRET}"
"""
    options = f"""    provide-xfr: 127.0.0.1 {KEY_NAME}
    store-ixfr: yes
    create-ixfr: yes
    notify: 127.0.0.1@{notify_port} {KEY_NAME}
"""
    return start_nsd(
        workdir,
        ZONE,
        zonefile,
        f"{STAYING[0]}.{ZONE}",
        Deadline(60),
        clauses=key,
        zone_options=options,
    )


StartPrimary = Callable[[Path, Path, int], tuple[ManagedProcess, int]]


def feeding_blokir(
    tmp_path: Path, upstream: FakeUpstream, start: StartPrimary
) -> tuple[ManagedProcess, XfrBlokir, Path]:
    """A primary started on the zone at serial 1 (NOTIFY to blokir's listener) and a blokir,
    not started yet, whose list it feeds; and the zone file."""
    workdir = tmp_path / "primary"
    workdir.mkdir()
    zonefile = workdir / "rpz.zone"
    zonefile.write_text(zone_text(1, ["bad.example"]))
    notify_port = free_port()
    primary, port = start(workdir, zonefile, notify_port)
    return primary, XfrBlokir(tmp_path, upstream.port, port, SECRET, notify_port), zonefile


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        answer_everything(fake)
        yield fake


def test_nsd_primary_feeds_blokir_by_axfr_then_ixfr(tmp_path: Path, upstream: FakeUpstream) -> None:
    if find_binary("nsd") is None:
        pytest.skip("nsd not installed (scripts/install-test-deps installs it)")
    primary, blokir, zonefile = feeding_blokir(tmp_path, upstream, start_nsd_primary)
    try:
        blokir.start()
        # AXFR at start.
        assert blokir.address("bad.example") == "NXDOMAIN"
        assert blokir.address("www.bad.example") == UPSTREAM_IPV4  # no wildcard owner
        assert blokir.address("new.example") == UPSTREAM_IPV4
        entry = blokir.list_status()
        assert (entry["kind"], entry["serial"], entry["transfer"]) == ("axfr", 1, "AXFR")

        # The zone changes; NSD reloads and sends NOTIFY; blokir takes it by IXFR.
        zonefile.write_text(zone_text(2, ["bad.example", "new.example", "*.wild.example"]))
        os.kill(primary.pid, signal.SIGHUP)
        took = blokir.wait_answer("new.example", "NXDOMAIN", APPLY_WITHIN)
        assert blokir.address("x.wild.example") == "NXDOMAIN"
        entry = blokir.list_status()
        assert (entry["serial"], entry["transfer"], entry["last_result"]) == (
            2,
            "IXFR",
            "updated",
        ), entry
        metrics = blokir.metrics()
        assert re.search(r'^blokir_list_zone_serial\{list="regulator"\} 2\.0$', metrics, re.M)
        assert re.search(
            r'^blokir_list_transfers_total\{kind="IXFR",list="regulator",result="updated"\} '
            r"1\.0$",
            metrics,
            re.M,
        ), metrics
        print(f"IXFR applied {took:.2f} s after the primary's reload")

        # A serial that goes backwards (RFC 1982) is refused; the old policy stays.
        zonefile.write_text(zone_text(1, ["bad.example", "back.example"]))
        os.kill(primary.pid, signal.SIGHUP)
        time.sleep(1.5)  # NSD's reload
        done = blokir.cli("reload")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "serial_backwards" in done.stdout, done.stdout
        assert blokir.address("back.example") == UPSTREAM_IPV4
        assert blokir.address("new.example") == "NXDOMAIN"
        entry = blokir.list_status()
        assert (entry["serial"], entry["last_result"]) == (2, "serial_backwards"), entry
        status = blokir.cli("status").stdout
        assert "regulator: serial 2 by IXFR" in status, status
        assert "last transfer failed" in status, status

        # A wrong TSIG secret: the primary refuses our queries, and its NOTIFY (signed with the
        # right key) does not verify here; nothing changes.
        blokir.use_secret(WRONG_SECRET)
        blokir.cli("reload")  # takes the new config
        zonefile.write_text(zone_text(3, ["bad.example", "new.example", "third.example"]))
        os.kill(primary.pid, signal.SIGHUP)
        time.sleep(1.5)
        assert blokir.address("third.example") == UPSTREAM_IPV4
        assert "NOTIFY from 127.0.0.1: TSIG check failed" in blokir.tail()
        done = blokir.cli("reload")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "(tsig)" in done.stdout, done.stdout
        assert blokir.address("third.example") == UPSTREAM_IPV4
        assert blokir.address("new.example") == "NXDOMAIN"
        assert blokir.list_status()["last_result"] == "tsig"

        # The right secret again: serial 3 arrives. NSD keeps no 2 -> 3 difference (the zone
        # went 2 -> 1 -> 3), so it answers our IXFR AXFR-style (RFC 1995 section 4): one
        # attempt that replaces the zone whole, no second AXFR query.
        blokir.use_secret(SECRET)
        done = blokir.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        assert blokir.address("third.example") == "NXDOMAIN"
        assert blokir.address("back.example") == UPSTREAM_IPV4
        entry = blokir.list_status()
        assert (entry["serial"], entry["transfer"]) == (3, "AXFR"), entry
        # Counted since the key changed; SOA-only checks (NSD repeats its NOTIFY) aside.
        transfers = entry["transfers"]
        assert isinstance(transfers, dict)
        assert {k: v for k, v in transfers.items() if not k.startswith("SOA")} == {
            "AXFR updated": 1
        }, transfers
        assert "trying AXFR" not in blokir.tail()
    finally:
        blokir.stop()
        primary.stop()
    # After a restart the last good copy serves while the primary is gone.
    blokir.start()
    try:
        assert blokir.address("third.example") == "NXDOMAIN"
        assert "serving the last good transfer, serial 3" in blokir.tail()
    finally:
        blokir.stop()


def start_bind(workdir: Path, zonefile: Path, notify_port: int) -> tuple[ManagedProcess, int]:
    """BIND 9 as an RPZ primary: TSIG-only transfers, IXFR computed from the edited zone file
    (ixfr-from-differences), NOTIFY to blokir's listener only (notify explicit)."""
    named = find_binary("named")
    if named is None:
        pytest.skip("named not installed (scripts/install-test-deps installs bind9)")
    port = free_port()
    conf = workdir / "named.conf"
    conf.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;  # no trust-anchor fetch: nothing leaves loopback
    notify-source 127.0.0.1;
}};
controls {{ }};
key "{KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{SECRET}";
}};
zone "{ZONE}" {{
    type primary;
    file "{zonefile}";
    allow-transfer {{ key "{KEY_NAME}"; }};
    also-notify {{ 127.0.0.1 port {notify_port} key "{KEY_NAME}"; }};
    notify explicit;
    notify-delay 0;
    ixfr-from-differences yes;
}};
"""
    )
    server = ManagedProcess("named", [named, "-g", "-c", str(conf)], workdir / "named.log")
    try:
        wait_for_answer(server, port, f"{STAYING[0]}.{ZONE}", time.monotonic() + 30)
    except BaseException:
        server.stop()
        raise
    return server, port


def test_bind_primary_feeds_blokir_by_axfr_then_ixfr(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    primary, blokir, zonefile = feeding_blokir(tmp_path, upstream, start_bind)
    workdir = zonefile.parent
    try:
        blokir.start()
        assert blokir.address("bad.example") == "NXDOMAIN"
        assert blokir.address("new.example") == UPSTREAM_IPV4
        zonefile.write_text(zone_text(2, ["bad.example", "new.example"]))
        # Queries go on while the transfer is applied (index rebuilt and swapped): none lost.
        lost: list[str] = []
        stop = threading.Event()

        def ask_meanwhile() -> None:
            for _ in range(5000):  # bounded; stopped once the change is in
                if stop.is_set():
                    return
                try:
                    if blokir.address(STAYING[1]) != LANDING:
                        lost.append("wrong answer")
                except (dns.exception.Timeout, OSError) as exc:
                    lost.append(type(exc).__name__)

        asker = threading.Thread(target=ask_meanwhile, daemon=True)
        asker.start()
        os.kill(primary.pid, signal.SIGHUP)  # named reloads the changed zone and notifies
        try:
            took = blokir.wait_answer("new.example", "NXDOMAIN", APPLY_WITHIN)
            time.sleep(0.3)  # the swap's tail
        finally:
            stop.set()
            asker.join(10)
        assert lost == []
        entry = blokir.list_status()
        assert (entry["serial"], entry["transfer"]) == (2, "IXFR"), entry
        log = (workdir / "named.log").read_text()
        assert "IXFR started: TSIG xfr-key (serial 1 -> 2)" in log, log[-2000:]
        print(f"IXFR from BIND applied {took:.2f} s after its reload")
    finally:
        blokir.stop()
        primary.stop()


# -- a fake primary for what a real one does not do ---------------------------------------------


class FakePrimary:
    """Answers SOA over UDP and AXFR/IXFR over TCP from `records` at `serial`, unsigned. `mode`:
    ok; cut (the stream stops mid-message); garbage (a message of random bytes); noixfr (IXFR
    answered NOTIMP, AXFR served)."""

    def __init__(self) -> None:
        self.serial = 1
        self.blocked = ["bad.example"]
        self.mode = "ok"
        self.asked: list[str] = []
        self.udp, self.tcp = udp_tcp_pair(LOOPBACK)
        self.port = int(self.udp.getsockname()[1])
        self.tcp.listen(8)
        for sock in (self.udp, self.tcp):
            sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.udp.close()
        self.tcp.close()

    def _soa(self) -> dns.rrset.RRset:
        return dns.rrset.from_text(
            ZONE, 60, "IN", "SOA", f"ns.{ZONE} hostmaster.{ZONE} {self.serial} 3600 600 86400 60"
        )

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, sender = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            if query.question[0].rdtype == dns.rdatatype.SOA:
                reply.answer.append(self._soa())
            self.udp.sendto(reply.to_wire(), sender)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):  # blokir may hang up first
                    self._transfer(conn)

    def _transfer(self, conn: socket.socket) -> None:
        (length,) = struct.unpack("!H", _read(conn, 2))
        query = dns.message.from_wire(_read(conn, length))
        kind = dns.rdatatype.to_text(query.question[0].rdtype)
        self.asked.append(kind)
        reply = dns.message.make_response(query)
        if self.mode == "noixfr" and kind == "IXFR":
            reply.set_rcode(dns.rcode.NOTIMP)
            _send(conn, reply.to_wire())
            return
        reply.answer.append(self._soa())
        for name in STAYING:
            reply.answer.append(dns.rrset.from_text(f"{name}.{ZONE}", 60, "IN", "A", LANDING))
        for name in self.blocked:
            reply.answer.append(dns.rrset.from_text(f"{name}.{ZONE}", 60, "IN", "CNAME", "."))
        reply.answer.append(self._soa())
        wire = reply.to_wire()
        if self.mode == "cut":
            conn.sendall(struct.pack("!H", len(wire)) + wire[: len(wire) // 2])
            return  # closed with half a message sent
        if self.mode == "garbage":
            junk = bytes(wire[:12]) + os.urandom(len(wire) - 12)
            _send(conn, junk)
            return
        _send(conn, wire)


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def _send(conn: socket.socket, wire: bytes) -> None:
    conn.sendall(struct.pack("!H", len(wire)) + wire)


@pytest.fixture
def fake_primary() -> Iterator[FakePrimary]:
    primary = FakePrimary()
    yield primary
    primary.close()


def test_broken_transfers_keep_the_old_policy_and_ixfr_falls_back_to_axfr(
    tmp_path: Path, upstream: FakeUpstream, fake_primary: FakePrimary
) -> None:
    blokir = XfrBlokir(tmp_path, upstream.port, fake_primary.port, None)
    blokir.start()
    try:
        assert blokir.address("bad.example") == "NXDOMAIN"
        assert fake_primary.asked == ["AXFR"]

        fake_primary.serial, fake_primary.blocked = 2, ["bad.example", "new.example"]
        for mode, reason in (("cut", "(truncated)"), ("garbage", "(bad_data)")):
            fake_primary.mode = mode
            done = blokir.cli("reload")
            assert done.returncode == 1, done.stdout + done.stderr
            assert reason in done.stdout, (mode, done.stdout)
            assert blokir.address("new.example") == UPSTREAM_IPV4
            assert blokir.address("bad.example") == "NXDOMAIN"
            entry = blokir.list_status()
            assert entry["serial"] == 1 and entry["last_error"], entry

        # A primary without IXFR: NOTIMP to IXFR, then the AXFR is applied (RFC 1995 section 4).
        fake_primary.mode = "noixfr"
        fake_primary.asked.clear()
        done = blokir.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        assert fake_primary.asked == ["IXFR", "AXFR"]
        assert blokir.address("new.example") == "NXDOMAIN"
        entry = blokir.list_status()
        assert (entry["serial"], entry["transfer"], entry["last_result"]) == (2, "AXFR", "updated")

        # NOTIFY: obeyed from notify_from (127.0.0.1/32), refused from 127.0.0.2, NOTAUTH for a
        # zone that is no list's.
        notify = dns.message.make_query(ZONE, "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        reply = dns.query.udp(notify, LOOPBACK, port=blokir.notify_port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR and reply.opcode() == dns.opcode.NOTIFY
        assert reply.id == notify.id and reply.question == notify.question
        reply = dns.query.udp(
            notify, LOOPBACK, port=blokir.notify_port, timeout=2, source="127.0.0.2"
        )
        assert reply.rcode() == dns.rcode.REFUSED
        other = dns.message.make_query("other.example.", "SOA")
        other.set_opcode(dns.opcode.NOTIFY)
        reply = dns.query.udp(other, LOOPBACK, port=blokir.notify_port, timeout=2)
        assert reply.rcode() == dns.rcode.NOTAUTH
    finally:
        blokir.stop()
    # After a restart the copy (a zone without NS) is read back, so the next refresh is an
    # IXFR from its serial; this primary answers it AXFR-style.
    fake_primary.mode, fake_primary.serial = "ok", 3
    fake_primary.blocked = ["bad.example", "new.example", "third.example"]
    fake_primary.asked.clear()
    blokir.start()
    try:
        assert blokir.address("new.example") == "NXDOMAIN"
        done = blokir.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        assert fake_primary.asked == ["IXFR"]
        assert blokir.address("third.example") == "NXDOMAIN"
    finally:
        blokir.stop()
