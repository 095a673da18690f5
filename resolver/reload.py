"""Live list updates: refresh sources, rebuild the index off the serving path, guard, swap.

One `Reloader` lives in the supervisor. Its thread wakes every `[updates] watch_interval`
seconds and on requests (SIGHUP, `blokir reload` over the control socket). A reload:

1. re-reads the config file (when asked, or when the file changed); an invalid file is
   rejected and the running config stays;
2. downloads URL lists that are due (conditional requests; a failure keeps the last good copy);
3. when the lists or their settings changed, compiles a new index in a separate process
   (`python -m resolver.build`), so the serving processes never carry the build's memory;
4. checks the guards: a list that shrank by more than `max_shrink`, or whose lines were mostly
   rejected, is not applied unless forced; the old index keeps serving;
5. renames the new index over the old path and tells every worker to map it (each confirms).

Every outcome is counted (`blokir_reloads_total{result}`), logged with its reason and kept for
`blokir status`. Nothing here runs on the query path: workers only swap a reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resolver import sources
from resolver.config import Address, Config, ConfigError, ListSource
from resolver.index import IndexError_, open_index
from resolver.lists.files import list_exists
from resolver.lists.files import stat_key as list_stat_key
from resolver.lists.model import ListSpec
from resolver.lists.quality import list_problem, list_problems
from resolver.provenance import header_is_current, spec_json

if TYPE_CHECKING:  # imported when a config has axfr:// lists: it brings in dnspython
    from resolver.xfr.secondary import Secondaries

log = logging.getLogger("blokir")

# blokir_reloads_total{result}: a small fixed set, so every series exists from the start.
APPLIED = "applied"
UNCHANGED = "unchanged"
REJECTED_SHRINK = "rejected_shrink"
REJECTED_PARSE = "rejected_parse"
INVALID_CONFIG = "invalid_config"
DOWNLOAD_FAILED = "download_failed"
BUILD_FAILED = "build_failed"
RESULTS = (
    APPLIED,
    UNCHANGED,
    REJECTED_SHRINK,
    REJECTED_PARSE,
    INVALID_CONFIG,
    DOWNLOAD_FAILED,
    BUILD_FAILED,
)
FAILED_RESULTS = frozenset(RESULTS) - {APPLIED, UNCHANGED}

BUILD_TIMEOUT = 1800.0  # seconds; a 10M-name build takes about 10 s here

# Settings the workers take at start only; a change is reported and waits for a restart.
RESTART_ONLY = (
    ("server", "listen"),
    ("server", "tls_listen"),
    ("server", "https_listen"),
    ("server", "workers"),
    ("server", "user"),
    ("server", "group"),
    ("metrics", None),
    ("updates", "control_socket"),
    ("querylog", None),  # the writer processes and their sinks start with the workers
    ("rpz", "notify_listen"),
    ("rpz", "listen"),  # the primary's sockets, zone and history (resolver/xfr/primary.py)
    ("rpz", "zone"),
    ("rpz", "history"),
)

# Swaps the workers to (config, index path); returns one problem text per worker that failed.
SwapWorkers = Callable[[Config, str], list[str]]


class ReloadError(Exception):
    """The first load at start could not produce an index to serve."""


@dataclass(slots=True)
class ListStatus:
    """What `blokir status` shows for one list, and what the per-list metrics export."""

    name: str
    kind: str  # "file" | "url" | "axfr"
    source: str  # the path or the URL
    copy: str  # the file compiled: the path itself, or the last good download
    names: int = 0  # distinct names in the serving index
    lines: int = 0
    rejected: int = 0
    sha256: str = ""
    updated_at: float = 0.0  # file mtime, or when the copy was downloaded
    checked_at: float = 0.0  # last download attempt (URL lists)
    last_result: str = ""
    last_error: str = ""
    # axfr lists (resolver/xfr/secondary.py): the copy's serial, how it last changed
    # (AXFR/IXFR), what the last attempt did (AXFR/IXFR/SOA), attempts by "KIND result"
    serial: int | None = None
    transfer: str = ""
    last_transfer: str = ""
    transfers: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class ReloadOutcome:
    result: str
    trigger: str
    started_at: float
    seconds: float = 0.0
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    names_before: int = 0
    names_after: int = 0
    forced: bool = False

    @property
    def ok(self) -> bool:
        return self.result not in FAILED_RESULTS

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


@dataclass(slots=True)
class _Request:
    trigger: str
    force: bool
    download_all: bool
    reread_config: bool
    done: threading.Event = field(default_factory=threading.Event)
    outcome: ReloadOutcome | None = None


class Reloader:
    """Owns the serving config and index path in the supervisor and everything that changes
    them. `load()` runs once at start (synchronously); `start()` begins watching."""

    def __init__(
        self,
        config: Config,
        load_config: Callable[[], Config],
        swap_workers: SwapWorkers | None = None,
        on_outcome: Callable[[ReloadOutcome], None] | None = None,
    ) -> None:
        self.config = config
        self._load_config = load_config
        self.swap_workers = swap_workers
        self._on_outcome = on_outcome
        self.index_path = str(config.blocking.index_path)
        self.header: dict[str, Any] = {}
        self.loaded_at = 0.0
        self.lists: dict[str, ListStatus] = {}
        self.last: ReloadOutcome | None = None
        self.counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards what status() reads
        self._config_stat = _stat_key(config.source)
        # The upstream servers the workers were given: with `[upstream] servers` empty they come
        # from /etc/resolv.conf, which can change while the config file does not.
        self._upstream_servers = _upstream_servers(config)
        self._tls_files = _tls_files(config)
        self._seen_stats: tuple[object, ...] | None = None  # debounce: last poll's file stats
        self._rejected_key: tuple[object, ...] | None = None  # do not rebuild a rejected state
        self.xfr: Secondaries | None = None  # the axfr:// lists, kept across reloads
        self.force_start = False  # `serve --force`: start on lists the guards refuse

    # -- start ---------------------------------------------------------------------------

    def load(self) -> ReloadOutcome:
        """First load: fetch URL lists that have no copy yet (failure is fatal, nothing to
        serve), keep the index on disk when it is current, else build. A build the guards
        reject leaves the previous index file serving, when there is one."""
        outcome = ReloadOutcome(result=APPLIED, trigger="start", started_at=time.time())
        self._refresh_sources(self.config, outcome, download_all=False, first=True)
        missing = [spec.name for spec in self.config.list_specs() if not list_exists(spec.path)]
        if missing:
            for problem in outcome.problems:
                log.error("%s", problem)
            raise ReloadError(
                "no copy of list(s) "
                + ", ".join(missing)
                + " to serve"
                + (f": {outcome.problems[0]}" if outcome.problems else "")
            )
        header = self._current_header(self.config.list_specs())
        if header is not None:
            header = _read_header(self.index_path)  # current: now check its data checksum too
        if header is not None:
            self._refuse_at_start(list_problems(header.get("sources", [])))
            self._adopt(header)
            outcome.result = UNCHANGED
            outcome.names_after = int(header.get("count", 0))
            outcome.detail = f"index {self.index_path} is current ({outcome.names_after:,} names)"
        else:
            previous = _read_header(self.index_path)
            if previous is not None:
                self._adopt(previous)
                outcome.names_before = int(previous.get("count", 0))
            self._rebuild(
                self.config, outcome, force=previous is None and self.force_start, first=True
            )
            if outcome.result == REJECTED_PARSE and previous is None:
                self._refuse_at_start(outcome.problems)
            if not outcome.ok and previous is None:
                raise ReloadError(outcome.detail)
            if not outcome.ok:
                log.error(
                    "serving the previous index %s (%s names): %s",
                    self.index_path,
                    f"{int(previous.get('count', 0)):,}" if previous else "?",
                    outcome.detail,
                )
        self._finish(outcome)
        return outcome

    def _refuse_at_start(self, problems: list[str]) -> None:
        """No index to serve but one built from a list the guards refuse: stop, unless forced."""
        if not problems:
            return
        if self.force_start:
            for problem in problems:
                log.warning("serving anyway (--force): %s", problem)
            return
        raise ReloadError(
            "refusing to start: " + "; ".join(problems) + " (blokir serve --force starts anyway)"
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._requests.put(_Request("stop", False, False, False))
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- requests ------------------------------------------------------------------------

    def request(
        self, trigger: str, force: bool = False, wait: float | None = None
    ) -> ReloadOutcome | None:
        """Ask for a reload that re-reads the config and downloads every URL list; with `wait`,
        block up to that many seconds for its outcome."""
        request = _Request(trigger, force, download_all=True, reread_config=True)
        self._requests.put(request)
        if wait is None:
            return None
        request.done.wait(wait)
        return request.outcome

    def notify(self, zone: Any, client: str) -> bool:
        """A NOTIFY (RFC 1996) for `zone` (a dns.name.Name): make its lists' transfers due now;
        False when no list takes that zone."""
        names = self.xfr.notify(zone) if self.xfr is not None else []
        if names:
            self._requests.put(_Request("notify", False, download_all=False, reread_config=False))
        return bool(names)

    def _run(self) -> None:
        interval = self.config.updates.watch_interval
        while not self._stopping.is_set():
            first: _Request | None
            try:
                first = self._requests.get(timeout=interval)
            except queue.Empty:
                first = self._due()
                if first is None:
                    continue
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._requests.get_nowait())
            if self._stopping.is_set():
                break
            # Requests that queued up while a reload ran are answered by one more reload.
            merged = _Request(
                trigger=batch[0].trigger,
                force=any(r.force for r in batch),
                download_all=any(r.download_all for r in batch),
                reread_config=any(r.reread_config for r in batch),
            )
            try:
                outcome = self.reload(
                    merged.trigger, merged.force, merged.download_all, merged.reread_config
                )
            except Exception as exc:  # a bug must not end live updates
                log.exception("reload failed unexpectedly")
                outcome = ReloadOutcome(BUILD_FAILED, merged.trigger, time.time(), detail=str(exc))
            for request in batch:
                request.outcome = outcome
                request.done.set()
            interval = self.config.updates.watch_interval

    def _due(self) -> _Request | None:
        """A timer or file-change reload when one is due, else None. Changed files must look
        the same on two checks in a row, so a list still being written is not read."""
        now = time.time()
        if self.xfr is not None and self.xfr.due(now):
            return _Request("zone-transfer", False, download_all=False, reread_config=False)
        for status in self.lists.values():
            source = self._source(status.name)
            if source.url is not None:
                refresh = source.refresh or self.config.updates.refresh
                if now - status.checked_at >= refresh:
                    return _Request("timer", False, download_all=False, reread_config=False)
        if not self.config.updates.watch:
            return None
        config_changed = _stat_key(self.config.source) != self._config_stat
        stats = (_stat_key(self.config.source), *self._list_stats(self.config))
        settled = stats == self._seen_stats
        self._seen_stats = stats
        if not settled:
            return None
        if config_changed:
            return _Request("config-change", False, download_all=False, reread_config=True)
        key = self._state_key(self.config)
        if key != self._rejected_key and self._current_header(self.config.list_specs()) is None:
            return _Request("file-change", False, download_all=False, reread_config=False)
        return None

    # -- one reload ----------------------------------------------------------------------

    def reload(
        self,
        trigger: str,
        force: bool = False,
        download_all: bool = True,
        reread_config: bool = True,
    ) -> ReloadOutcome:
        outcome = ReloadOutcome(UNCHANGED, trigger, time.time(), forced=force)
        outcome.names_before = int(self.header.get("count", 0))
        config = self.config
        config_changed = False
        if reread_config:
            self._config_stat = _stat_key(config.source)
            try:
                loaded = self._load_config()
            except ConfigError as exc:
                outcome.result = INVALID_CONFIG
                outcome.detail = f"config rejected, the running one stays: {exc}"
                self._finish(outcome)
                return outcome
            config, outcome.restart_needed = _effective(self.config, loaded)
            try:
                servers = config.upstream_servers()
            except ConfigError as exc:  # resolv.conf has no usable nameserver now
                outcome.result = INVALID_CONFIG
                outcome.detail = f"config rejected, the running one stays: {exc}"
                self._finish(outcome)
                return outcome
            # A renewed DoT/DoH certificate (same paths, new files) is a change to apply too.
            config_changed = (
                config != self.config
                or servers != self._upstream_servers
                or _tls_files(config) != self._tls_files
            )
        self._refresh_sources(config, outcome, download_all=download_all, first=False)
        specs = config.list_specs()
        missing = [s.name for s in specs if not list_exists(s.path)]
        if missing:
            outcome.result = DOWNLOAD_FAILED if outcome.problems else BUILD_FAILED
            outcome.detail = "no copy of list(s) " + ", ".join(missing) + "; nothing changed"
            self._finish(outcome)
            return outcome
        header = self._current_header(specs)
        if header is None:
            self._rebuild(config, outcome, force=force, first=False)
        elif config_changed:
            self._swap(config, outcome)
        if outcome.result == UNCHANGED and outcome.problems:
            outcome.result = DOWNLOAD_FAILED  # nothing to apply, but a source is failing
        if outcome.result == UNCHANGED:
            outcome.names_after = outcome.names_before
            outcome.detail = outcome.detail or "lists and settings unchanged"
        self._finish(outcome)
        return outcome

    def _rebuild(self, config: Config, outcome: ReloadOutcome, force: bool, first: bool) -> None:
        specs = config.list_specs()
        target = Path(self.index_path)
        temporary = target.with_name(f".{target.name}.new-{os.getpid()}")
        started = time.perf_counter()
        error = _build(specs, temporary)
        if error is not None:
            temporary.unlink(missing_ok=True)
            outcome.result = BUILD_FAILED
            outcome.detail = f"the index could not be built, the old one keeps serving: {error}"
            self._rejected_key = self._state_key(config)
            return
        header = _read_header(str(temporary))
        if header is None:
            temporary.unlink(missing_ok=True)
            outcome.result = BUILD_FAILED
            outcome.detail = "the new index did not verify; the old one keeps serving"
            return
        build_seconds = time.perf_counter() - started
        result, problems = self._guard(config, header)
        if problems and not force:
            temporary.unlink(missing_ok=True)
            outcome.result = result
            outcome.problems.extend(problems)
            outcome.detail = (
                "not applied, the old index keeps serving: "
                + "; ".join(problems)
                + " (blokir reload --force applies it anyway)"
            )
            self._rejected_key = self._state_key(config)
            return
        if problems:
            outcome.problems.extend(f"forced: {p}" for p in problems)
        os.replace(temporary, target)
        self._rejected_key = None
        outcome.names_after = int(header.get("count", 0))
        was = f" (was {outcome.names_before:,})" if outcome.names_before else ""
        outcome.detail = (
            f"index rebuilt in {build_seconds:.2f} s: {outcome.names_after:,} names{was}"
        )
        if first:
            self.config = config
            self._adopt(header)
            outcome.result = APPLIED
            return
        self._swap(config, outcome, header)

    def _swap(
        self, config: Config, outcome: ReloadOutcome, header: dict[str, Any] | None = None
    ) -> None:
        failures = self.swap_workers(config, self.index_path) if self.swap_workers else []
        self.config = config
        self._upstream_servers = _upstream_servers(config)
        self._tls_files = _tls_files(config)
        self._adopt(header if header is not None else self.header)
        outcome.result = APPLIED
        outcome.names_after = int(self.header.get("count", 0))
        if not outcome.detail:
            outcome.detail = "settings applied"
        outcome.problems.extend(failures)

    def _guard(self, config: Config, new: dict[str, Any]) -> tuple[str, list[str]]:
        """The reasons a new index must not replace the serving one (empty: apply it)."""
        old_sources = {s.get("list"): s for s in self.header.get("sources", [])}
        problems: list[str] = []
        result = UNCHANGED
        for source in new.get("sources", []):
            name = source.get("list")
            problem = list_problem(source)
            if problem is not None:
                problems.append(problem)
                result = REJECTED_PARSE
                continue
            old = old_sources.get(name)
            if old is None or old.get("path") != source.get("path"):
                continue  # a new list, or one that moved: nothing to compare with
            before, after = int(old.get("unique", 0)), int(source.get("unique", 0))
            limit = self._source(name, config).max_shrink
            if limit is None:
                limit = config.updates.max_shrink
            if before > 0 and (before - after) / before > limit:
                problems.append(
                    f"list {name} shrank by {100 * (before - after) / before:.1f}% "
                    f"({before:,} -> {after:,} names), more than max_shrink {limit:g}"
                )
                if result == UNCHANGED:
                    result = REJECTED_SHRINK
        return result, problems

    # -- sources -------------------------------------------------------------------------

    def _refresh_sources(
        self, config: Config, outcome: ReloadOutcome, download_all: bool, first: bool
    ) -> None:
        """Download URL lists that are due (all of them when asked); record per-list state."""
        updates = config.updates
        policy = sources.FetchPolicy(
            timeout=updates.download_timeout,
            retries=updates.download_retries,
            max_bytes=updates.max_download_bytes,
        )
        now = time.time()
        xfr_lists = [(n, s.xfr, s.refresh) for n, _, s in _sources(config) if s.xfr is not None]
        if xfr_lists or self.xfr is not None:
            if self.xfr is None:
                # Here, not at the top: serving without axfr:// lists never loads dnspython
                # (about 25 MiB; tests/unit/test_serve_imports.py).
                from resolver.xfr.secondary import Secondaries

                self.xfr = Secondaries()
            self.xfr.sync(xfr_lists, updates.state_dir)
        for name, path, source in _sources(config):
            if source.xfr is not None:
                self._refresh_xfr(name, updates.download_timeout, outcome, download_all, first)
                continue
            if source.url is None:
                continue
            state = sources.load_state(updates.state_dir, name, source.url)
            refresh = source.refresh or updates.refresh
            due = state is None or download_all or now - state.checked_at >= refresh
            if first and state is not None:
                log.info(
                    "list %s: serving the last good copy downloaded %s (%s)",
                    name,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.fetched_at)),
                    path,
                )
                continue  # the timer downloads it once serving has begun
            if not due:
                continue
            result = sources.fetch(source.url, updates.state_dir, name, policy)
            if result.outcome == "failed":
                kept = "the last good copy keeps serving" if state else "no copy yet"
                problem = f"list {name}: download failed ({result.reason}): {result.detail}; {kept}"
                log.warning("%s", problem)
                outcome.problems.append(problem)
            elif result.outcome == "updated":
                log.info(
                    "list %s: downloaded %s bytes from %s", name, result.state.size, source.url
                )

    def _refresh_xfr(
        self, name: str, timeout: float, outcome: ReloadOutcome, download_all: bool, first: bool
    ) -> None:
        """Transfer an axfr:// list when it is due (resolver/xfr/secondary.py)."""
        secondary = self.xfr.get(name) if self.xfr is not None else None
        if secondary is None:
            return
        has_copy = secondary.has_copy()
        if first and has_copy:
            log.info(
                "list %s: serving the last good transfer, serial %s (%s)",
                name,
                secondary.state.serial,
                secondary.copy,
            )
            return  # the primary is asked once serving has begun
        if has_copy and not download_all and not secondary.due(time.time()):
            return
        result = secondary.transfer(timeout)
        if result.outcome == "failed":
            kept = "the last good copy keeps serving" if has_copy else "no copy yet"
            problem = (
                f"list {name}: zone transfer failed ({result.reason}): {result.detail}; {kept}"
            )
            log.warning("%s", problem)
            outcome.problems.append(problem)
        elif result.outcome == "updated":
            log.info("list %s: %s", name, result.detail)

    # -- state ---------------------------------------------------------------------------

    def _adopt(self, header: dict[str, Any]) -> None:
        with self._lock:
            self.header = header
            self.loaded_at = time.time()
            self.lists = self._list_status(self.config, header)
        self._seen_stats = None

    def _list_status(self, config: Config, header: dict[str, Any]) -> dict[str, ListStatus]:
        by_name = {s.get("list"): s for s in header.get("sources", [])}
        statuses: dict[str, ListStatus] = {}
        for name, path, source in _sources(config):
            compiled = by_name.get(name, {})
            status = ListStatus(
                name=name,
                kind="axfr" if source.xfr else "url" if source.url else "file",
                source=source.xfr.url if source.xfr else source.url or str(path),
                copy=str(path),
                names=int(compiled.get("unique", 0)),
                lines=int(compiled.get("lines", 0)),
                rejected=sum(compiled.get("rejected", {}).values()),
                sha256=str(compiled.get("sha256", "")),
                updated_at=float(compiled.get("mtime", 0.0)),
            )
            if source.url:
                # verify=False: the size check suffices for a status line; hashing a 144 MB
                # copy on every status request and reload would not.
                state = sources.load_state(config.updates.state_dir, name, source.url, verify=False)
                if state is not None:
                    status.updated_at = state.fetched_at
                    status.checked_at = state.checked_at
                    status.last_result = state.last_result
                    status.last_error = state.last_error
            secondary = self.xfr.get(name) if source.xfr and self.xfr is not None else None
            if secondary is not None:
                xstate = secondary.state
                status.updated_at = xstate.transferred_at
                status.checked_at = xstate.checked_at
                status.last_result = xstate.last_result
                status.last_error = xstate.last_error
                status.serial = xstate.serial
                status.transfer = xstate.kind
                status.last_transfer = xstate.last_kind
                status.transfers = dict(secondary.counts)
            statuses[name] = status
        return statuses

    def _finish(self, outcome: ReloadOutcome) -> None:
        outcome.seconds = round(time.time() - outcome.started_at, 3)
        if self.lists:  # download results changed even when the index did not
            with self._lock:
                self.lists = self._list_status(self.config, self.header)
        with self._lock:
            self.last = outcome
            self.counts[outcome.result] += 1
        level = logging.INFO if outcome.ok else logging.ERROR
        log.log(level, "reload (%s): %s: %s", outcome.trigger, outcome.result, outcome.detail)
        for problem in outcome.problems:
            log.log(level, "reload (%s): %s", outcome.trigger, problem)
        if outcome.restart_needed:
            log.warning(
                "reload (%s): changed settings that take effect after a restart: %s",
                outcome.trigger,
                ", ".join(outcome.restart_needed),
            )
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def status(self) -> dict[str, Any]:
        with self._lock:
            header = self.header
            return {
                "index": {
                    "path": self.index_path,
                    "names": int(header.get("count", 0)),
                    "checksum": header.get("data_xxh3", ""),
                    "built_at": header.get("created", 0.0),
                    "loaded_at": self.loaded_at,
                },
                "lists": [s.to_json() for s in self.lists.values()],
                "last_reload": self.last.to_json() if self.last else None,
                "reloads": dict(self.counts),
                "config": str(self.config.source),
            }

    def _current_header(self, specs: list[ListSpec]) -> dict[str, Any] | None:
        """The serving (or on-disk) index header when it was built from exactly these lists and
        files; None when a rebuild is needed."""
        header = self.header or _read_header(self.index_path, verify=False) or {}
        return header if header_is_current(header, specs) else None

    def _source(self, name: str, config: Config | None = None) -> ListSource:
        for list_name, _, source in _sources(config or self.config):
            if list_name == name:
                return source
        return ListSource()

    def _list_stats(self, config: Config) -> list[object]:
        return [list_stat_key(str(path)) for _, path, _ in _sources(config)]

    def _state_key(self, config: Config) -> tuple[object, ...]:
        return (
            tuple(json.dumps(spec_json(s)) for s in config.list_specs()),
            *self._list_stats(config),
        )


def _sources(config: Config) -> list[tuple[str, Path, ListSource]]:
    """(name, file compiled, source) of every list, allowlists first (config order)."""
    found = [(entry.name, entry.path, entry.source) for entry in config.allowlists]
    found.extend((entry.name, entry.path, entry.source) for entry in config.lists)
    return found


def _stat_key(path: str | os.PathLike[str]) -> tuple[int, int, float, int] | None:
    """What tells a file changed: inode, size, mtime (as the index header records it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime, stat.st_mtime_ns)


def _read_header(path: str, verify: bool = True) -> dict[str, Any] | None:
    try:
        with open_index(path, verify=verify) as index:
            return dict(index.header)
    except IndexError_ as exc:
        if Path(path).exists():
            log.warning("cannot use the index %s: %s", path, exc)
        return None


def _build(specs: Sequence[ListSpec], output: Path) -> str | None:
    """Compile in a child interpreter (see resolver/build.py); None on success, else why."""
    request = json.dumps({"specs": [spec_json(s) for s in specs], "output": str(output)})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "resolver.build"],
            input=request,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the build took longer than {BUILD_TIMEOUT:.0f} s"
    except OSError as exc:
        return f"cannot start the build: {exc}"
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "build failed"
    return None


def _tls_files(config: Config) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) of the DoT/DoH certificate and key: a renewal changes them."""
    stamps = []
    for path in (config.server.certificate, config.server.key):
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        stamps.append((info.st_mtime_ns, info.st_size) if info else (0, 0))
    return tuple(stamps)


def _upstream_servers(config: Config) -> list[Address] | None:
    try:
        return config.upstream_servers()
    except ConfigError:
        return None


def _effective(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """The loaded config with start-only settings kept from the running one, and which of those
    changed (they need a restart)."""
    changed: list[str] = []
    effective = loaded
    for section, key in RESTART_ONLY:
        old_section = getattr(running, section)
        new_section = getattr(effective, section)
        if key is None:
            if old_section != new_section:
                changed.append(f"[{section}]")
                effective = dataclasses.replace(effective, **{section: old_section})
            continue
        if not hasattr(old_section, key):
            continue
        if getattr(old_section, key) != getattr(new_section, key):
            changed.append(f"{section}.{key}")
            new_section = dataclasses.replace(new_section, **{key: getattr(old_section, key)})
            effective = dataclasses.replace(effective, **{section: new_section})
    return effective, changed
