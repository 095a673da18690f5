"""blokir as an RPZ primary, spoken to by dnspython's transfer client over loopback: AXFR equals
`blokir export --format rpz`, IXFR carries a change, the serial only grows and survives a
restart, NOTIFY goes out, and clients outside allow_transfer or without a valid TSIG are turned
away."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest

from resolver.compile import collect_names
from resolver.config import Config, load_config
from resolver.export import export
from resolver.xfr.history import serial_gt
from resolver.xfr.primary import Primary

pytestmark = pytest.mark.integration

ZONE = "rpz.blokir."
SECRET = "c2VjcmV0LWZvci10aGUtdGVzdC1rZXktb25seQ=="
OTHER_SECRET = "b3RoZXItc2VjcmV0LW5vdC10aGUtc2FtZS1rZXk="
KEY = "xfr-key."


def write_config(tmp: Path, rpz: str) -> Config:
    (tmp / "allow.txt").write_text("ok.blocked.test\n")
    (tmp / "block.txt").write_text("blocked.test\nexact.blocked.test\n")
    (tmp / "nx.txt").write_text("nx.test\n")
    (tmp / "blokir.toml").write_text(f"""
[blocking]
index_path = "{tmp}/index.blkx"
landing_ipv4 = "192.0.2.10"
landing_ipv6 = "2001:db8::10"

[[allowlists]]
name = "allow"
path = "allow.txt"

[[lists]]
name = "block"
path = "block.txt"

[[lists]]
name = "nx"
path = "nx.txt"
action = "nxdomain"

[rpz]
listen = ["127.0.0.1:0"]
{rpz}
""")
    return load_config(tmp / "blokir.toml")


@pytest.fixture
def make_primary(tmp_path: Path) -> Iterator[object]:
    started: list[Primary] = []

    def make(rpz: str = "", build: bool = True) -> Primary:
        primary = Primary(write_config(tmp_path, rpz))
        primary.bind()
        primary.serve()
        started.append(primary)
        if build:
            assert primary.build(primary.config) is not None or primary.history.current
        return primary

    try:
        yield make
    finally:
        for primary in started:
            primary.stop()


def keyring(secret: str = SECRET) -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({KEY: ("hmac-sha256", secret)})


def axfr(primary: Primary, **tsig: object) -> dns.zone.Zone:
    host, port = primary.addresses()[0]
    zone = dns.zone.Zone(ZONE)
    query, _ = dns.xfr.make_query(zone, **tsig)  # type: ignore[arg-type]
    dns.query.inbound_xfr(host, zone, query, port=port, timeout=10, lifetime=30)
    return zone


def records(zone: dns.zone.Zone) -> set[str]:
    """Every record but the SOA, as text."""
    found = set()
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype != dns.rdatatype.SOA:
                found.update(f"{name} {rdataset.ttl} {rd.rdtype.name} {rd}" for rd in rdataset)
    return found


def serial(zone: dns.zone.Zone) -> int:
    soa = zone.get_soa()
    return int(soa.serial)


def raw_tcp(primary: Primary, wire: bytes) -> dns.message.Message:
    """Send one query over TCP and parse the first reply without checking any TSIG on it."""
    host, port = primary.addresses()[0]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        head = sock.recv(2, socket.MSG_WAITALL)
        body = sock.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
    return dns.message.from_wire(body, keyring=False)


def test_axfr_is_the_rpz_export(make_primary: object, tmp_path: Path) -> None:
    primary = make_primary()  # type: ignore[operator]
    zone = axfr(primary)
    config = primary.config
    out = tmp_path / "export.rpz"
    with out.open("w", encoding="ascii") as text:
        export(
            collect_names(config.list_specs()),
            "rpz",
            text,
            landing_ipv4=config.blocking.landing_ipv4,
            landing_ipv6=config.blocking.landing_ipv6,
            ttl=config.blocking.ttl,
            zone=ZONE,
        )
    exported = dns.zone.from_text(out.read_text(), origin=ZONE, relativize=True)
    assert records(zone) == records(exported)
    assert "ok.blocked.test 60 CNAME rpz-passthru." in records(zone)  # the allowlist
    assert "nx.test 60 CNAME ." in records(zone)
    assert "blocked.test 60 A 192.0.2.10" in records(zone)  # landing as local data
    # Packed into message bodies (what AXFR sends once the packing child is done): the same.
    version = primary.history.current
    assert version is not None and not version.wire.is_file()
    primary.pack(version)
    assert version.wire.is_file()
    assert records(axfr(primary)) == records(zone)


def test_ixfr_carries_a_change_and_the_serial_grows(make_primary: object, tmp_path: Path) -> None:
    primary = make_primary()  # type: ignore[operator]
    zone = axfr(primary)
    before = serial(zone)
    with (tmp_path / "block.txt").open("a") as lists:
        lists.write("new.test\n")
    (tmp_path / "nx.txt").write_text("")  # nx.test leaves the policy
    version = primary.build(primary.config)
    assert version is not None and serial_gt(version.serial, before)
    # Built from the changed lists: the step only; AXFR merges it into the old snapshot.
    assert primary.last_build["incremental"] and version.pending
    pending = records(axfr(primary))
    host, port = primary.addresses()[0]
    query, _ = dns.xfr.make_query(zone)
    assert query.question[0].rdtype == dns.rdatatype.IXFR
    done = dns.query.inbound_xfr(host, zone, query, port=port, timeout=10, lifetime=30)
    del done
    assert serial(zone) == version.serial
    assert records(zone) == pending
    primary.materialize(version)  # what the build thread does once NOTIFY is out
    assert not version.pending and version.snapshot.is_file()
    assert records(zone) == records(axfr(primary))
    assert "new.test 60 A 192.0.2.10" in records(zone)
    assert not any(r.startswith("nx.test ") for r in records(zone))
    assert primary.counts.get("ixfr") == 1
    # Unchanged lists: no new version, the serial stays.
    assert primary.build(primary.config) is None
    assert primary.history.current is not None
    assert primary.history.current.serial == version.serial


def test_ixfr_beyond_history_is_answered_with_the_whole_zone(make_primary: object) -> None:
    primary = make_primary()  # type: ignore[operator]
    host, port = primary.addresses()[0]
    stale = dns.zone.Zone(ZONE)
    query = dns.message.make_query(ZONE, "IXFR")
    query.authority.append(
        dns.rrset.from_text(ZONE, 0, "IN", "SOA", "a. b. 12345 1 1 1 1")  # never served
    )
    messages = list(dns.query.xfr(host, ZONE, "IXFR", port=port, serial=12345, timeout=10))
    answers = [rr for m in messages for rrset in m.answer for rr in rrset]
    del query, stale
    # An AXFR-style answer: SOA, every record, SOA (RFC 1995 section 4).
    assert len(answers) == primary.history.current.records + 3  # type: ignore[union-attr]


def test_serial_survives_a_restart(make_primary: object) -> None:
    first = make_primary()  # type: ignore[operator]
    was = serial(axfr(first))
    first.stop()
    again = make_primary(build=False)  # type: ignore[operator]
    assert serial(axfr(again)) == was  # served from the state directory before any build
    assert again.build(again.config) is None  # same content: the serial stays


def test_outside_allow_transfer_is_refused(make_primary: object) -> None:
    primary = make_primary('allow_transfer = ["192.0.2.0/24"]')  # type: ignore[operator]
    for rdtype in ("SOA", "AXFR"):
        reply = raw_tcp(primary, dns.message.make_query(ZONE, rdtype).to_wire())
        assert reply.rcode() == dns.rcode.REFUSED, rdtype
        assert not reply.answer
    assert primary.counts["refused"] == 2


def test_tsig_required_and_checked(make_primary: object) -> None:
    primary = make_primary(  # type: ignore[operator]
        f'tsig = [{{ name = "{KEY}", algorithm = "hmac-sha256", secret = "{SECRET}" }}]\n'
        "require_tsig = true"
    )
    unsigned = raw_tcp(primary, dns.message.make_query(ZONE, "AXFR").to_wire())
    assert unsigned.rcode() == dns.rcode.REFUSED
    wrong = dns.message.make_query(ZONE, "AXFR")
    wrong.use_tsig(keyring(OTHER_SECRET), keyname=KEY)
    reply = raw_tcp(primary, wrong.to_wire())
    assert reply.rcode() == dns.rcode.NOTAUTH and not reply.answer
    with pytest.raises(Exception):  # noqa: B017 - dnspython's error for a refused transfer
        axfr(primary, keyring=keyring(OTHER_SECRET), keyname=KEY)
    # The right key: a whole zone, every message's signature checked by dnspython.
    zone = axfr(primary, keyring=keyring(), keyname=KEY)
    assert "blocked.test 60 A 192.0.2.10" in records(zone)
    assert primary.counts["notauth"] >= 2


def test_notify_after_a_new_version(make_primary: object, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    got: list[dns.message.Message] = []

    def answer_one() -> None:
        wire, peer = listener.recvfrom(65535)
        message = dns.message.from_wire(wire, keyring=keyring())
        got.append(message)
        reply = dns.message.make_response(message)
        listener.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=answer_one)
    thread.start()
    try:
        primary = make_primary(  # type: ignore[operator]
            f'notify = ["127.0.0.1:{port}"]\n'
            f'tsig = [{{ name = "{KEY}", algorithm = "hmac-sha256", secret = "{SECRET}" }}]'
        )
        version = primary.history.current
        primary.notify(version.serial)
        thread.join(15)
    finally:
        listener.close()
    assert got, "no NOTIFY arrived"
    notify = got[0]
    assert notify.opcode() == dns.opcode.NOTIFY and notify.had_tsig
    assert str(notify.question[0].name) == ZONE
    assert notify.answer[0][0].serial == version.serial
