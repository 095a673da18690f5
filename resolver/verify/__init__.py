"""`blokir verify`: measure how well resolvers enforce a blocklist.

Draw a stratified, reproducible sample of listed names (`sample`), query every resolver for A
and AAAA of each name, of `www.` under it and of a random label under it (`probe`), classify
every answer (`classify`), and report per resolver and category the enforcement rate with a 95%
Wilson interval (`stats`) as a terminal table, JSON, CSV (`report`) and HTML (`report_html`);
or serve the figures as Prometheus metrics, re-measured every interval (`metrics`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from resolver.compile import CompileError
from resolver.config import ConfigError
from resolver.index import IndexError_
from resolver.verify.audit import Audit, probe_jobs, run_audit
from resolver.verify.classify import (
    DEFAULT_LEARN_THRESHOLD,
    BlockTargets,
    Verdict,
    canonical_addresses,
)
from resolver.verify.probe import Settings, Target, parse_target
from resolver.verify.sample import SampleError, Source, draw_sample, open_source

__all__ = [
    "DEFAULT_LEARN_THRESHOLD",
    "Audit",
    "SampleError",
    "Verdict",
    "VerifyOptions",
    "audit_once",
    "run_verify",
]

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_ERROR = 2


@dataclass(slots=True)
class VerifyOptions:
    resolvers: list[str]
    lists: list[str] = field(default_factory=list)
    index: str | None = None
    config: str | None = None
    control: str | None = None
    sample: int | None = 200  # None: every listed name (--all)
    seed: int | None = None
    rate: float = 200.0
    concurrency: int = 20
    timeout: float = 2.0
    retries: int = 2
    landing: list[str] = field(default_factory=list)
    block_hosts: list[str] = field(default_factory=list)
    learn_threshold: int | None = DEFAULT_LEARN_THRESHOLD  # None: no learning
    json_path: str | None = None
    csv_path: str | None = None
    html_path: str | None = None
    fail_below: float | None = None
    serve_metrics: str | None = None
    interval: float = 300.0
    runs: int = 0  # with --serve-metrics: stop after this many audits (0: until stopped)


class OptionError(ValueError):
    """A command-line value that cannot be used: the message says which and why."""


def _check(options: VerifyOptions) -> tuple[list[Target], Target | None, Settings, BlockTargets]:
    if not options.resolvers:
        raise OptionError("give at least one --resolver HOST[:PORT]")
    try:
        targets = list(dict.fromkeys(parse_target(r) for r in options.resolvers))
        control = parse_target(options.control) if options.control else None
        landing = canonical_addresses(options.landing)
    except ValueError as exc:
        raise OptionError(str(exc)) from exc
    if options.rate <= 0:
        raise OptionError("--rate must be positive")
    if options.concurrency < 1:
        raise OptionError("--concurrency must be at least 1")
    if options.timeout <= 0:
        raise OptionError("--timeout must be positive")
    if options.retries < 0:
        raise OptionError("--retries must be 0 or more")
    if options.sample is not None and options.sample < 1:
        raise OptionError("--sample must be at least 1")
    if options.learn_threshold is not None and options.learn_threshold < 2:
        raise OptionError("--learn-threshold must be at least 2")
    if options.serve_metrics is not None and options.interval <= 0:
        raise OptionError("--interval must be positive")
    settings = Settings(options.rate, options.concurrency, options.timeout, options.retries)
    hosts = frozenset(h.lower().rstrip(".") for h in options.block_hosts)
    return targets, control, settings, BlockTargets(landing, hosts)


class ProgressBar:
    """A one-line bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, total: int, label: str = "probing") -> None:
        self.stream = stream
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        fraction = min(1.0, self.done / self.total)
        bar = "#" * int(fraction * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} queries")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def audit_once(options: VerifyOptions, seed: int | None, err: TextIO | None = None) -> Audit:
    """Sample, probe, classify: one audit with the options' lists and resolvers."""
    err = sys.stderr if err is None else err
    targets, control, settings, given = _check(options)
    with open_source(lists=options.lists, index=options.index, config=options.config) as source:
        return _audit_source(source, options, seed, targets, control, settings, given, err)


def _audit_source(
    source: Source,
    options: VerifyOptions,
    seed: int | None,
    targets: list[Target],
    control: Target | None,
    settings: Settings,
    given: BlockTargets,
    err: TextIO,
) -> Audit:
    sample = draw_sample(source, options.sample, seed)
    given = BlockTargets(given.landing | canonical_addresses(source.landing), given.hosts)
    queried = len(targets) + (1 if control is not None and control not in targets else 0)
    bar = ProgressBar(err, len(probe_jobs(sample.domains)) * queried)
    try:
        return run_audit(
            sample, targets, control, settings, given, options.learn_threshold, progress=bar
        )
    finally:
        bar.close()


def write_reports(audit: Audit, options: VerifyOptions) -> None:
    from resolver.verify.report import write_csv, write_json
    from resolver.verify.report_html import write_html

    outputs: list[tuple[str | None, Callable[[Audit, TextIO], object]]] = [
        (options.json_path, write_json),
        (options.csv_path, write_csv),
        (options.html_path, write_html),
    ]
    for path, writer in outputs:
        if path is None:
            continue
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as out:
            writer(audit, out)
        tmp.replace(target)


def _below(audit: Audit, threshold: float | None) -> list[str]:
    if threshold is None:
        return []
    return [
        r.label
        for r in audit.resolvers
        if r.overall.enforcement.rate is not None and r.overall.enforcement.rate < threshold
    ]


def run_verify(options: VerifyOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The `blokir verify` command: 0 done, 1 a resolver is below `--fail-below`, 2 error."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        if options.serve_metrics is not None:
            return serve_metrics(options, out, err)
        audit = audit_once(options, options.seed, err)
    except (OptionError, SampleError) as exc:
        err.write(f"blokir verify: {exc}\n")
        return EXIT_ERROR
    from resolver.verify.report import table

    out.write(table(audit) + "\n")
    write_reports(audit, options)
    below = _below(audit, options.fail_below)
    if below:
        err.write(f"blokir verify: below {options.fail_below:.1%}: {', '.join(below)}\n")
        return EXIT_BELOW_THRESHOLD
    return EXIT_OK


def serve_metrics(options: VerifyOptions, out: TextIO, err: TextIO) -> int:
    """Audit every `interval` seconds and serve the last audit's figures over HTTP."""
    from prometheus_client import CollectorRegistry, start_http_server

    from resolver.verify.metrics import VerifyCollector
    from resolver.verify.report import headline

    assert options.serve_metrics is not None
    _check(options)  # fail on bad options before binding anything
    try:
        listen = parse_target(options.serve_metrics, default_port=0)
    except ValueError as exc:
        raise OptionError(f"--serve-metrics: {exc}") from exc
    if listen.port == 0:
        raise OptionError("--serve-metrics needs HOST:PORT")
    registry = CollectorRegistry(auto_describe=False)
    collector = VerifyCollector()
    registry.register(collector)
    server, thread = start_http_server(listen.port, addr=listen.host, registry=registry)
    err.write(f"blokir verify: metrics on http://{listen.label}/metrics\n")
    err.flush()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    runs = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            seed = None if options.seed is None else options.seed + runs
            try:
                audit = audit_once(options, seed, err)
            except (SampleError, CompileError, ConfigError, IndexError_, OSError) as exc:
                # A list being rewritten or a config mid-edit: report it, try again next time.
                err.write(f"blokir verify: run {runs + 1} failed: {exc}\n")
                err.flush()
            else:
                collector.update(audit)
                write_reports(audit, options)
                out.write(f"{headline(audit)}\n")
                for result in audit.resolvers:
                    rate = result.overall.enforcement
                    low, high = rate.interval
                    out.write(f"  {result.label}: {_fmt(rate.rate)} [{_fmt(low)}, {_fmt(high)}]\n")
                out.flush()
            runs += 1
            if options.runs and runs >= options.runs:
                break
            stop.wait(max(0.0, options.interval - (time.monotonic() - started)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return EXIT_OK


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def landing_values(values: Sequence[str]) -> list[str]:
    """`--landing` values, each possibly comma-separated."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]
