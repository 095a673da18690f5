"""Running the landing server: in its own process under `blokir serve`, or standalone.

Under `blokir serve` the supervisor binds the landing sockets and loads the certificate while it
may still be root (ports 80 and 443), then forks one landing process after the DNS workers. It
is a separate process, at a lower scheduling priority, so a flood of page requests competes with
the DNS workers only for what the kernel gives a niced process. On each reload the supervisor
starts a successor on the same listening sockets (with the new settings) and tells the old one
to stop: it stops accepting and finishes the connections it has for up to `DRAIN_SECONDS`. Both
follow index replacements by themselves (server.IndexFollower), which is all that `blokir
landing` (a landing server on its own host, next to a copy of the index) has.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resolver.config import Config
from resolver.config.addresses import Address
from resolver.landing.server import Landing, Server, refuse_foreign_names, tls_context
from resolver.landing.stats import SLOTS, LandingStats, snapshot_bytes
from resolver.metrics import FLUSH_SECONDS, SharedSlots

log = logging.getLogger("blokir.landing")

DRAIN_SECONDS = 5.0  # an old landing process finishes open connections for this long
NICENESS = 10  # below the DNS workers when the CPU is contended
RESTART_BACKOFF = 0.2  # as the DNS workers: the supervisor's loop waits this long
BACKLOG = 1024


class LandingError(Exception):
    """A start-up problem a person can fix (port in use, unreadable certificate)."""


def enabled(config: Config) -> bool:
    return bool(config.landing.listen or config.landing.tls_listen)


def bind_listeners(addresses: tuple[Address, ...]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    for host, port in addresses:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            for s in sockets:
                s.close()
            in_use = exc.errno == errno.EADDRINUSE
            hint = " (is another web server running there?)" if in_use else ""
            raise LandingError(
                f"landing: cannot listen on {host}:{port}: {exc.strerror}{hint}"
            ) from exc
        sockets.append(sock)
    return sockets


def load_tls(config: Config) -> ssl.SSLContext | None:
    try:
        return tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise LandingError(
            f"landing: cannot load certificate {config.landing.certificate} and key "
            f"{config.landing.key}: {exc}"
        ) from exc


@dataclass(slots=True)
class Listeners:
    plain: list[socket.socket]
    tls: list[socket.socket]
    context: ssl.SSLContext | None

    @classmethod
    def bind(cls, config: Config) -> Listeners:
        context = load_tls(config)
        plain = bind_listeners(config.landing.listen)
        try:
            tls = bind_listeners(config.landing.tls_listen)
        except LandingError:
            for s in plain:
                s.close()
            raise
        return cls(plain, tls, context)

    def close(self) -> None:
        for sock in self.plain + self.tls:
            sock.close()


# -- the process body -------------------------------------------------------------------------


def run_landing(
    config: Config,
    index_path: str,
    listeners: Listeners,
    publish: Callable[[LandingStats], None] | None = None,
    stats: LandingStats | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain. `publish` is called with the counters every
    FLUSH_SECONDS (and once at the end)."""
    landing = Landing(config, index_path, stats)
    if listeners.context is not None:
        refuse_foreign_names(listeners.context, landing)

    async def main() -> None:
        server = Server(landing)
        await server.start(listeners.plain, listeners.tls, listeners.context)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "landing page on %s",
            ", ".join(
                [f"http://{h}:{p}" for h, p in config.landing.listen]
                + [f"https://{h}:{p}" for h, p in config.landing.tls_listen]
            ),
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
            if publish is not None:
                publish(landing.stats)
        await server.drain(DRAIN_SECONDS)
        landing.stats.connections = 0  # exiting: its slot must not keep a gauge of cut ones
        if publish is not None:
            publish(landing.stats)

    asyncio.run(main())


# -- the supervisor's side --------------------------------------------------------------------


@dataclass(slots=True)
class LandingProcess:
    """The landing process `blokir serve` owns: started after the workers, replaced on each
    reload, restarted when it dies, stopped with the rest."""

    config: Config
    index_path: str
    listeners: Listeners
    slots: SharedSlots | None
    close_inherited: Callable[[], None]  # what the child must not keep of the supervisor's
    pid: int = 0
    generation: int = 0
    draining: dict[int, float] = field(default_factory=dict)  # old pid -> when to kill it
    slot_of: dict[int, int] = field(default_factory=dict)  # live pid -> the slot it writes
    # swap() runs on the reloader's thread, poll() and stop() on the main thread.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        # Each generation writes the other slot than its predecessor, which may still drain:
        # the slot's previous writer (two generations back) must be gone first.
        self.generation += 1
        slot = self.generation % SLOTS
        for pid in list(self.draining):
            if self.slot_of.get(pid) == slot:
                self._kill(pid)
        config, index_path, listeners, slots = (
            self.config,
            self.index_path,
            self.listeners,
            self.slots,
        )
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                self.close_inherited()
                with contextlib.suppress(OSError):
                    os.nice(NICENESS)
                stats = LandingStats()
                publish = None
                if slots is not None:
                    stats.resume(slots.read(slot))

                    def publish(s: LandingStats) -> None:
                        slots.write(slot, snapshot_bytes(s))

                run_landing(config, index_path, listeners, publish, stats)
            except BaseException:
                log.exception("landing process failed")
                code = 1
            finally:
                os._exit(code)
        self.pid = pid
        self.slot_of[pid] = slot

    def swap(self, config: Config, index_path: str) -> None:
        """A reload: a successor with the new settings (and certificate, if it can be read
        now), then the old process drains."""
        old_landing, new_landing = self.config.landing, config.landing
        if (new_landing.listen, new_landing.tls_listen) != (
            old_landing.listen,
            old_landing.tls_listen,
        ):
            log.warning("landing: new listen addresses take effect at the next restart")
        try:
            context = load_tls(config)
        except LandingError as exc:
            log.error("%s; keeping the certificate loaded before", exc)
            context = None
        with self.lock:
            self.config, self.index_path = config, index_path
            if context is not None:
                self.listeners.context = context
            old = self.pid
            self.start()
            if old:
                self.draining[old] = time.monotonic() + DRAIN_SECONDS + 2
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGTERM)

    def poll(self) -> None:
        """From the supervisor's main loop: reap drained processes, restart a dead one."""
        if not self.lock.acquire(blocking=False):
            return  # a swap is under way; the next poll looks again
        try:
            self._poll()
        finally:
            self.lock.release()

    def _poll(self) -> None:
        for pid, kill_at in list(self.draining.items()):
            if self._reaped(pid):
                del self.draining[pid]
            elif time.monotonic() > kill_at:
                self._kill(pid)
        if self.pid and self._reaped(self.pid):
            log.warning("landing process (pid %d) exited; restarting", self.pid)
            time.sleep(RESTART_BACKOFF)
            self.start()

    def stop(self) -> None:
        with self.lock:
            self._stop()

    def _stop(self) -> None:
        pids = [p for p in (self.pid, *self.draining) if p]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_SECONDS + 2
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not self._reaped(p)]
            time.sleep(0.05)
        for pid in pids:
            self._kill(pid)
        self.pid = 0
        self.draining.clear()

    def _reaped(self, pid: int) -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            self.slot_of.pop(pid, None)
        return bool(done)

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.draining.pop(pid, None)
        self.slot_of.pop(pid, None)


# -- `blokir landing`: on its own ---------------------------------------------------------------


def run_standalone(config: Config) -> int:
    """Bind, drop privileges (`[server] user`), serve `/metrics` on `[metrics] listen` with the
    landing families alone, and serve the page until SIGTERM."""
    from prometheus_client import CollectorRegistry, start_http_server

    from resolver.landing.stats import LandingCollector
    from resolver.privileges import PrivilegeError, drop_privileges

    if not enabled(config):
        raise LandingError("landing: [landing] listen and tls_listen are both empty")
    listeners = Listeners.bind(config)
    try:
        drop_privileges(config.server.user, config.server.group or None)
    except PrivilegeError as exc:
        listeners.close()
        raise LandingError(str(exc)) from exc
    stats = LandingStats()
    if config.metrics.enabled:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LandingCollector(lambda: stats))
        host, port = config.metrics.listen
        try:
            start_http_server(port, host, registry)
        except OSError as exc:
            listeners.close()
            raise LandingError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    run_landing(config, str(config.blocking.index_path), listeners, None, stats)
    return 0
