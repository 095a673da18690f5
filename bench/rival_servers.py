"""PowerDNS Recursor and dnsdist as resolver-benchmark peers (bench/resolver_bench.py): their
config text and how each is started, on a free 127.0.0.1 port, forwarding what it does not
block to the benchmark's NSD upstream. Kept apart from bench/servers.py so each peer kind is one
small block here and one row in resolver_bench.py's peer table.

Both are configured to answer a listed name and every name below it with the landing address,
as blokir's `action = "landing"`, `match = "subtree"` list does; docs/performance.md lists where
their answers still differ from blokir's.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from bench.servers import LOOPBACK, ManagedProcess, find_binary, require_binary

# Both cache up to this many answers (pdns-recursor's own default for its packet cache).
PACKET_CACHE_ENTRIES = 500_000


# -- PowerDNS Recursor ------------------------------------------------------------------------


def pdns_lua(rpz: Path) -> str:
    """The Lua config: the list as an RPZ zone file (`blokir export --format rpz`: for each name
    and `*.name` an A and an AAAA record with the landing address, RFC-draft RPZ local data)."""
    return f'rpzFile("{rpz}", {{ policyName = "blokir", defttl = 60 }})\n'


def pdns_socket_dir(workdir: Path, tag: str) -> Path:
    """Where a pdns peer puts its control socket (rec_control talks to it there)."""
    return workdir / tag


def pdns_counters(socket_dir: Path) -> dict[str, int]:
    """The recursor's `questions` and `packetcache-hits` counters via rec_control ({} when it
    is missing or does not answer)."""
    control = find_binary("rec_control")
    if control is None:
        return {}
    names = ("questions", "packetcache-hits")
    argv = [control, f"--socket-dir={socket_dir}", "--timeout=5", "get", *names]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    values = done.stdout.split()
    if done.returncode != 0 or len(values) != len(names):
        return {}
    with contextlib.suppress(ValueError):
        return {name: int(value) for name, value in zip(names, values, strict=True)}
    return {}


def pdns_conf(workdir: Path, *, port: int, threads: int, upstream_port: int, tag: str) -> str:
    """recursor.conf for pdns-recursor 4.8 with `threads` worker threads, each on its own
    SO_REUSEPORT socket (no distributor thread: the shape of Unbound's so-reuseport), the
    packet cache at its default, no DNSSEC validation (Unbound runs without its validator too)
    and nothing leaving loopback."""
    return f"""# Written by bench/resolver_bench.py
local-address={LOOPBACK}
local-port={port}
allow-from=127.0.0.0/8
lua-config-file={workdir}/{tag}.lua
forward-zones-recurse=.={LOOPBACK}:{upstream_port}
# 127.0.0.0/8 is in the default dont-query list; the upstream lives there.
dont-query=
threads={threads}
pdns-distributes-queries=no
reuseport=yes
max-packetcache-entries={PACKET_CACHE_ENTRIES}
dnssec=off
socket-dir={pdns_socket_dir(workdir, tag)}
daemon=no
write-pid=no
disable-syslog=yes
quiet=yes
loglevel=3
statistics-interval=0
# No security-status query to the network (its default asks secpoll.powerdns.com).
security-poll-suffix=
"""


def write_pdns_conf(
    workdir: Path, tag: str, *, port: int, threads: int, upstream_port: int, rpz: Path
) -> Path:
    """recursor.conf (pdns_conf) in its own config directory `workdir/<tag>-conf`, the Lua
    config (pdns_lua) and the socket directory beside it; the path of recursor.conf."""
    confdir = workdir / f"{tag}-conf"
    confdir.mkdir(exist_ok=True)
    pdns_socket_dir(workdir, tag).mkdir(exist_ok=True)
    (workdir / f"{tag}.lua").write_text(pdns_lua(rpz))
    conf = confdir / "recursor.conf"
    conf.write_text(
        pdns_conf(workdir, port=port, threads=threads, upstream_port=upstream_port, tag=tag)
    )
    return conf


def start_pdns(conf: Path, tag: str) -> ManagedProcess:
    """pdns_recursor in the foreground with the config directory of `conf` (write_pdns_conf). As
    root it stays root (no setuid in this config): it binds a port above 1024 and writes only
    in the run's temporary folder, so it needs no other user."""
    recursor = require_binary("pdns_recursor")
    argv = [recursor, f"--config-dir={conf.parent}"]
    return ManagedProcess(tag, argv, conf.parent.with_suffix(".log"))


# -- dnsdist ----------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    """A Lua string literal; the paths here never hold quotes or backslashes, but say so."""
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"not a plain Lua string: {text!r}")
    return f'"{text}"'


def dnsdist_conf(
    *,
    port: int,
    threads: int,
    upstream_port: int,
    list_path: Path,
    landing_ipv4: str,
    landing_ipv6: str,
    ttl: int = 60,
) -> str:
    """dnsdist 1.7's Lua config: `threads` UDP/TCP listeners on one address with SO_REUSEPORT
    (dnsdist runs a receiver thread per listener), as many sockets (and responder threads) to
    the one backend, a packet cache, and the list read line by line into a SuffixMatchNode (a
    name and everything below it). Blocked A/AAAA queries get the landing address; other types
    of a blocked name get NOERROR with no answer (NODATA), as blokir answers them, but without
    blokir's SOA in the authority section and its Extended DNS Error (neither is in 1.7's
    actions). No console, no web server, no security polling."""
    local = f"{LOOPBACK}:{port}"
    listeners = [f"setLocal({_lua_string(local)}, {{ reusePort = true }})"]
    listeners += [f"addLocal({_lua_string(local)}, {{ reusePort = true }})"] * (threads - 1)
    both = "{ " + ", ".join(_lua_string(a) for a in (landing_ipv4, landing_ipv6)) + " }"
    return f"""-- Written by bench/resolver_bench.py
{chr(10).join(listeners)}
setACL({{ "127.0.0.0/8" }})
setSecurityPollSuffix("")
newServer({{ address = "{LOOPBACK}:{upstream_port}", sockets = {threads},
  checkName = "bench.example.", checkType = "SOA" }})
getPool(""):setCache(newPacketCache({PACKET_CACHE_ENTRIES}))
local listed = newSuffixMatchNode()
local count = 0
for line in io.lines({_lua_string(str(list_path))}) do
  if line ~= "" and line:sub(1, 1) ~= "#" then
    listed:add(line)
    count = count + 1
  end
end
infolog("bench: " .. count .. " names in the SuffixMatchNode")
local blocked = SuffixMatchNodeRule(listed, true)
local address = OrRule({{ QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA) }})
addAction(AndRule({{ blocked, NotRule(address) }}), RCodeAction(DNSRCode.NOERROR, {{ ra = true }}))
addAction(blocked, SpoofAction({both}, {{ ttl = {ttl}, ra = true }}))
"""


def start_dnsdist(conf: Path, tag: str) -> ManagedProcess:
    """dnsdist in the foreground with the config `conf` (dnsdist_conf); --supervised: no console
    on stdin."""
    dnsdist = require_binary("dnsdist")
    argv = [dnsdist, "--supervised", "--disable-syslog", "-C", str(conf)]
    return ManagedProcess(tag, argv, conf.with_suffix(".log"))
