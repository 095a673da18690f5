"""The supervisor: sockets, worker processes, live reloads, the control socket, signals.

`serve()` binds every worker's sockets once, up front (SO_REUSEPORT: one UDP and one TCP socket
per listen address per worker), so that

- a port problem is reported before anything forks;
- privileges can be dropped right after binding (port 53 needs root or CAP_NET_BIND_SERVICE);
- a worker that dies is restarted on its predecessor's sockets: datagrams the kernel queued
  for it wait there instead of being lost.

Each worker also gets one end of a Unix socket pair, the channel the supervisor uses to swap the
index and settings in every worker (`Worker._on_control`, resolver/channel.py) and to learn that
the worker confirmed.
The reloader (resolver/reload.py) runs in a thread here; the control socket (`blokir reload`,
`blokir status`) and the metrics endpoint are served from threads too, all started after the
workers are forked (a process forked while another thread holds a lock, such as logging's,
inherits it held by a thread that does not exist there). The main thread only watches the
workers and the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import pickle
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resolver import NATIVE, udpbatch
from resolver import metrics as m
from resolver.channel import recv_message, send_message
from resolver.config import Config, format_address
from resolver.control import ControlError, ControlServer
from resolver.landing import process as landing
from resolver.native import dnstap_mode
from resolver.privileges import PrivilegeError, drop_privileges
from resolver.reload import APPLIED, RESULTS, Reloader, ReloadError, ReloadOutcome
from resolver.transports.context import server_context
from resolver.transports.endpoints import bind_stream_sockets
from resolver.worker import DRAIN_SECONDS, Worker

if TYPE_CHECKING:  # dnspython (~25 MiB a process) only with [rpz] notify_listen or listen
    from resolver.xfr.notify import NotifyListener
    from resolver.xfr.primary import Primary

log = logging.getLogger("blokir")

RESTART_BACKOFF = 0.2  # seconds between restarts of a crashing worker (bounded spin)
POLL_SECONDS = 0.05  # how often the main thread looks at its workers and signals
CONTROL_WAIT = 1800.0  # how long `blokir reload` waits for its outcome
GC_GEN0_THRESHOLD = 100_000  # allocations between young-generation collections (default 700)

# Per worker: UDP and TCP for `listen`, then TCP for `tls_listen` (DoT) and `https_listen` (DoH).
Sockets = tuple[list[socket.socket], list[socket.socket], list[socket.socket], list[socket.socket]]


class ServeError(Exception):
    """A start-up problem a person can fix (port in use, unreadable lists)."""


# -- sockets -----------------------------------------------------------------------------------


def bind_sockets(config: Config) -> Sockets:
    """One UDP and one TCP socket per listen address, with SO_REUSEPORT so every worker has
    its own and the kernel spreads queries across them."""
    udp: list[socket.socket] = []
    tcp: list[socket.socket] = []
    for host, port in config.server.listen:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        for kind, bucket in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)):
            sock = socket.socket(family, kind)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(1024)
                else:
                    # Room for bursts while the loop is busy with other work, and for a reload.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                for s in udp + tcp:
                    s.close()
                what = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                hint = (
                    " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
                )
                raise ServeError(
                    f"cannot listen on {what} {host}:{port}: {exc.strerror}{hint}"
                ) from exc
            bucket.append(sock)
    encrypted: list[list[socket.socket]] = []
    for key in ("tls_listen", "https_listen"):
        try:
            encrypted.append(bind_stream_sockets(getattr(config.server, key)))
        except OSError as exc:
            for s in udp + tcp + [s for socks in encrypted for s in socks]:
                s.close()
            raise ServeError(f"cannot listen on {key} {exc.strerror}") from exc
    return udp, tcp, encrypted[0], encrypted[1]


@dataclass(slots=True)
class _Child:
    number: int
    pid: int
    channel: socket.socket  # the supervisor's end of the worker's socket pair


# -- worker process body -----------------------------------------------------------------------


def run_worker(
    config: Config,
    index_path: str,
    sockets: Sockets,
    channel: socket.socket | None,
    slots: m.SharedSlots | None,
    slot: int,
) -> None:
    """Worker process body: serve on the inherited sockets until SIGTERM."""

    async def main() -> None:
        udp, tcp, tls, https = sockets
        worker = Worker(
            config, index_path, udp, tcp, slots, slot, channel, tls_socks=tls, https_socks=https
        )
        # Every query allocates a few container objects, so the cyclic GC's default gen0
        # threshold (700) runs collections thousands of times a second, and the older
        # generations rescan the large, long-lived memo and cache. Freezing start-up objects
        # and collecting far less often measured 20-35% more queries/s on the benchmark
        # workload; reference counting still frees almost everything at once, the GC only
        # finds cycles (rare on this path).
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
        await worker.run()

    asyncio.run(main())


# -- the supervisor ----------------------------------------------------------------------------


class Supervisor:
    """The parent process: `start()` loads the index and binds everything while it may still
    be root, then forks the workers; `run()` restarts dead workers and handles signals until
    SIGTERM. Reloads happen on the reloader's thread and reach the workers via swap_workers."""

    def __init__(
        self, config: Config, load_config: Callable[[], Config], force: bool = False
    ) -> None:
        self.config = config
        self.hub: m.MetricsHub | None = None
        self.http: ThreadingHTTPServer | None = None  # the metrics endpoint
        self.children: dict[int, _Child] = {}  # pid -> child
        self._children_lock = threading.Lock()
        self.sockets: list[Sockets] = []
        self.stopping = False
        self.sighup = False
        self.control: ControlServer | None = None
        self.notify: NotifyListener | None = None  # [rpz] notify_listen (resolver/xfr/notify.py)
        self.landing: landing.LandingProcess | None = None
        self.reloader = Reloader(config, load_config, self.swap_workers, self._count_outcome)
        self.reloader.force_start = force  # serve --force: start on a list the guards refuse
        self.primary: Primary | None = None  # [rpz] listen: serves the policy by zone transfer

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        try:
            self.reloader.load()
        except ReloadError as exc:
            raise ServeError(str(exc)) from exc
        self.config = self.reloader.config
        for _ in range(config.server.workers):
            self.sockets.append(bind_sockets(config))
        if config.metrics.enabled:
            self.hub = m.MetricsHub(config.server.workers, config.metrics.top_k, RESULTS)
            self._count_outcome(self.reloader.last)
            host, port = config.metrics.listen
            try:
                self.http = m.bind_http(self.hub, host, port)
            except OSError as exc:
                raise ServeError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        if config.rpz.listen:
            from resolver.xfr.primary import Primary  # see TYPE_CHECKING above

            self.primary = Primary(self.config)
            try:
                self.primary.bind()  # serves once the workers are forked (threads)
            except OSError as exc:
                raise ServeError(f"cannot serve [rpz] listen: {exc}") from exc
        self.control = ControlServer(config.updates.socket_path, self._on_control)
        try:
            self.control.listen()
        except (ControlError, OSError) as exc:
            raise ServeError(f"control socket: {exc}") from exc
        self._bind_notify(config)
        self._bind_landing()
        self._drop_privileges()
        self._check_certificate()
        # Every socket is bound: fork, then start the threads (see the module docstring).
        for number in range(config.server.workers):
            self._start_worker(number)
        if self.landing is not None:
            self.landing.start()
        if self.http is not None:
            m.serve_http(self.http)
            log.info("metrics on http://%s:%d/metrics", *self.http.server_address[:2])
        self.control.serve()
        if self.primary is not None:
            self.primary.serve()
            self.primary.update(self.config)
        self.reloader.start()
        if self.notify is not None:
            self.notify.start()

    def _bind_notify(self, config: Config) -> None:
        """Bound while still root (the port may be 53), started once the reloader runs."""
        if config.rpz.notify_listen is None:
            return
        from resolver.xfr.notify import NotifyListener  # here: see TYPE_CHECKING above

        reloader = self.reloader
        self.notify = NotifyListener(
            config.rpz.notify_listen,
            lambda client: reloader.config.rpz.notify_allowed(client),
            reloader.notify,
            lambda: reloader.xfr.keyring() if reloader.xfr is not None else {},
        )
        try:
            host, port = self.notify.bind()
        except OSError as exc:
            where = format_address(config.rpz.notify_listen)
            raise ServeError(f"cannot receive NOTIFY on {where}: {exc.strerror}") from exc
        log.info("receiving NOTIFY for axfr lists on %s:%d", host, port)

    def _bind_landing(self) -> None:
        """The landing page's sockets and certificate, while still root (resolver/landing)."""
        if not landing.enabled(self.config):
            return
        try:
            listeners = landing.Listeners.bind(self.config)
        except landing.LandingError as exc:
            raise ServeError(str(exc)) from exc
        slots = self.hub.landing if self.hub is not None else None
        self.landing = landing.LandingProcess(
            self.config,
            self.reloader.index_path,
            listeners,
            slots,
            lambda: self._close_inherited(-1),
        )

    def _check_certificate(self) -> None:
        """DoT/DoH: the workers load the certificate and key (again on every reload) as the
        user they run as, so a file only root can read fails here, at start, not at a renewal."""
        server = self.config.server
        if not (server.tls_listen or server.https_listen):
            return
        try:
            server_context(server.certificate, server.key, ())
        except (OSError, ssl.SSLError) as exc:
            raise ServeError(
                f"certificate {server.certificate} / key {server.key}: {exc} (both must be "
                f"readable by uid {os.getuid()}, which the workers run as)"
            ) from exc

    def _drop_privileges(self) -> None:
        """After binding (port 53 needs root), run as `[server] user` (README "Security and
        reliability"); the workers are forked after this, so they never hold root."""
        server = self.config.server
        try:
            drop_privileges(server.user, server.group or None)
        except PrivilegeError as exc:
            raise ServeError(str(exc)) from exc
        # Reloads write the index and downloads as this user from now on: say so now, not at
        # the first regulator update.
        index_dir = Path(self.reloader.index_path).parent
        for directory in (index_dir, self.config.updates.state_dir):
            if directory.exists() and not os.access(directory, os.W_OK):
                log.error(
                    "%s is not writable by uid %d: reloads and downloads will fail; "
                    "chown it to [server] user",
                    directory,
                    os.getuid(),
                )

    def _start_worker(self, number: int) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # self.config changes before the swap messages go out (swap_workers), so a worker
        # restarted in the middle of a reload starts with the settings the index belongs to.
        config = self.config
        index_path = self.reloader.index_path
        slots = self.hub.slots if self.hub is not None else None
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                parent_end.close()
                self._close_inherited(number)
                run_worker(config, index_path, self.sockets[number], child_end, slots, number)
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        with self._children_lock:
            self.children[pid] = _Child(number, pid, parent_end)

    def _close_inherited(self, number: int) -> None:
        """In a new worker: close what belongs to the supervisor and the other workers."""
        for other, socks in enumerate(self.sockets):
            if other != number:
                for sock in (s for kind in socks for s in kind):
                    sock.close()
        for child in self.children.values():
            child.channel.close()
        if self.control is not None:
            self.control.close_in_child()
        if self.landing is not None and number >= 0:  # a DNS worker: the landing sockets too
            self.landing.listeners.close()
        if self.primary is not None:
            self.primary.close_in_child()

    # -- reloads -------------------------------------------------------------------------

    def swap_workers(self, config: Config, index_path: str) -> list[str]:
        """Tell every worker to map the new index with the new settings; wait for each to
        confirm. A worker that does not is restarted (it starts on the new index)."""
        self.config = config
        with self._children_lock:
            children = list(self.children.values())
        message = {"op": "swap", "index_path": index_path, "config": config}
        problems: list[str] = []
        for child in children:
            try:
                child.channel.settimeout(5.0)
                send_message(child.channel, message)
            except OSError as exc:
                problems.append(f"worker {child.number}: cannot send the swap: {exc}")
        if self.landing is not None:
            self.landing.swap(config, index_path)
        for child in children:
            try:
                child.channel.settimeout(10.0)
                reply = recv_message(child.channel)
            except (OSError, pickle.UnpicklingError) as exc:
                reply = {"ok": False, "error": str(exc)}
            if reply is None or not reply.get("ok"):
                error = reply.get("error") if reply else "closed its channel"
                problems.append(f"worker {child.number} did not swap ({error}); restarting it")
                with self._children_lock:  # not reaped yet: its pid cannot have been reused
                    if child.pid in self.children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child.pid, signal.SIGKILL)
        return problems

    def _count_outcome(self, outcome: ReloadOutcome | None) -> None:
        if self.primary is not None and outcome is not None and outcome.result == APPLIED:
            self.primary.update(self.reloader.config)
        if self.hub is None or outcome is None:
            return
        self.hub.count_reload(outcome.result)
        self.hub.set_index(self.reloader.header, self.reloader.loaded_at)
        self.hub.set_lists([s.to_json() for s in self.reloader.lists.values()])

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, "status": self.status()}
        if command == "reload":
            outcome = self.reloader.request(
                "blokir reload", force=bool(request.get("force")), wait=CONTROL_WAIT
            )
            if outcome is None:
                return {"ok": False, "error": "the reload did not finish in time"}
            return {"ok": outcome.ok, "outcome": outcome.to_json()}
        return {"ok": False, "error": f"unknown command {command!r} (reload, status)"}

    def status(self) -> dict[str, Any]:
        with self._children_lock:
            workers = sorted((c.number, c.pid) for c in self.children.values())
        return {
            **self.reloader.status(),
            "pid": os.getpid(),
            "workers": [{"number": n, "pid": p} for n, p in workers],
            "listen": [f"{h}:{p}" for h, p in self.config.server.listen],
            **({"landing_pid": self.landing.pid} if self.landing is not None else {}),
            **(m.serving_summary(self.hub.totals()) if self.hub is not None else {}),
        }

    # -- main loop -----------------------------------------------------------------------

    def run(self, ready: Callable[[], None] | None) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        listen = ", ".join(f"{h}:{p}" for h, p in self.config.server.listen)
        log.info(
            "blokir serving on %s with %d worker(s), index %s (%s names), hot path %s, UDP %s",
            listen,
            self.config.server.workers,
            self.reloader.index_path,
            f"{int(self.reloader.header.get('count', 0)):,}",
            NATIVE.why,
            udpbatch.MODE.why,
        )
        if self.config.querylog.dnstap:
            encoder = dnstap_mode(os.environ).why
            log.info("query log to %s: %s", self.config.querylog.dnstap, encoder)
        if ready is not None:
            ready()
        try:
            while self.children and not self.stopping:
                if self.sighup:
                    self.sighup = False
                    self.reloader.request("SIGHUP")
                if self.landing is not None:
                    self.landing.poll()
                if not self._reap():
                    time.sleep(POLL_SECONDS)
            self._stop_workers()
            if self.landing is not None:
                self.landing.stop()
        finally:
            self.reloader.stop()
            if self.notify is not None:
                self.notify.close()
            if self.primary is not None:
                self.primary.stop()
            if self.control is not None:
                self.control.close()
        return 0

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        self.sighup = True

    def _reap(self) -> bool:
        """Restart workers that exited; True when one did. Waits only on worker pids (the
        reloader's build processes are not ours to reap)."""
        with self._children_lock:
            pids = list(self.children)
        for pid in pids:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if not done:
                continue
            with self._children_lock:
                child = self.children.pop(pid)
            child.channel.close()
            if self.hub is not None:
                self.hub.retire_slot(child.number)  # its counters must not vanish from sums
            if self.stopping:
                continue
            log.warning(
                "worker %d (pid %d) exited with %s; restarting",
                child.number,
                pid,
                os.waitstatus_to_exitcode(status),
            )
            time.sleep(RESTART_BACKOFF)
            self._start_worker(child.number)
            return True
        return False

    def _stop_workers(self) -> None:
        with self._children_lock:
            pids = list(self.children)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_SECONDS + 2
        while pids and time.monotonic() < deadline:
            for pid in list(pids):
                with contextlib.suppress(ChildProcessError):
                    if not os.waitpid(pid, os.WNOHANG)[0]:
                        continue
                pids.remove(pid)
            time.sleep(POLL_SECONDS)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def serve(
    config: Config,
    ready: Callable[[], None] | None = None,
    load_config: Callable[[], Config] | None = None,
    force: bool = False,
) -> int:
    """Run the server until SIGTERM. `load_config` re-reads the config for reloads (default:
    the file `config` came from); `force` starts even on a list the guards refuse."""
    from resolver.config import load_config as load_file

    supervisor = Supervisor(config, load_config or (lambda: load_file(config.source)), force)
    supervisor.start()
    return supervisor.run(ready)
