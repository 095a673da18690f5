"""The UDP hot path without the kernel: the resolver benchmark's query file replayed through one
worker's UDP callback (`Worker._on_udp_readable`) with an in-memory socket, printing the
microseconds of Python work per query, overall and per path.

Why: dnsperf on this 2-core machine varies 10-20% between runs, more than most single changes
to the query path are worth. This replay has no syscalls, no event loop and no load generator
sharing the cores, so two versions of the code can be compared to a few percent. It does not
replace `scripts/bench`: queries/s end to end also pay for recvfrom/sendto and the loop.

What is real: the index (the benchmark's compiled list), the config shape `scripts/bench`
gives blokir (metrics on, so the latency sampling runs), the answer memo, the cache, the block
templates. What is simulated: the socket (a list of datagrams; answers are counted, not sent),
the upstream (a forwarded query is answered at once from a zone like the benchmark's NSD zone
and stored in the cache, as `Resolver._fetch` does), and the clock: it advances 1/rate seconds
per query, so TTLs tick and answers leave the memo as often as they would at that rate.

    python bench/hotpath_bench.py                       # 1M list, 800k queries, 3 passes
    python bench/hotpath_bench.py --quick               # 100k list, 100k queries (CI smoke)
    python bench/hotpath_bench.py --by-path             # also blocked and cache answers apart
    python bench/hotpath_bench.py --querylog writer     # dnstap query log off and on, side by side
    python bench/hotpath_bench.py --querylog discard    # the same, the writer's work left out

With --querylog the passes alternate between the query log off and on (`[querylog]` with
`sample = 100`, every blocked query logged, a `file:` sink in a temporary directory); printed
are the ratio of the medians and each adjacent off/on pair's ratio (wall and CPU) with their
median, which a busy machine's drift between passes affects less. With `writer` the writer
process encodes dnstap as in a real worker, on whatever core is free: on a machine without a
free core it competes with the replay.
With `discard` a reader that drops the batches stands in for it: the ratio is then the query
path's own cost (the appends, the batching and the pipe writes).
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import resolver_bench, servers  # noqa: E402
from resolver import metrics as m  # noqa: E402
from resolver import supervisor  # noqa: E402
from resolver.compile import compile_lists, write_index  # noqa: E402
from resolver.config import QueryLogConfig, parse_config  # noqa: E402
from resolver.dns.query import Query  # noqa: E402
from resolver.querylog.client import QueryLog  # noqa: E402
from resolver.worker import Worker  # noqa: E402

# `--querylog discard`: the writer replaced by a reader that drops what it reads.
DISCARD = "import sys\nwhile sys.stdin.buffer.read(1 << 20):\n    pass\n"
ZONE_TTL = 3600  # bench/resolver_bench.py write_zone: $TTL 3600, SOA MINIMUM 300
NEGATIVE_TTL = 300


class ReplaySocket:
    """recvfrom hands out the next datagram (and moves the fake clock), sendto counts."""

    def __init__(self, datagrams: list[bytes], clock: list[float], step: float) -> None:
        self.datagrams = datagrams
        self.position = 0
        self.clock = clock
        self.step = step
        self.sent = 0
        self.address = ("127.0.0.1", 40000)

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int]]:
        position = self.position
        if position >= len(self.datagrams):
            raise BlockingIOError
        self.position = position + 1
        self.clock[0] += self.step
        return self.datagrams[position], self.address

    def sendto(self, _data: bytes, _address: tuple[str, int]) -> int:
        self.sent += 1
        return 0


def upstream_answer(data: bytes) -> bytes:
    """What the benchmark's NSD zone says: A for every host, AAAA for every third, HTTPS for
    every twentieth, NODATA with the SOA otherwise."""
    query = dns.message.from_wire(data)
    question = query.question[0]
    response = dns.message.make_response(query)
    number = int(question.name.labels[0][4:] or 0)
    rdtype = question.rdtype
    if rdtype == dns.rdatatype.A:
        rdata = f"{resolver_bench.ALLOWED_NET}{number % 254 + 1}"
    elif rdtype == dns.rdatatype.AAAA and number % 3 == 0:
        rdata = f"2001:db8:100::{number:x}"
    elif rdtype == dns.rdatatype.HTTPS and number % 20 == 0:
        rdata = '1 . alpn="h2,h3"'
    else:
        rdata = ""
    if rdata:
        response.answer.append(dns.rrset.from_text(question.name, ZONE_TTL, "IN", rdtype, rdata))
    else:
        zone = resolver_bench.ZONE
        soa = f"ns.{zone} hostmaster.{zone} 1 3600 900 604800 300"
        origin = question.name.parent()
        response.authority.append(dns.rrset.from_text(origin, NEGATIVE_TTL, "IN", "SOA", soa))
    return response.to_wire()


def datagrams_for(lines: list[str], seed: int) -> list[bytes]:
    """dnsperf's queries: a random ID, RD set, no EDNS (the benchmark runs dnsperf without -e)."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        name, rdtype = line.split()
        query = dns.message.make_query(name, rdtype, use_edns=False)
        query.id = rng.randrange(65536)
        out.append(query.to_wire())
    return out


def build_worker(workdir: Path, list_path: Path) -> Worker:
    """A worker on the config `scripts/bench` gives blokir (its sockets are never used)."""
    config_path = servers.blokir_config(
        workdir / "blokir.toml",
        port=5353,
        workers=1,
        upstream_port=9,
        list_path=list_path,
        index_path=workdir / "index.blkx",
        landing_ipv4=resolver_bench.LANDING_IPV4,
        landing_ipv6=resolver_bench.LANDING_IPV6,
    )
    config = parse_config(config_path.read_text(), config_path)
    write_index(compile_lists(config.list_specs()), workdir / "index.blkx")
    worker = Worker(config, str(workdir / "index.blkx"), [], [])
    worker.timing = True  # as with metrics on (scripts/bench scrapes them)
    return worker


def replay(worker: Worker, sock: ReplaySocket, upstream: dict[bytes, bytes]) -> Counter[int]:
    """Feed every datagram through the UDP callback; forwarded queries are answered into the
    cache at once. Returns {0: datagrams handled, -1: of them forwarded}."""
    resolver = worker.resolver
    outcomes: Counter[int] = Counter()
    pending: list[tuple[Query, bytes]] = []

    def forward(sock: object, query: Query, data: bytes, address: object, started: float) -> None:
        pending.append((query, data))

    worker.start_udp_forward = forward  # type: ignore[assignment]
    callback = worker._on_udp_readable
    while sock.position < len(sock.datagrams):
        before = sock.position
        callback(sock)  # type: ignore[arg-type]
        for query, data in pending:
            key = resolver._cache_key(query)
            answer = upstream.get(data[2:])
            if answer is None:
                answer = upstream[data[2:]] = upstream_answer(data)
            resolver.cache.put(key, answer)
        outcomes[-1] += len(pending)
        pending.clear()
        outcomes[0] += sock.position - before
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="names in the list")
    parser.add_argument("--queries", type=int, default=800_000, help="queries per pass")
    parser.add_argument("--passes", type=int, default=3, help="measured passes (median)")
    parser.add_argument("--rate", type=float, default=80_000, help="simulated queries/s")
    parser.add_argument("--quick", action="store_true", help="100k list, 100k queries, 1 pass")
    parser.add_argument(
        "--by-path",
        action="store_true",
        help="then replay the blocked and the cache-answered queries apart (us per query each)",
    )
    parser.add_argument(
        "--querylog",
        choices=("writer", "discard"),
        help="alternate passes with the dnstap query log off and on (sample 1/100, all blocks); "
        "`writer`: the real writer process encodes and writes a file beside the replay; "
        "`discard`: a reader that throws the batches away, so only the query path's own cost "
        "is measured",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.queries = 100_000, 100_000
        if not args.querylog:  # a side-by-side comparison needs its passes
            args.passes = 1
    workdir = REPO / "bench" / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    list_path = resolver_bench.list_file(workdir, args.size, resolver_bench.DEFAULT_SEED)
    query_file = resolver_bench.write_queries(
        workdir,
        list_path,
        size=args.size,
        seed=resolver_bench.DEFAULT_SEED,
        count=200_000 if args.quick else 1_000_000,  # the files scripts/bench writes
        hosts=20_000,
        blocked_share=0.30,
        subdomain_share=0.25,
        zipf=1.0,
    )[0]
    with query_file.open() as f:
        lines = [line for _, line in zip(range(args.queries), f, strict=False)]
    datagrams = datagrams_for(lines, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        worker = build_worker(Path(tmp), list_path)
        clock = [1000.0]
        resolver = worker.resolver
        resolver._clock = lambda: clock[0]  # type: ignore[method-assign]
        resolver.cache._clock = lambda: clock[0]
        upstream: dict[bytes, bytes] = {}
        gc.freeze()  # what supervisor.run_worker does before serving
        gc.set_threshold(supervisor.GC_GEN0_THRESHOLD, 50, 100)
        step = 1.0 / args.rate
        warm = replay(worker, ReplaySocket(datagrams, clock, step), upstream)
        figures = []
        querylog_figures: list[float] = []
        cpu_figures: list[float] = []  # this process's CPU time: the writer process excluded
        querylog_cpu: list[float] = []
        pairs: list[tuple[float, float]] = []  # (wall, CPU) on/off of each adjacent off+on pair
        querylog = None
        if args.querylog:
            querylog = QueryLog(QueryLogConfig(dnstap=f"file:{tmp}/bench.fstrm", sample=100))
            if args.querylog == "discard":
                querylog.command = [sys.executable, "-c", DISCARD]
            querylog.start()
        for number in range(args.passes * (2 if querylog else 1)):
            logging = querylog is not None and number % 4 in (1, 2)  # off, on, on, off, ...
            resolver.use_querylog(querylog if logging else None)
            sock = ReplaySocket(datagrams, clock, step)
            blocked_before = sum(resolver.stats.blocked_by_policy_id.values())
            cells_before = list(resolver.stats.cells)
            started = time.perf_counter()
            cpu_started = time.process_time()
            counts = replay(worker, sock, upstream)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            (querylog_figures if logging else figures).append(elapsed / counts[0] * 1e6)
            (querylog_cpu if logging else cpu_figures).append(cpu / counts[0] * 1e6)
            if querylog is not None and number % 2:  # passes 2k and 2k+1: one off, one on
                on_wall, off_wall = querylog_figures[-1], figures[-1]
                pairs.append((on_wall / off_wall, querylog_cpu[-1] / cpu_figures[-1]))
            blocked = sum(resolver.stats.blocked_by_policy_id.values()) - blocked_before
            cached = sum(
                after - before
                for i, (before, after) in enumerate(
                    zip(cells_before, resolver.stats.cells, strict=True)
                )
                if i % m.N_OUTCOMES == m.CACHED
            )
        print(
            f"hot path replay: {args.size:,}-name list, {len(datagrams):,} queries per pass at a "
            f"simulated {args.rate:,.0f} q/s; warm-up forwarded {warm[-1]:,}"
        )
        print(
            f"last pass: {blocked:,} blocked, {cached:,} cache answers, "
            f"{counts[-1]:,} forwarded, {sock.sent:,} answers sent; "
            f"memo {resolver.memo_size():,} entries, cache {len(resolver.cache):,}"
        )
        resolver.use_querylog(None)
        runs = ", ".join(f"{f:.3f}" for f in figures)
        label = "query log off: " if querylog else ""
        print(f"{label}us per query: median {statistics.median(figures):.3f} (passes: {runs})")
        if querylog is not None:
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            querylog.close()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            writer_cpu = (children.ru_utime + children.ru_stime) - (
                children_before.ru_utime + children_before.ru_stime
            )
            runs = ", ".join(f"{f:.3f}" for f in querylog_figures)
            on = statistics.median(querylog_figures)
            print(f"query log on:  us per query: median {on:.3f} (passes: {runs})")
            cpu_off, cpu_on = statistics.median(cpu_figures), statistics.median(querylog_cpu)
            print(
                f"query log on/off: wall {on / statistics.median(figures):.3f}, "
                f"this process's CPU {cpu_on / cpu_off:.3f} ({cpu_off:.3f} -> {cpu_on:.3f} us "
                "per query; the writer process runs beside it)"
            )
            print(
                "pairs on/off (wall, CPU): "
                + ", ".join(f"{wall:.3f}/{cpu:.3f}" for wall, cpu in pairs)
                + f"; medians of pairs: wall {statistics.median(p[0] for p in pairs):.3f}, "
                f"CPU {statistics.median(p[1] for p in pairs):.3f}"
            )
            logged = max(querylog.logged, 1)
            print(
                f"{querylog.logged:,} queries logged, {querylog.dropped:,} dropped; the writer "
                f"process used {writer_cpu / logged * 1e6:.1f} us of CPU per logged query"
            )
        if args.by_path:
            for label, subset in by_path(worker, datagrams).items():
                figures = []
                for _ in range(args.passes):
                    forget_answers(worker)
                    sock = ReplaySocket(subset, clock, step)
                    started = time.perf_counter()
                    replay(worker, sock, upstream)
                    figures.append((time.perf_counter() - started) / len(subset) * 1e6)
                print(
                    f"  {label}: {len(subset):,} queries, us per query: median "
                    f"{statistics.median(figures):.3f}"
                )
    return 0


def forget_answers(worker: Worker) -> None:
    """An empty answer memo and doorkeeper (the cache stays): each subset pass then starts as
    a run of the benchmark does, where a blocked name is nearly always a first sighting."""
    resolver = worker.resolver
    resolver._memo.clear()
    resolver._memo_old.clear()
    resolver._seen = bytearray(len(resolver._seen))
    resolver._seen_count = 0


def by_path(worker: Worker, datagrams: list[bytes]) -> dict[str, list[bytes]]:
    """The datagrams split by how the resolver answers them now (after the passes): blocked
    names, and answers from the cache. Each subset is replayed from an empty memo
    (forget_answers): blocked names then cost a parse, an index walk and a template (a name
    asked again within the pass is remembered from its second sighting, as in a real run), and
    cache answers a parse and a cache lookup the first time, a memo hit after."""
    resolver = worker.resolver
    paths: dict[str, list[bytes]] = {"blocked": [], "cache answers": []}
    for data in datagrams:
        outcome = resolver.handle(data, "127.0.0.1")[1]
        if outcome == m.BLOCKED:
            paths["blocked"].append(data)
        elif outcome == m.CACHED:
            paths["cache answers"].append(data)
    return {label: subset for label, subset in paths.items() if subset}


if __name__ == "__main__":
    raise SystemExit(main())
