"""`blokir` command line: argument parsing only; each subcommand calls into a module.

Exit codes: `check` follows grep (0 all blocked, 1 some not, 2 error); `reload` (0 applied or
unchanged, 1 refused or failed, 2 no server answered) says whether the running server took the
new lists; every other command exits 0, or 2 on an error.
A list that gives no entry or mostly rejected ones is an error (resolver.lists.quality).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from resolver import NATIVE, __version__, native, udpbatch
from resolver.config import Config, ConfigError, load_config, load_default_config
from resolver.envconfig import apply_env
from resolver.export import FORMATS as EXPORT_FORMATS
from resolver.index import Index, IndexError_, open_index
from resolver.lists.quality import list_problems
from resolver.provenance import CompileError

# resolver.compile (numpy, every list parser) is imported by the commands that compile, not here:
# `blokir serve` runs through this module and maps a compiled index without them.
if TYPE_CHECKING:
    from resolver.compile import CompileResult

EXIT_OK = 0
EXIT_NOT_ALL_BLOCKED = 1  # check
EXIT_REFUSED = 1  # reload: the server refused or failed it; the old index keeps serving
EXIT_ERROR = 2
CONFIG_ENV = "BLOKIR_CONFIG"  # the config file when -c is not given
CONFIG_HELP = f"config file (default: ${CONFIG_ENV}, else the embedded one)"
CONTROL_TIMEOUT = 1900.0  # seconds `blokir reload` waits: a build of a large list is minutes


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_ERROR
    try:
        code: int = args.handler(args)
        return code
    except (ConfigError, CompileError, IndexError_) as exc:
        print(f"blokir: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blokir", description="DNS forwarder that enforces blocklists at ISP scale."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=(
            f"blokir {__version__}, hot path {NATIVE.why}, UDP {udpbatch.MODE.why}, "
            f"query log {native.dnstap_mode(os.environ).why}"
        ),
    )
    sub = parser.add_subparsers(title="commands")

    compile_cmd = sub.add_parser("compile", help="compile lists into an index file")
    compile_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    compile_cmd.add_argument("lists", nargs="*", metavar="LIST", help="list files instead of -c")
    compile_cmd.add_argument("-o", "--output", help="index file (default: blocking.index_path)")
    compile_cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
    compile_cmd.add_argument(
        "--force",
        action="store_true",
        help="write the index even if a list gave no entry or too many rejected ones",
    )
    compile_cmd.set_defaults(handler=_cmd_compile)

    check_cmd = sub.add_parser(
        "check", help="is a name (or an answer address) blocked, and by which list and rule"
    )
    check_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    check_cmd.add_argument("--index", help="use this compiled index instead of the lists")
    check_cmd.add_argument(
        "--client",
        metavar="IP",
        help="what this client address gets: the lists of its [[groups]] entry in the config",
    )
    check_cmd.add_argument("names", nargs="+", metavar="NAME")
    check_cmd.set_defaults(handler=_cmd_check)

    serve_cmd = sub.add_parser("serve", help="run the DNS server")
    serve_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    serve_cmd.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve_cmd.add_argument(
        "--force",
        action="store_true",
        help="start even if a list gave no entry or too many rejected ones",
    )
    serve_cmd.set_defaults(handler=_cmd_serve)

    landing_cmd = sub.add_parser(
        "landing",
        help="run only the block-notice web server (docs/landing.md)",
        description="Serve the landing page of [landing] on its own, for a separate host: the "
        "index at [blocking] index_path is followed when it is replaced.",
    )
    landing_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    landing_cmd.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    landing_cmd.set_defaults(handler=_cmd_landing)

    reload_cmd = sub.add_parser(
        "reload",
        help="reload the lists and config of the running server",
        description="Ask the running `blokir serve` (found through the control socket of the "
        "config, [updates] control_socket) to re-read its config, download its URL lists and "
        "rebuild its index; prints the outcome. Exit 0 when applied or unchanged, 1 when "
        "rejected or failed (the old index keeps serving), 2 when no server answered.",
    )
    reload_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    reload_cmd.add_argument(
        "--force", action="store_true", help="apply even if a list shrank or looks like garbage"
    )
    reload_cmd.add_argument("--json", action="store_true", help="print the outcome as JSON")
    reload_cmd.set_defaults(handler=_cmd_reload)

    status_cmd = sub.add_parser(
        "status", help="show the running server's index, lists and last reload"
    )
    status_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    status_cmd.add_argument("--json", action="store_true", help="print the status as JSON")
    status_cmd.set_defaults(handler=_cmd_status)

    export_cmd = sub.add_parser("export", help="export the policy for other DNS engines")
    export_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    export_cmd.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export_cmd.add_argument("-o", "--output", help="output file (default: standard output)")
    export_cmd.add_argument("--zone", default="rpz.blokir.", help="RPZ zone name")
    export_cmd.set_defaults(handler=_cmd_export)

    plugin_cmd = sub.add_parser("plugin", help="run blokir's blocking inside another resolver")
    plugin_sub = plugin_cmd.add_subparsers(title="resolvers")
    unbound_cmd = plugin_sub.add_parser(
        "unbound",
        help="print the unbound.conf lines and environment for the Unbound plugin",
        description="Print what Unbound needs to run blokir's blocking as a Python module "
        "(docs/plugin-unbound.md); --check starts Unbound with it on a throwaway loopback port.",
    )
    unbound_cmd.add_argument("-c", "--config", help=CONFIG_HELP)
    unbound_cmd.add_argument("--check", action="store_true", help="load it in a real Unbound")
    unbound_cmd.add_argument("--unbound", default="unbound", help="the unbound binary")
    unbound_cmd.set_defaults(handler=_cmd_plugin_unbound)

    verify_cmd = sub.add_parser(
        "verify",
        help="measure how well resolvers enforce the lists",
        description="Query resolvers for a stratified sample of listed names (A and AAAA of the "
        "name, of www. under it and of a random label under it) and report per resolver and "
        "category the enforcement rate with a 95% Wilson interval.",
    )
    source = verify_cmd.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--list",
        action="append",
        default=[],
        metavar="FILE",
        dest="lists",
        help="a list file to audit (repeatable)",
    )
    source.add_argument(
        "--index",
        metavar="FILE",
        help="audit the lists named in this index's header (checked by sha256)",
    )
    source.add_argument("-c", "--config", help="audit this config's lists")
    verify_cmd.add_argument(
        "--resolver",
        action="append",
        required=True,
        metavar="HOST[:PORT]",
        dest="resolvers",
        help="a resolver to audit (repeatable)",
    )
    verify_cmd.add_argument(
        "--control",
        metavar="HOST[:PORT]",
        help="an unfiltered resolver: tells dead names from NXDOMAIN blocks",
    )
    size = verify_cmd.add_mutually_exclusive_group()
    size.add_argument(
        "--sample", type=int, default=200, metavar="N", help="names to sample (default 200)"
    )
    size.add_argument("--all", action="store_true", help="probe every listed name")
    verify_cmd.add_argument("--seed", type=int, help="random seed (the report records it)")
    verify_cmd.add_argument(
        "--rate",
        type=float,
        default=200.0,
        metavar="QPS",
        help="queries per second per resolver (default 200)",
    )
    verify_cmd.add_argument(
        "--concurrency",
        type=int,
        default=20,
        metavar="N",
        help="queries in flight per resolver (default 20)",
    )
    verify_cmd.add_argument(
        "--timeout", type=float, default=2.0, metavar="S", help="seconds per try (default 2)"
    )
    verify_cmd.add_argument(
        "--retries", type=int, default=2, metavar="N", help="retries after a timeout (default 2)"
    )
    verify_cmd.add_argument(
        "--landing",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADDR",
        help="landing addresses that mean blocked",
    )
    verify_cmd.add_argument(
        "--block-cname",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        dest="block_hosts",
        help="CNAME targets that mean blocked",
    )
    learn = verify_cmd.add_mutually_exclusive_group()
    learn.add_argument(
        "--learn-threshold",
        type=int,
        default=5,
        metavar="N",
        help="learn an address returned for N distinct names as landing (5)",
    )
    learn.add_argument("--no-learn", action="store_true", help="do not learn landing addresses")
    verify_cmd.add_argument("--json", metavar="FILE", dest="json_path", help="write JSON here")
    verify_cmd.add_argument(
        "--csv", metavar="FILE", dest="csv_path", help="write one CSV row per probe here"
    )
    verify_cmd.add_argument(
        "--html", metavar="FILE", dest="html_path", help="write a self-contained HTML report here"
    )
    verify_cmd.add_argument(
        "--fail-below",
        type=float,
        metavar="RATE",
        help="exit 1 when a resolver's rate (0..1) is below RATE",
    )
    verify_cmd.add_argument(
        "--serve-metrics",
        metavar="HOST:PORT",
        help="re-run every --interval and serve Prometheus metrics here",
    )
    verify_cmd.add_argument(
        "--interval",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds between runs with --serve-metrics (default 300)",
    )
    verify_cmd.add_argument(
        "--runs",
        type=int,
        default=0,
        metavar="N",
        help="with --serve-metrics, stop after N runs (default: never)",
    )
    verify_cmd.set_defaults(handler=_cmd_verify)
    return parser


def _config(path: str | None) -> Config:
    """The config file (`-c`, else `$BLOKIR_CONFIG`, else the embedded default) with the
    `BLOKIR_*` settings of the environment on top. The variable is what lets `blokir status`
    or `blokir reload` find the running server in a container or a unit without repeating
    the path."""
    path = path or os.environ.get(CONFIG_ENV) or None
    config = load_config(path) if path else load_default_config()
    return apply_env(config, os.environ)


# -- compile ----------------------------------------------------------------------------------


def _cmd_compile(args: argparse.Namespace) -> int:
    from resolver.compile import compile_lists, specs_from_paths, stderr_progress, write_index

    if args.lists and args.config:
        print("blokir: give either -c CONFIG or LIST files, not both", file=sys.stderr)
        return EXIT_ERROR
    if args.lists:
        specs = specs_from_paths(args.lists)
        output = Path(args.output or "blokir.blkx")
    else:
        config = _config(args.config)
        specs = config.list_specs()
        output = Path(args.output) if args.output else config.blocking.index_path
    result = compile_lists(specs, progress=stderr_progress())
    problems = list_problems(r.to_json() for r in result.lists)
    if problems and not args.force:
        print(format_summary(result), file=sys.stderr)
        _print_problems(problems, "no index written (--force writes it anyway)")
        return EXIT_ERROR
    started = time.perf_counter()
    size = write_index(result, output)
    write_seconds = time.perf_counter() - started
    if args.json:
        summary = {
            "index": str(output),
            "bytes": size,
            "entries": len(result.data),
            "compile_seconds": round(result.seconds, 3),
            "write_seconds": round(write_seconds, 3),
            "lists": [r.to_json() for r in result.lists],
        }
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(result, output, size, write_seconds))
    if problems:
        _print_problems(problems, "written anyway (--force)")
    return EXIT_OK


def _print_problems(problems: Sequence[str], outcome: str) -> None:
    for problem in problems:
        print(f"blokir: {problem}", file=sys.stderr)
    print(f"blokir: {outcome}", file=sys.stderr)


def format_summary(
    result: CompileResult, output: Path | None = None, size: int = 0, write_seconds: float = 0.0
) -> str:
    lines = []
    header = f"{'list':<24} {'format':<8} {'lines':>10} {'entries':>10} {'unique':>10} {'dups':>8}"
    lines.append(header + f" {'rejected':>9} {'skipped':>8} {'ips':>6}")
    for r in result.lists:
        rep = r.report
        lines.append(
            f"{r.spec.name[:24]:<24} {rep.format:<8} {rep.lines:>10} {rep.entries:>10}"
            f" {r.unique:>10} {r.duplicates:>8} {sum(rep.rejected.values()):>9}"
            f" {sum(rep.skipped.values()):>8} {len(rep.ip_entries) + rep.ip_entries_dropped:>6}"
        )
    for r in result.lists:
        rep = r.report
        for kind, counter in (("rejected", rep.rejected), ("skipped", rep.skipped)):
            for reason, count in counter.most_common():
                lines.append(f"  {r.spec.name}: {kind} {count} x {reason}")
                for example in rep.examples.get(reason, []):
                    lines.append(f"      {example}")
    if output is not None:
        lines.append(
            f"index {output}: {len(result.data)} names, {size / 1e6:.1f} MB, "
            f"compiled in {result.seconds:.2f} s, written in {write_seconds:.2f} s"
        )
    return "\n".join(lines)


# -- check ------------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    index, temporary = _index_for_check(args)
    try:
        problems = list_problems(index.header.get("sources", []))
        if problems:
            _print_problems(problems, "not checked: a list in this index is not fit to serve")
            return EXIT_ERROR
        allowed = None
        if args.client:
            allowed = _client_group(args, index)
            if allowed is None:
                return EXIT_ERROR
        return check_names(index, args.names, sys.stdout, allowed or None)
    finally:
        index.close()
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _client_group(args: argparse.Namespace, index: Index) -> bytes | None:
    """The policy ids a client's group takes (b"" for the default group: every list), after a
    line naming the group; None (and a message) when the address is not one."""
    import ipaddress

    from resolver.groups import GroupTable

    try:
        ipaddress.ip_address(args.client)
    except ValueError:
        print(f"error    --client {args.client}: not an IP address", file=sys.stderr)
        return None
    table = GroupTable(_config(args.config).groups, index.policies)
    gid = table.group_of(args.client)
    print(f"client   {args.client}  group={table.names[gid]}")
    return table.allowed[gid]


def _index_for_check(args: argparse.Namespace) -> tuple[Index, Path | None]:
    """The index to answer from: --index, else the config's compiled index when it is current
    (same list settings, same file sizes and mtimes), else a fresh compile into a temporary
    file (returned too, for the caller to remove)."""
    from resolver.compile import compile_temporary, current_index

    if args.index:
        return open_index(args.index), None
    config = _config(args.config)
    specs = config.list_specs()
    index = current_index(config.blocking.index_path, specs)
    if index is not None:
        return index, None
    return compile_temporary(specs)


def check_names(
    index: Index, names: Sequence[str], out: TextIO, allowed: bytes | None = None
) -> int:
    """Print one line per name; 0 when every name is blocked, 1 when any is not, 2 when a name
    is not a valid domain. `allowed`: only a client group's lists (resolver/groups.py)."""
    from resolver.lists.normalise import Rejected, normalise

    write = out.write
    status = EXIT_OK
    for raw in names:
        try:
            name = normalise(raw)
        except Rejected as rejected:
            write(f"error    {raw}: not a domain name ({rejected.reason})\n")
            status = EXIT_ERROR
            continue
        if name.is_ip:
            blocked = check_address(index, name.name, write)
            status = max(status, EXIT_OK if blocked else EXIT_NOT_ALL_BLOCKED)
            continue
        found = index.match(name.name.encode("ascii"), allowed)
        if found is None:
            write(f"allowed  {name.name}  (no list entry)\n")
            status = max(status, EXIT_NOT_ALL_BLOCKED)
            continue
        policy = index.policy(found.policy_id)
        rule = found.name.decode("ascii")
        rule = f"*.{rule}" if found.as_parent else rule
        verdict = "allowed " if policy.is_allow else "blocked "
        write(
            f"{verdict} {name.name}  list={policy.list_name} rule={rule} "
            f"category={policy.category} action={policy.action.value}\n"
        )
        if policy.is_allow:
            status = max(status, EXIT_NOT_ALL_BLOCKED)
    return status


def check_address(index: Index, text: str, write: Callable[[str], object]) -> bool:
    """One line for an address: whether an answer holding it is blocked (response-IP triggers),
    by which list and listed prefix. True when blocked."""
    import ipaddress

    address = ipaddress.ip_address(text)
    policy_id, length = index.ip_match.locate(address.packed)
    if not policy_id:
        write(f"allowed  {text}  (no IP list entry: answers holding it are not blocked)\n")
        return False
    policy = index.policy(policy_id)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    rule = ipaddress.ip_network((address, length), strict=False)
    verdict = "allowed " if policy.is_allow else "blocked "
    write(
        f"{verdict} {text}  list={policy.list_name} rule={rule} category={policy.category} "
        f"action={policy.action.value} (in answers)\n"
    )
    return not policy.is_allow


# -- serve ----------------------------------------------------------------------------------


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s blokir[%(process)d] %(levelname)s %(message)s",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from resolver.supervisor import ServeError, serve

    _setup_logging(args.verbose)
    config = _config(args.config)
    try:
        return serve(config, load_config=lambda: _config(args.config), force=args.force)
    except ServeError as exc:
        print(f"blokir: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _cmd_landing(args: argparse.Namespace) -> int:
    from resolver.landing.process import LandingError, run_standalone

    _setup_logging(args.verbose)
    try:
        return run_standalone(_config(args.config))
    except LandingError as exc:
        print(f"blokir: {exc}", file=sys.stderr)
        return EXIT_ERROR


# -- reload and status --------------------------------------------------------------------------


def _control(args: argparse.Namespace, message: dict[str, object]) -> dict[str, Any] | None:
    """Send one request to the server running with this config; None (and a message) when no
    server answers."""
    from resolver.control import ControlError, request

    config = _config(args.config)
    try:
        return request(config.updates.socket_path, message, timeout=CONTROL_TIMEOUT)
    except ControlError as exc:
        print(f"blokir: {exc}", file=sys.stderr)
        return None


def _cmd_reload(args: argparse.Namespace) -> int:
    from resolver.status import format_outcome

    reply = _control(args, {"command": "reload", "force": args.force})
    if reply is None:
        return EXIT_ERROR
    if "outcome" not in reply:
        print(f"blokir: {reply.get('error', 'no outcome in the reply')}", file=sys.stderr)
        return EXIT_REFUSED
    outcome = reply["outcome"]
    print(json.dumps(outcome, indent=2) if args.json else format_outcome(outcome))
    return EXIT_OK if outcome["ok"] else EXIT_REFUSED


def _cmd_status(args: argparse.Namespace) -> int:
    from resolver.status import format_status

    reply = _control(args, {"command": "status"})
    if reply is None:
        return EXIT_ERROR
    if not reply.get("ok"):
        print(f"blokir: {reply.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(reply["status"], indent=2) if args.json else format_status(reply["status"]))
    return EXIT_OK


# -- export -----------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    from resolver.compile import collect_names
    from resolver.export import export

    config = _config(args.config)
    named = collect_names(config.list_specs())
    kwargs = {
        "landing_ipv4": config.blocking.landing_ipv4,
        "landing_ipv6": config.blocking.landing_ipv6,
        "ttl": config.blocking.ttl,
        "zone": args.zone,
    }
    if args.output:
        with open(args.output, "w", encoding="ascii") as out:
            stats = export(named, args.format, out, **kwargs)
    else:
        stats = export(named, args.format, sys.stdout, **kwargs)
    print(f"blokir export: {stats}", file=sys.stderr)
    return EXIT_OK


# -- plugin -----------------------------------------------------------------------------------


def _cmd_plugin_unbound(args: argparse.Namespace) -> int:
    from resolver.plugins.unbound_setup import check, plugin_setup

    config = _config(args.config)  # validated here, so a broken config fails before Unbound
    path = args.config or os.environ.get(CONFIG_ENV)
    setup = plugin_setup(Path(path) if path else None, args.unbound)
    if not args.check:
        print(setup.render(), end="")
        return EXIT_OK
    ok, detail = check(setup, args.unbound)
    print(f"{'ok' if ok else 'failed'}: {detail}")
    if ok:
        print(f"index {config.blocking.index_path}")
    return EXIT_OK if ok else EXIT_ERROR


# -- verify -----------------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    from resolver.verify import VerifyOptions, landing_values, run_verify

    options = VerifyOptions(
        resolvers=args.resolvers,
        lists=args.lists,
        index=args.index,
        config=args.config,
        control=args.control,
        sample=None if args.all else args.sample,
        seed=args.seed,
        rate=args.rate,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        landing=landing_values(args.landing),
        block_hosts=args.block_hosts,
        learn_threshold=None if args.no_learn else args.learn_threshold,
        json_path=args.json_path,
        csv_path=args.csv_path,
        html_path=args.html_path,
        fail_below=args.fail_below,
        serve_metrics=args.serve_metrics,
        interval=args.interval,
        runs=args.runs,
    )
    return run_verify(options)
