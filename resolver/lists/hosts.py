"""Hosts files: `0.0.0.0 a.example b.example`, `127.0.0.1 x`, `:: x`, `#` comments.

The address is ignored: every name gets the list's policy (its action and landing addresses come
from the config, not from the file). Local names that every hosts file carries (`localhost`,
`ip6-allnodes`, ...) and the address repeated as a name are skipped and counted. A line whose
first token is not an IP address is read the way a plain list reads it (mixed lists exist).

Fast path: the big blocking hosts files are millions of `0.0.0.0 name` lines. Each chunk loses
the `0.0.0.0 ` / `0.0.0.0<TAB>` prefix at every line start in bulk (`bytes.replace`, offsets of
lines unchanged), and the remainder goes through `split_clean` like a plain list; only the lines
it flags take the per-line path, read from the original chunk. `127.0.0.1` lines are never
stripped in bulk: they carry `localhost.localdomain`, which would pass the fast path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import BinaryIO

from resolver.lists.chunks import read_chunks, split_clean
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.plain import EntrySink, decode_line, list_policy, match_flags
from resolver.policy import PolicyTable

# Names a hosts file maps for the machine itself; never list entries.
LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
    }
)
# The only local name with a dot, so the only one the fast path would let through.
_LOCAL_DOTTED = b"localhost.localdomain"

_PREFIX_SPACE = b"0.0.0.0 "
_PREFIX_TAB = b"0.0.0.0\t"
_PREFIX_LEN = len(_PREFIX_SPACE)

# A hosts line separates fields by whitespace; a bare-name line is split the way plain.py does.
_HOSTS_SPLIT = re.compile(r"\s+")
_PLAIN_SPLIT = re.compile(r"[\s,;|]+")

SKIP_LOCAL = "hosts_local_name"
REJECT_NO_NAME = "hosts_no_name"


def strip_null_prefix(chunk: bytes) -> bytes:
    """Remove `0.0.0.0 ` or `0.0.0.0<TAB>` from the start of every line, in bulk. Only the first
    occurrence at a line start goes; lines keep their positions, so offsets stay valid."""
    out = chunk.replace(b"\n" + _PREFIX_SPACE, b"\n")
    if b"\t" in out:
        out = out.replace(b"\n" + _PREFIX_TAB, b"\n")
    if out.startswith(_PREFIX_SPACE) or out.startswith(_PREFIX_TAB):
        out = out[_PREFIX_LEN:]
    return out


def _parse_ip(token: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not token or not (token[0].isdigit() or ":" in token):
        return None
    try:
        return ipaddress.ip_address(token)
    except ValueError:
        return None


def _is_local(token: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    """A name the hosts file maps for the machine itself: a well-known local name, the line's
    own address repeated as a name (`0.0.0.0 0.0.0.0`), or any loopback/unspecified address.
    Checked on bare-name lines too, so the fast and the per-line path agree."""
    text = token.lower()
    if text.endswith("."):
        text = text[:-1]
    if text in LOCAL_NAMES:
        return True
    ip = _parse_ip(text)
    return ip is not None and (ip == address or ip.is_loopback or ip.is_unspecified)


class _HostsLines:
    """The per-line path, shared by the lines the fast path flags."""

    def __init__(self, spec: ListSpec, pid: int, sink: EntrySink, report: ParseReport) -> None:
        self.spec = spec
        self.pid = pid
        self.sink = sink
        self.report = report

    def line(self, raw: bytes, line_no: int) -> None:
        text = decode_line(raw, line_no, self.report)
        if text is None:
            return
        body = text.split("#", 1)[0].strip()
        if not body:
            return  # comment or blank
        tokens = _HOSTS_SPLIT.split(body)
        address = _parse_ip(tokens[0])
        if address is None:
            # Not a hosts line: a bare name (or several), read as plain.py reads it.
            self.names([t for t in _PLAIN_SPLIT.split(body) if t], None, line_no, text)
        elif len(tokens) == 1:
            self.report.reject(REJECT_NO_NAME, line_no, text)
        else:
            self.names(tokens[1:], address, line_no, text)

    def names(
        self,
        tokens: list[str],
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        line_no: int,
        text: str,
    ) -> None:
        for token in tokens:
            if _is_local(token, address):
                self.report.skip(SKIP_LOCAL, line_no, text)
            else:
                self.sink.add_token(token, line_no, text, self.pid, self.spec)


def parse_hosts(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "hosts"
    pid = policies.intern(list_policy(spec))
    fast_match = match_flags(spec, wildcard=False)
    sink = EntrySink(report)
    lines = _HostsLines(spec, pid, sink, report)
    for first_line, chunk in read_chunks(stream):
        report.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        stripped = strip_null_prefix(chunk)
        clean, dirty = split_clean(stripped)
        slow = [offset for offset, _ in dirty]
        # Rare lines the bulk strip hides from `split_clean`: `0.0.0.0 localhost.localdomain`
        # (clean after the strip) and an address with no name (`0.0.0.0 ` becomes a blank line).
        # Cheap tests first; when one fires, those lines join the per-line path.
        has_local = _LOCAL_DOTTED in clean
        if (
            has_local
            or _PREFIX_SPACE + b"\n" in chunk
            or _PREFIX_TAB + b"\n" in chunk
            or chunk.endswith((_PREFIX_SPACE, _PREFIX_TAB))
        ):
            slow = sorted(slow + _hidden_lines(chunk, stripped, has_local))
            if has_local:
                clean = [name for name in clean if name != _LOCAL_DOTTED]
        if slow:
            originals = chunk.split(b"\n")
            for offset in slow:
                lines.line(originals[offset], first_line + offset)
        if clean:
            report.entries += len(clean)
            yield Batch(clean, pid, fast_match)
        yield from sink.drain()


def _hidden_lines(chunk: bytes, stripped: bytes, has_local: bool) -> list[int]:
    """Offsets of the lines that the strip made blank, and of the `localhost.localdomain` lines
    that `split_clean` passed as clean."""
    hidden = []
    for offset, (line, original) in enumerate(
        zip(stripped.split(b"\n"), chunk.split(b"\n"), strict=True)
    ):
        if (not line and original) or (has_local and line.lower() == _LOCAL_DOTTED):
            hidden.append(offset)
    return hidden
