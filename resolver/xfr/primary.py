"""blokir as an RPZ primary: the merged policy served to secondaries by zone transfer.

Secondaries (Unbound, BIND, PowerDNS Recursor, Knot Resolver, another blokir) query the zone's
SOA over UDP or TCP, take the zone by AXFR (RFC 5936) and then only its changes by IXFR
(RFC 1995); after each applied reload they are sent a NOTIFY (RFC 1996). Clients outside
`[rpz] allow_transfer`, and with `require_tsig` those whose query is not TSIG-signed (RFC 8945),
are REFUSED; a bad signature gets NOTAUTH.

Scale: a transfer streams the version's snapshot file (resolver/xfr/snapshot.py) into messages
of about 64 KB, so the zone is never held in memory, whatever the number of names. Record
wire is packed here from the snapshot's few record shapes (each distinct `TYPE data` is
converted by dnspython once, owners point at the question's zone name); the messages are
dnspython Renderers, signed with its multi-message TSIG context.

It runs in the supervisor (which owns reloads) as threads: one TCP and one UDP server per
`[rpz] listen` address, and a builder thread that makes each new version in a child process.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from resolver.config import Config, RpzConfig
from resolver.xfr import incremental, snapshot
from resolver.xfr.history import Version, ZoneHistory
from resolver.xfr.zonewire import NS_TARGET, ZoneWire, batches, read_blocks

log = logging.getLogger("blokir")

MAX_TRANSFERS = 8  # concurrent AXFR/IXFR; more are REFUSED until one ends
MAX_QUERIES_PER_CONNECTION = 100
IDLE_TIMEOUT = 30.0  # seconds a TCP connection may wait for its next query
SEND_TIMEOUT = 60.0  # seconds one message may take to go out to a slow secondary
BUILD_TIMEOUT = 1800.0  # seconds for a snapshot build (a 10M-name policy takes minutes)
NOTIFY_TRIES = 3  # RFC 1996 3.6: retransmit until answered, a bounded number of times
NOTIFY_TIMEOUT = 2.0
FUDGE = 300  # TSIG time fudge, seconds (RFC 8945 section 10)

_TSIG_ERRORS = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
)
# dnspython's Renderer is untyped; the few calls made on it are typed by use here.
_Renderer: Any = dns.renderer.Renderer


class _Signer:
    """Signs the messages of one response stream with the query's TSIG key (RFC 8945 5.3.1:
    every message signed, each MAC chaining the previous one)."""

    def __init__(self, query: dns.message.Message) -> None:
        self.key = query.keyring if query.had_tsig else None
        self.keyname = query.keyname
        self.algorithm = query.keyalgorithm
        self.request_mac = query.mac
        self.ctx: Any = None

    def sign(self, renderer: Any, query_id: int) -> None:
        if self.key is None:
            return
        self.ctx = renderer.add_multi_tsig(
            self.ctx,
            self.keyname,
            self.key,
            FUDGE,
            query_id,
            0,
            b"",
            self.request_mac,
            self.algorithm,
        )


def _wait(pid: int, timeout: float) -> bool:
    """Reap `pid`; False (after killing it) when it runs past `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def _open(path: Path) -> IO[str]:
    return open(path, encoding="ascii", buffering=1 << 20)


def _lines(handle: IO[str]) -> Iterator[str]:
    """Records from an open snapshot or difference file (resolver/xfr/snapshot.py)."""
    with handle:
        for line in handle:
            yield line[:-1]


class Primary:
    """Serves the zone and keeps it current. `start()` binds (while still root, for port 53);
    `update(config)` after each applied reload builds the next version in the background."""

    def __init__(self, config: Config) -> None:
        self.rpz: RpzConfig = config.rpz
        self.config = config
        self.history = ZoneHistory(config.updates.state_dir, self.rpz.history)
        self.wire = ZoneWire(self.rpz.zone, config.blocking.ttl)
        self.keyring = self._keyring(self.rpz)
        self.networks = [ipaddress.ip_network(n) for n in self.rpz.allow_transfer]
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self._transfers = threading.BoundedSemaphore(MAX_TRANSFERS)
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._builder: threading.Thread | None = None
        self.counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self.last_build: dict[str, Any] = {}
        self.versions_built = threading.Condition()

    @staticmethod
    def _keyring(rpz: RpzConfig) -> dict[dns.name.Name, dns.tsig.Key]:
        return {
            dns.name.from_text(k.name): dns.tsig.Key(k.name, k.secret, k.algorithm)
            for k in rpz.tsig
        }

    # -- life cycle -------------------------------------------------------------------------

    def bind(self) -> None:
        """The `[rpz] listen` sockets, bound while still root (port 53) and before the workers
        fork; no thread runs until `serve`."""
        for host, port in self.rpz.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tcp = _TcpServer((host, port), self, family)
            udp = _UdpServer((host, port if port else tcp.server_address[1]), self, family)
            self._servers += [tcp, udp]

    def close_in_child(self) -> None:
        """In a forked worker: the primary's sockets are the supervisor's."""
        for server in self._servers:
            if isinstance(server, socketserver.TCPServer):  # the UDP server is one too
                server.socket.close()

    def serve(self) -> None:
        """Answer on the bound sockets and start the builder (threads: after the fork)."""
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, name="rpz-primary", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._builder = threading.Thread(target=self._build_loop, name="rpz-build", daemon=True)
        self._builder.start()
        version = self.history.current
        log.info(
            "rpz primary for %s on %s, %s",
            self.rpz.zone,
            ", ".join(f"{h}:{p}" for h, p in self.addresses()),
            f"serial {version.serial}" if version else "no version yet (building)",
        )

    def addresses(self) -> list[tuple[str, int]]:
        return [
            (str(s.server_address[0]), int(s.server_address[1]))
            for s in self._servers
            if isinstance(s, _TcpServer)
        ]

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        if self._builder is not None:
            self._builder.join(timeout=5)

    def update(self, config: Config) -> None:
        """The policy or settings changed (an applied reload): build the next version. Requests
        that arrive while a build runs are merged into one more build."""
        self.config = config
        # Who may transfer, with which keys, and whom to notify apply now; listen, zone and
        # history wait for a restart (resolver/reload.py RESTART_ONLY).
        self.rpz = config.rpz
        self.keyring = self._keyring(config.rpz)
        self.networks = [ipaddress.ip_network(n) for n in config.rpz.allow_transfer]
        self._wanted.set()

    # -- versions -----------------------------------------------------------------------------

    def _build_loop(self) -> None:
        current = self.history.current
        if current is not None and current.pending:
            self.materialize(current)
        if current is not None and not current.pending and not current.wire.is_file():
            self.pack(current)
        while not self._stopping.is_set():
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            try:
                version = self.build(self.config)
            except Exception:  # a bug must not stop the primary serving the last version
                log.exception("rpz: building the next zone version failed")
                version = None
            if version is not None:
                # The TTL is part of the version's content (a change makes a new serial).
                self.wire = ZoneWire(self.rpz.zone, self.config.blocking.ttl)
                self.notify(version.serial)
                # The IXFR is out; the whole version for AXFR can follow at its own pace.
                self.materialize(version)
                if not version.pending:
                    self.pack(version)

    def build(self, config: Config) -> Version | None:
        """Make the next version from `config`'s lists; None if the zone did not change or the
        build failed (the current version keeps being served). When the lists of the current
        version are on disk, only the changed lists are read and only the step is written
        (resolver/xfr/incremental.py); its snapshot is written afterwards (`materialize`)."""
        started = time.perf_counter()
        current = self.history.current
        if current is not None and current.pending:  # a step builds on a written snapshot
            self.materialize(current)
        written = current is not None and not current.pending
        store = self.history.lists_of(current) if current is not None and written else None
        request = snapshot.Request(
            specs=config.list_specs(),
            landing_ipv4=config.blocking.landing_ipv4,
            landing_ipv6=config.blocking.landing_ipv6,
            ttl=config.blocking.ttl,
            zone=self.rpz.zone,
            output=self.history.scratch("zone"),
            previous=current.snapshot if current and written else None,
            deleted=self.history.scratch("del") if written else None,
            added=self.history.scratch("add") if written else None,
            mode="step" if store is not None and self.rpz.history > 0 else "zone",
            store=store,
            store_out=self.history.scratch("lists"),
        )
        assert request.store_out is not None
        result = self._run_build(request)
        if not result.get("ok"):
            shutil.rmtree(request.store_out, ignore_errors=True)
            log.error("rpz: zone not updated, still serving the last version: %s", result["error"])
            self.last_build = {"ok": False, "error": result["error"]}
            return None
        version = self._commit(request, result, current)
        latest = self.history.current  # the version these lists now describe
        if latest is not None:
            self.history.install_lists(request.store_out, latest)
        seconds = time.perf_counter() - started
        self.last_build = {"ok": True, "seconds": round(seconds, 3), **result}
        how = "from the changed lists" if result.get("incremental") else "in full"
        if version is None:
            log.info("rpz: zone unchanged (%s), serial stays", how)
        else:
            log.info(
                "rpz: serial %d: %d records (-%d +%d) built %s in %.2f s",
                version.serial,
                version.records,
                result["deleted"],
                result["added"],
                how,
                seconds,
            )
        with self.versions_built:
            self.versions_built.notify_all()
        return version

    def _commit(
        self, request: snapshot.Request, result: dict[str, Any], current: Version | None
    ) -> Version | None:
        if not result.get("incremental"):
            return self.history.commit(
                request.output, result["sha256"], result["records"], request.deleted, request.added
            )
        assert current is not None
        if not result["deleted"] and not result["added"]:
            for path in (request.deleted, request.added):
                if path is not None:
                    path.unlink(missing_ok=True)
            return None
        # The content digest of a version built from its step: the previous one's chained with
        # the step's (the supervisor never reads the whole zone to hash it).
        chained = hashlib.sha256(f"{current.sha256} {result['sha256']}".encode()).hexdigest()
        records = current.records - result["deleted"] + result["added"]
        return self.history.commit(None, chained, records, request.deleted, request.added)

    def materialize(self, version: Version) -> None:
        """Write the snapshot of a version built from its step (the previous snapshot with the
        step applied, one streaming merge in a child), then drop the previous one."""
        if version.base is None or not version.steps:
            return
        started = time.perf_counter()
        step = version.steps[-1]
        request = self._file_request(
            self.history.scratch("zone"),
            previous=version.base,
            deleted=step.deleted,
            added=step.added,
            mode="merge",
        )
        result = self._run_build(request)
        if not result.get("ok"):
            request.output.unlink(missing_ok=True)
            log.warning(
                "rpz: serial %d: snapshot not written, AXFR merges the step as it goes: %s",
                version.serial,
                result["error"],
            )
        elif self.history.install_snapshot(version, request.output, result["records"]):
            log.info(
                "rpz: serial %d: snapshot written in %.2f s",
                version.serial,
                time.perf_counter() - started,
            )

    def _file_request(self, output: Path, **files: Any) -> snapshot.Request:
        """A child's request that works on files only (no lists read)."""
        return snapshot.Request(
            specs=[],
            landing_ipv4=None,
            landing_ipv6=None,
            ttl=self.config.blocking.ttl,
            zone=self.rpz.zone,
            output=output,
            **files,
        )

    def pack(self, version: Version) -> None:
        """Pack `version` into message bodies for AXFR, in a child; until that is done an AXFR
        encodes the snapshot as it sends it (slower, same records)."""
        started = time.perf_counter()
        scratch = self.history.scratch("wire")
        request = self._file_request(version.snapshot, wire=scratch, mode="wire")
        result = self._run_build(request)
        if not result.get("ok"):
            scratch.unlink(missing_ok=True)
            log.warning(
                "rpz: serial %d not packed, AXFR encodes as it goes: %s",
                version.serial,
                result["error"],
            )
        elif self.history.install_wire(version, scratch):
            log.info(
                "rpz: serial %d packed for AXFR in %.2f s",
                version.serial,
                time.perf_counter() - started,
            )

    def _run_build(self, request: snapshot.Request) -> dict[str, Any]:
        """Run the snapshot child with posix_spawn, its input and output in files. Not
        `subprocess`: it learns that exec succeeded from a pipe, and a worker the supervisor
        forks at that moment inherits the pipe's write end, which would keep this thread
        waiting for an end of file until the worker exits."""
        paths = [self.history.scratch(n) for n in ("request", "result", "stderr")]
        try:
            paths[0].write_text(json.dumps(request.to_json()))
            with (
                paths[0].open("rb") as stdin,
                paths[1].open("wb") as stdout,
                paths[2].open("wb") as stderr,
            ):
                pid = os.posix_spawn(
                    sys.executable,
                    [sys.executable, "-m", "resolver.xfr.snapshot"],
                    os.environ,
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, stdin.fileno(), 0),
                        (os.POSIX_SPAWN_DUP2, stdout.fileno(), 1),
                        (os.POSIX_SPAWN_DUP2, stderr.fileno(), 2),
                    ],
                )
            if not _wait(pid, BUILD_TIMEOUT):
                return {"ok": False, "error": f"snapshot build: over {BUILD_TIMEOUT:.0f} s"}
            lines = paths[1].read_text().strip().splitlines()
            result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
            if not result.get("ok"):
                error = result.get("error") or paths[2].read_text(errors="replace")[-500:]
                result = {"ok": False, "error": f"snapshot build: {error.strip()}"}
        except (OSError, ValueError) as exc:
            result = {"ok": False, "error": f"snapshot build: {exc}"}
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        return result

    def notify(self, serial: int) -> None:
        """RFC 1996: tell each `[rpz] notify` target that the zone changed; each in its own
        thread, retried NOTIFY_TRIES times, so an unreachable one delays nobody."""
        for host, port in self.rpz.notify:
            threading.Thread(
                target=self._notify_one, args=(host, port, serial), name="rpz-notify", daemon=True
            ).start()

    def _notify_one(self, host: str, port: int, serial: int) -> None:
        message = dns.message.make_query(self.wire.zone, dns.rdatatype.SOA)
        message.flags = dns.flags.AA  # RFC 1996 3.7 (and no RD); the opcode lives in flags too
        message.set_opcode(dns.opcode.NOTIFY)
        message.answer.append(self.wire.soa_rrset(serial))
        if self.rpz.tsig:
            first = self.rpz.tsig[0]
            message.use_tsig(self.keyring, keyname=first.name, algorithm=first.algorithm)
        for attempt in range(NOTIFY_TRIES):
            try:
                reply = dns.query.udp(message, host, port=port, timeout=NOTIFY_TIMEOUT)
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("rpz: NOTIFY to %s:%d, try %d: %s", host, port, attempt + 1, exc)
                continue
            self._count("notify_" + dns.rcode.to_text(reply.rcode()).lower())
            return
        self._count("notify_unanswered")
        log.warning("rpz: NOTIFY for serial %d to %s:%d unanswered", serial, host, port)

    # -- queries ------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def answer(self, wire: bytes, client: str, tcp: bool) -> Iterator[bytes]:
        """The response message(s) to one query; nothing for a message that is not a query."""
        try:
            query = dns.message.from_wire(wire, keyring=self.keyring or None)
        except _TSIG_ERRORS as exc:
            # RFC 8945 5.2: unknown key or bad signature: NOTAUTH, unsigned.
            self._count("notauth")
            log.warning("rpz: %s: TSIG rejected: %s", client, exc)
            yield from self._error(wire, dns.rcode.NOTAUTH)
            return
        except dns.exception.DNSException:
            self._count("formerr")
            yield from self._error(wire, dns.rcode.FORMERR)
            return
        if query.flags & dns.flags.QR:
            return
        if not self.allowed(client) or (self.rpz.require_tsig and not query.had_tsig):
            self._count("refused")
            log.info("rpz: %s: REFUSED (not in allow_transfer or not signed)", client)
            yield self._simple(query, dns.rcode.REFUSED)
            return
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            yield self._simple(query, dns.rcode.NOTIMP)
            return
        question = query.question[0]
        version = self.history.current
        if question.name != self.wire.zone:
            yield self._simple(query, dns.rcode.REFUSED)
            return
        if version is None:
            yield self._simple(query, dns.rcode.SERVFAIL)  # no version built yet
            return
        rdtype = question.rdtype
        if rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS):
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            if rdtype == dns.rdatatype.SOA:
                response.answer.append(self.wire.soa_rrset(version.serial))
            else:
                response.answer.append(self.wire.ns_rrset())
            yield response.to_wire()
        elif rdtype == dns.rdatatype.AXFR and tcp:
            yield from self._transfer(query, client, version, None)
        elif rdtype == dns.rdatatype.IXFR:
            yield from self._ixfr(query, client, version, tcp)
        else:
            yield self._simple(
                query, dns.rcode.NOTIMP if rdtype == dns.rdatatype.AXFR else dns.rcode.REFUSED
            )

    def _ixfr(
        self, query: dns.message.Message, client: str, version: Version, tcp: bool
    ) -> Iterator[bytes]:
        have = None
        for rrset in query.authority:
            if rrset.rdtype == dns.rdatatype.SOA and rrset:
                have = int(rrset[0].serial)
        if have is None:
            yield self._simple(query, dns.rcode.FORMERR)  # RFC 1995 3: the SOA is required
            return
        steps = self.history.steps_since(have)
        if steps == [] or not tcp:
            # Up to date, or over UDP: the current SOA alone (RFC 1995 section 2: a client
            # behind it then retries over TCP).
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            response.answer.append(self.wire.soa_rrset(version.serial))
            yield response.to_wire()
            return
        yield from self._transfer(query, client, version, steps)

    def _transfer(
        self, query: dns.message.Message, client: str, version: Version, steps: list[Any] | None
    ) -> Iterator[bytes]:
        if not self._transfers.acquire(blocking=False):
            self._count("busy")
            yield self._simple(query, dns.rcode.REFUSED)
            return
        started = time.perf_counter()
        kind = "axfr" if steps is None else "ixfr"
        try:
            # Every file is opened before the first message, so a version committed meanwhile
            # (which unlinks files no longer needed) cannot cut this stream short.
            if steps is None:
                bodies = self._axfr_bodies(version)
            else:
                files = [(s, _open(s.deleted), _open(s.added)) for s in steps]
                bodies = batches(self._ixfr_records(version, files))
            sent = 0
            for message in self._messages(query, bodies):
                sent += 1
                yield message
            self._count(kind)
            log.info(
                "rpz: %s to %s: serial %d, %d messages in %.2f s",
                kind.upper(),
                client,
                version.serial,
                sent,
                time.perf_counter() - started,
            )
        finally:
            self._transfers.release()

    def _axfr_bodies(self, version: Version) -> Iterator[tuple[int, bytes]]:
        """RFC 5936 2.2: the SOA opens and closes the stream; the records between come from the
        version's block file as they are, one message each, or (not packed yet) from its
        snapshot, encoded here. The file is opened before the first message is sent."""
        try:
            body: Iterator[tuple[int, bytes]] = read_blocks(open(version.wire, "rb"))  # noqa: SIM115
        except FileNotFoundError:
            body = batches(self.wire.records(self._snapshot_records(version)))
        soa = self.wire.soa(version.serial)
        yield from batches([soa, *self.wire.records(["@ NS " + NS_TARGET])])
        yield from body
        yield 1, soa

    @staticmethod
    def _snapshot_records(version: Version) -> Iterator[str]:
        """The version's records from its snapshot, or, while that is not written yet, from the
        previous snapshot with the last step applied as they stream (the files are opened
        here, so that the snapshot's installation meanwhile cannot cut the stream short)."""
        try:
            return _lines(_open(version.snapshot))
        except FileNotFoundError:
            base = version.base
            if base is None:
                raise
        step = version.steps[-1]
        try:
            files = [_open(base), _open(step.deleted), _open(step.added)]
        except FileNotFoundError:  # written and installed since the first try
            return _lines(_open(version.snapshot))
        return incremental.merged(*(_lines(f) for f in files))

    def _ixfr_records(
        self, version: Version, files: list[tuple[Any, IO[str], IO[str]]]
    ) -> Iterator[bytes]:
        soa = self.wire.soa(version.serial)
        yield soa
        for step, deleted, added in files:  # RFC 1995 4: old SOA, deletions, new SOA, additions
            yield self.wire.soa(step.before)
            yield from self.wire.records(_lines(deleted))
            yield self.wire.soa(step.serial)
            yield from self.wire.records(_lines(added))
        yield soa

    def _messages(
        self, query: dns.message.Message, bodies: Iterable[tuple[int, bytes]]
    ) -> Iterator[bytes]:
        """One response message per (record count, body), each signed when the query was."""
        signer = _Signer(query)
        rdtype = query.question[0].rdtype
        for count, body in bodies:
            renderer = _Renderer(query.id, dns.flags.QR | dns.flags.AA, 65535)
            renderer.add_question(self.wire.zone, rdtype, dns.rdataclass.IN)
            renderer.output.write(body)
            renderer.counts[dns.renderer.ANSWER] = count
            renderer.section = dns.renderer.ANSWER
            renderer.write_header()
            signer.sign(renderer, query.id)
            wire: bytes = renderer.get_wire()
            yield wire

    @staticmethod
    def _simple(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        return response.to_wire()

    def _error(self, wire: bytes, rcode: dns.rcode.Rcode) -> Iterator[bytes]:
        """An unsigned error response to a query that could not be validated or parsed."""
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except dns.exception.DNSException:
            return  # not even a DNS message: no answer
        if not query.flags & dns.flags.QR:
            yield self._simple(query, rcode)


def start_primary(config: Config) -> Primary:
    """Bind `[rpz] listen`, serve the last version on disk at once, and build the current one
    (the supervisor does the same in two steps, around forking its workers)."""
    primary = Primary(config)
    primary.bind()
    primary.serve()
    primary.update(config)
    return primary


# -- servers --------------------------------------------------------------------------------


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        client = self.client_address[0]
        with contextlib.suppress(OSError):
            for _ in range(MAX_QUERIES_PER_CONNECTION):
                sock.settimeout(IDLE_TIMEOUT)
                head = _read_exactly(sock, 2)
                if head is None:
                    return
                wire = _read_exactly(sock, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                sock.settimeout(SEND_TIMEOUT)
                for message in self.server.primary.answer(wire, client, tcp=True):
                    sock.sendall(struct.pack("!H", len(message)) + message)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], primary: Primary, family: int) -> None:
        self.address_family = family
        self.primary = primary
        super().__init__(address, _TcpHandler)


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        wire, sock = self.request
        for message in self.server.primary.answer(wire, self.client_address[0], tcp=False):
            if len(message) <= 512:  # no EDNS negotiation for these few small answers
                with contextlib.suppress(OSError):
                    sock.sendto(message, self.client_address)


class _UdpServer(socketserver.UDPServer):
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], primary: Primary, family: int) -> None:
        self.address_family = family
        self.primary = primary
        super().__init__(address, _UdpHandler)
