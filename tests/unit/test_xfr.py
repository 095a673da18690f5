"""The secondary side of RPZ over zone transfer without a network: `axfr://` list config, the
NOTIFY listener's answers (RFC 1996), serial arithmetic (RFC 1982) and timers of a Secondary,
and how `blokir status` shows such a list. The transfers themselves are tested against NSD and a
fake primary in tests/integration/test_xfr_secondary.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.tsig
import dns.zone
import pytest

from resolver.config import ConfigError, parse_config
from resolver.status import format_status
from resolver.xfr.notify import NotifyListener
from resolver.xfr.secondary import Secondaries, Secondary, _Failure, keyring_of
from resolver.xfr.source import TsigKey, XfrSource, parse_xfr_url

SECRET = "c2VjcmV0LWZvci10aGUtdW5pdC10ZXN0cy0wMDE="
KEY = TsigKey("xfr-key.", "hmac-sha256", SECRET)
ZONE = "rpz.example."


def config_of(body: str, tmp_path: Path) -> Any:
    return parse_config(body, tmp_path / "blokir.toml")


# -- config ---------------------------------------------------------------------------------


def test_axfr_list_is_an_rpz_copy_in_the_state_dir(tmp_path: Path) -> None:
    config = config_of(
        f"""
[updates]
state_dir = "state"
[[lists]]
name = "regulator"
path = "axfr://192.0.2.53/RPZ.Example"
tsig = {{ name = "xfr-key", secret = "{SECRET}" }}
""",
        tmp_path,
    )
    (entry,) = config.lists
    assert entry.format == "rpz"
    assert entry.path == tmp_path / "state" / "regulator.list"
    assert entry.source.url is None
    assert entry.source.xfr == XfrSource("192.0.2.53", 53, ZONE, KEY)
    assert entry.source.xfr.url == "axfr://192.0.2.53:53/rpz.example."
    assert SECRET not in repr(entry)  # the secret never reaches a log line
    assert config.rpz.notify_listen is None
    assert config.rpz.notify_allowed("127.0.0.1") and not config.rpz.notify_allowed("192.0.2.1")


def test_rpz_notify_keys(tmp_path: Path) -> None:
    config = config_of(
        '[rpz]\nnotify_listen = "[::1]:5399"\nnotify_from = ["192.0.2.0/24"]\n', tmp_path
    )
    assert config.rpz.notify_listen == ("::1", 5399)
    assert config.rpz.notify_allowed("192.0.2.9")
    assert not config.rpz.notify_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('path = "axfr://primary.example/rpz.example."', "is not an IP address"),
        ('path = "axfr://192.0.2.1:99999/rpz.example."', "port"),
        ('path = "axfr://192.0.2.1/"', "must be the zone name"),
        ('path = "axfr://192.0.2.1/rpz.example."\nformat = "hosts"', "is an RPZ zone"),
        (
            'path = "axfr://192.0.2.1/z."\ntsig = { name = "k", secret = "not base64!" }',
            "not valid base64",
        ),
        (
            'path = "axfr://192.0.2.1/z."\ntsig = { name = "k", algorithm = "hmac-md4", '
            'secret = "YWJj" }',
            "is not one of hmac-sha256",
        ),
        ('path = "axfr://192.0.2.1/z."\ntsig = { name = "k", secret = "YWJj", x = 1 }', "x"),
        ('path = "axfr://192.0.2.1/z."\ntsig = "k:secret"', "inline table"),
        ('path = "list.txt"\ntsig = { name = "k", secret = "YWJj" }', "only used with an axfr"),
    ],
)
def test_bad_axfr_lists_are_rejected_with_the_key(tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_of(f'[[lists]]\nname = "feed"\n{lines}\n', tmp_path)
    assert message in str(raised.value)
    assert "lists[0]" in str(raised.value)


def test_ipv6_primary_url() -> None:
    source = parse_xfr_url("axfr://[2001:db8::53]:5300/rpz.example")
    assert (source.host, source.port, source.zone) == ("2001:db8::53", 5300, ZONE)
    assert source.url == "axfr://[2001:db8::53]:5300/rpz.example."


# -- NOTIFY ---------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.notified: list[tuple[str, str]] = []

    def __call__(self, zone: dns.name.Name, client: str) -> bool:
        self.notified.append((zone.to_text(), client))
        return zone == dns.name.from_text(ZONE)


def listener(recorder: Recorder) -> NotifyListener:
    return NotifyListener(
        ("127.0.0.1", 0),
        lambda client: client.startswith("127."),
        recorder,
        lambda: keyring_of([KEY]),
    )


def notify_for(zone: str, opcode: int = dns.opcode.NOTIFY) -> dns.message.Message:
    message = dns.message.make_query(zone, "SOA")
    message.set_opcode(opcode)
    message.flags |= dns.flags.AA
    return message


def test_notify_from_an_allowed_primary_is_obeyed_and_answered() -> None:
    recorder = Recorder()
    notify = notify_for(ZONE)
    wire = listener(recorder).answer(notify.to_wire(), "127.0.0.1")
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == notify.id and reply.opcode() == dns.opcode.NOTIFY
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
    assert reply.rcode() == dns.rcode.NOERROR and reply.question == notify.question
    assert recorder.notified == [(ZONE, "127.0.0.1")]


@pytest.mark.parametrize(
    ("message", "client", "rcode"),
    [
        (notify_for(ZONE), "192.0.2.1", dns.rcode.REFUSED),  # not in notify_from
        (notify_for("other.example."), "127.0.0.1", dns.rcode.NOTAUTH),  # not our zone
        (notify_for(ZONE, dns.opcode.QUERY), "127.0.0.1", dns.rcode.NOTIMP),
    ],
)
def test_notify_refused(message: dns.message.Message, client: str, rcode: int) -> None:
    recorder = Recorder()
    wire = listener(recorder).answer(message.to_wire(), client)
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == rcode
    assert all(zone == "other.example." for zone, _ in recorder.notified)


def test_notify_not_of_an_soa_is_a_format_error() -> None:
    message = dns.message.make_query(ZONE, "A")
    message.set_opcode(dns.opcode.NOTIFY)
    wire = listener(Recorder()).answer(message.to_wire(), "127.0.0.1")
    assert wire is not None and dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


def test_signed_notify_is_checked_and_answered_signed() -> None:
    recorder = Recorder()
    keyring = keyring_of([KEY])
    notify = notify_for(ZONE)
    notify.use_tsig(keyring, dns.name.from_text(KEY.name))
    wire = listener(recorder).answer(notify.to_wire(), "127.0.0.1")
    assert wire is not None
    reply = dns.message.from_wire(wire, keyring=keyring, request_mac=notify.mac)
    assert reply.had_tsig and reply.rcode() == dns.rcode.NOERROR
    assert len(recorder.notified) == 1

    forged = notify_for(ZONE)
    wrong = keyring_of([TsigKey(KEY.name, KEY.algorithm, "d3Jvbmctc2VjcmV0LTAwMDAwMDAw")])
    forged.use_tsig(wrong, dns.name.from_text(KEY.name))
    assert listener(recorder).answer(forged.to_wire(), "127.0.0.1") is None
    assert len(recorder.notified) == 1


def test_responses_and_garbage_get_no_answer() -> None:
    recorder = Recorder()
    response = dns.message.make_response(notify_for(ZONE))
    assert listener(recorder).answer(response.to_wire(), "127.0.0.1") is None
    assert listener(recorder).answer(b"\x00\x01garbage", "127.0.0.1") is None
    assert recorder.notified == []


# -- a Secondary's serials and timers --------------------------------------------------------


def held(tmp_path: Path, serial: int) -> Secondary:
    secondary = Secondary("feed", XfrSource("127.0.0.1", 53, ZONE), tmp_path)
    zone = dns.zone.from_text(
        f"@ 60 SOA ns hostmaster {serial} 3600 600 86400 60\n@ 60 NS ns\nbad 60 CNAME .\n",
        origin=ZONE,
        relativize=False,
    )
    zone.to_file(str(secondary.copy), relativize=False)
    secondary.state.serial = serial
    return secondary


@pytest.mark.parametrize(
    ("ours", "theirs", "result"),
    [
        (7, 8, "ixfr"),
        (0xFFFFFFF0, 5, "ixfr"),  # RFC 1982: 5 is after 4294967280 (wrapped)
        (5, 0xFFFFFFF0, "serial_backwards"),
        (8, 7, "serial_backwards"),
        (8, 8 + 2**31, "serial_backwards"),  # undefined in RFC 1982: never taken as newer
        (9, 9, "not_modified"),
    ],
)
def test_serial_arithmetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ours: int, theirs: int, result: str
) -> None:
    secondary = held(tmp_path, ours)
    monkeypatch.setattr(secondary, "_primary_serial", lambda timeout: theirs)
    asked: list[int] = []

    def fake_ixfr(serial: int, timeout: float) -> Any:
        asked.append(serial)
        raise _Failure("network", "stopped by the test", "IXFR")

    monkeypatch.setattr(secondary, "_ixfr", fake_ixfr)
    outcome = secondary.transfer(1.0)
    if result == "ixfr":
        assert asked == [ours]
    else:
        assert asked == []
        assert (outcome.reason or outcome.outcome) == result
        assert secondary.state.last_result == result


def test_a_copy_that_cannot_be_read_back_still_guards_its_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secondary = held(tmp_path, 7)
    secondary.copy.write_text("this is no zone file (\n")
    monkeypatch.setattr(secondary, "_primary_serial", lambda timeout: 8)
    asked: list[int | None] = []

    def fake_axfr(ours: int | None, timeout: float) -> Any:
        asked.append(ours)
        raise _Failure("network", "stopped by the test", "AXFR")

    monkeypatch.setattr(secondary, "_axfr", fake_axfr)
    secondary.transfer(1.0)
    assert asked == [7]  # AXFR (no zone to apply an IXFR to), refusing anything not after 7


def test_timers_follow_soa_refresh_retry_and_notify(tmp_path: Path) -> None:
    secondary = held(tmp_path, 1)
    secondary.state.refresh, secondary.state.retry = 3600.0, 600.0
    assert secondary.due(0.0)  # just started: ask once serving has begun
    secondary._check_now = False
    secondary.state.checked_at = 1000.0
    secondary.state.last_result = "not_modified"
    assert not secondary.due(1000.0 + 3599) and secondary.due(1000.0 + 3600)
    secondary.state.last_result = "tsig"  # failing: the retry timer
    assert secondary.due(1000.0 + 600) and not secondary.due(1000.0 + 599)
    secondary.state.last_result = "updated"
    secondary.refresh_override = 30.0  # the list's `refresh`
    assert secondary.due(1000.0 + 30) and not secondary.due(1000.0 + 29)
    secondary.notify()
    assert secondary.due(1000.0)


def test_secondaries_route_notify_by_zone_and_keep_state_across_reloads(tmp_path: Path) -> None:
    registry = Secondaries()
    source = XfrSource("127.0.0.1", 53, ZONE)
    registry.sync(
        [("feed", source, None), ("other", XfrSource("127.0.0.1", 53, "o."), None)], tmp_path
    )
    feed = registry.get("feed")
    assert feed is not None
    assert registry.notify(dns.name.from_text(ZONE)) == ["feed"]
    assert registry.notify(dns.name.from_text("nobody.example.")) == []
    registry.sync([("feed", source, 60.0)], tmp_path)
    assert registry.get("feed") is feed and feed.refresh_override == 60.0
    assert registry.get("other") is None
    registry.sync([("feed", XfrSource("127.0.0.1", 54, ZONE), None)], tmp_path)
    assert registry.get("feed") is not feed  # another primary: a new secondary


# -- blokir status ---------------------------------------------------------------------------


def test_status_shows_serial_kind_and_failure() -> None:
    entry = {
        "name": "regulator",
        "kind": "axfr",
        "source": "axfr://127.0.0.1:53/rpz.example.",
        "names": 3,
        "rejected": 0,
        "sha256": "ab" * 32,
        "updated_at": 1000.0,
        "checked_at": 1100.0,
        "last_result": "tsig",
        "last_error": "SOA query to axfr://127.0.0.1:53/rpz.example.: TSIG check failed",
        "serial": 42,
        "transfer": "IXFR",
        "last_transfer": "SOA",
        "transfers": {},
    }
    status = {
        "index": {"path": "i", "names": 3, "checksum": "c", "built_at": 0, "loaded_at": 0},
        "lists": [entry],
        "config": "blokir.toml",
    }
    text = format_status(status, now=1160.0)
    assert "regulator: serial 42 by IXFR 3m ago; last attempt SOA tsig 1m ago" in text
    assert "regulator: last transfer failed: SOA query" in text
    assert "tsig 1m ago" in text
