"""config/blokir.service: checked by systemd's own tools, and blokir run inside its sandbox.

No systemd is running here, so the unit is checked three ways:

- `systemd-analyze verify` (the unit is parsed and checked as systemd would load it; the
  ExecStart binary must exist, so a temporary copy points it at this environment's `blokir`),
  and `systemd-analyze security --offline=yes` for its exposure score;
- the directives the deployment guide promises are present;
- blokir serves real queries under the same kernel restrictions the unit asks for, applied by
  hand: a non-root user (nobody, when it can read this environment's packages; else uid 0 with
  the same single capability) holding only CAP_NET_BIND_SERVICE as an ambient capability
  (setpriv), NoNewPrivileges, and the seccomp filters systemd installs
  for SystemCallFilter (the syscall groups expanded by `systemd-analyze syscall-filter`),
  MemoryDenyWriteExecute and RestrictAddressFamilies (built with libseccomp, the library
  systemd uses), plus the kernel's PR_SET_MDWE where it exists. It answers on a port below 1024,
  reloads on SIGHUP and exits 0 on SIGTERM. The mount-namespace settings (ProtectSystem and
  friends) are not emulated; they only make paths read-only, and the only path blokir writes is
  the StateDirectory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.integration.dnsutil import UPSTREAM_IPV4, free_port
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "blokir.service"
UNIT_BINARY = "/opt/blokir/bin/blokir"
NOBODY = 65534
LANDING = "192.0.2.10"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def _blokir_binary() -> str:
    """An executable that exists here, to stand in for the unit's /opt/blokir/bin/blokir."""
    beside = Path(sys.executable).parent / "blokir"
    if beside.exists():
        return str(beside)
    return shutil.which("blokir") or sys.executable


def _unit_copy(directory: Path, text: str | None = None) -> Path:
    unit = directory / "blokir.service"
    unit.write_text((text or UNIT.read_text()).replace(UNIT_BINARY, _blokir_binary()))
    return unit


def _directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given, in order (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


# -- systemd-analyze ----------------------------------------------------------------------------


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    unit = _unit_copy(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    complaints = [line for line in output.splitlines() if "blokir.service" in line]
    assert result.returncode == 0, output
    assert not complaints, output


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above is not vacuous: an unknown directive is reported."""
    analyze = _systemd_analyze()
    text = UNIT.read_text().replace("\n[Service]\n", "\n[Service]\nProtectSystm=strict\n", 1)
    unit = _unit_copy(tmp_path, text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectSystm" in result.stdout + result.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    unit = _unit_copy(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    if "Unknown option" in output or "unrecognized option" in output:
        pytest.skip("this systemd-analyze has no offline security review")
    lines = [line for line in output.splitlines() if "Overall exposure level" in line]
    assert lines, output
    exposure = float(lines[0].split(":")[1].split()[0])
    assert exposure <= 2.0, output  # systemd rates 0.0-10.0; below 2.0 is "OK"


# -- what the deployment guide promises ---------------------------------------------------------


def test_unit_has_the_promised_directives() -> None:
    d = _directives(UNIT.read_text())
    assert d.get("DynamicUser") == ["yes"] or d.get("User", ["root"])[0] != "root"
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "MemoryDenyWriteExecute",
    ):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert d["StateDirectory"] == ["blokir"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Restart"] == ["on-failure"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert d["ExecStart"][0].split()[:3] == [UNIT_BINARY, "serve", "-c"]
    # The config the unit reads must put the index in the StateDirectory (ProtectSystem=strict
    # leaves nothing else writable): config/container.toml is the documented starting point.
    container = (ROOT / "config" / "container.toml").read_text()
    assert 'index_path = "/var/lib/blokir/blokir.blkx"' in container


# -- blokir inside the unit's sandbox ------------------------------------------------------------

# Runs as: python launcher.py POLICY.json -- COMMAND...  Installs the filters, then execs COMMAND.
LAUNCHER = textwrap.dedent(
    """
    import ctypes, ctypes.util, errno, json, os, socket, sys

    policy = json.load(open(sys.argv[1]))
    command = sys.argv[sys.argv.index("--") + 1:]
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW = 0x7FFF0000
    NE, LT, LE, EQ, GE, GT, MASKED_EQ = range(1, 8)

    def errno_action(code):
        return 0x00050000 | code

    def rule(ctx, action, name, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call of this architecture
        array = (Cmp * max(len(cmps), 1))(*[Cmp(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}")

    def load(ctx):
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")

    # MemoryDenyWriteExecute=yes: systemd's filter (src/shared/seccomp-util.c).
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
    mdwe = lib.seccomp_init(ALLOW)
    rule(mdwe, errno_action(errno.EPERM), "mmap",
         (2, MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
    for name in ("mprotect", "pkey_mprotect"):
        rule(mdwe, errno_action(errno.EPERM), name, (2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
    rule(mdwe, errno_action(errno.EPERM), "shmat", (2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
    load(mdwe)
    # The kernel's own W^X switch, where it has one (Linux 6.3+).
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)

    # RestrictAddressFamilies=: everything outside the allowed families gets EAFNOSUPPORT.
    allowed = sorted(getattr(socket, name) for name in policy["families"])
    families = lib.seccomp_init(ALLOW)
    refuse = errno_action(errno.EAFNOSUPPORT)
    rule(families, refuse, "socket", (0, LT, allowed[0], 0))
    rule(families, refuse, "socket", (0, GT, allowed[-1], 0))
    for family in range(allowed[0] + 1, allowed[-1]):
        if family not in allowed:
            rule(families, refuse, "socket", (0, EQ, family, 0))
    load(families)

    # SystemCallFilter=: an allow list, everything else EPERM (SystemCallErrorNumber=EPERM).
    calls = lib.seccomp_init(errno_action(errno.EPERM))
    for name in policy["syscalls"]:
        rule(calls, ALLOW, name)
    load(calls)
    os.execv(command[0], command)
    """
)


def _syscall_groups(analyze: str) -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: group name -> its entries (syscalls and @groups)."""
    text = subprocess.run(
        [analyze, "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.startswith(" "):
            current = None  # "# Unlisted system calls" and the like end the groups
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(entry: str, groups: dict[str, list[str]], seen: set[str] | None = None) -> set[str]:
    if not entry.startswith("@"):
        return {entry}
    seen = seen if seen is not None else set()
    if entry in seen:
        return set()
    seen.add(entry)
    out: set[str] = set()
    for item in groups[entry]:
        out |= _expand(item, groups, seen)
    return out


def _allowed_syscalls(analyze: str) -> list[str]:
    """The unit's SystemCallFilter= lines applied in order, as systemd does: the first line
    without ~ starts an allow list, a line with ~ takes its entries out of it."""
    groups = _syscall_groups(analyze)
    allowed: set[str] = set()
    for value in _directives(UNIT.read_text())["SystemCallFilter"]:
        deny = value.startswith("~")
        entries = set()
        for item in value.lstrip("~").split():
            entries |= _expand(item, groups)
        allowed = allowed - entries if deny else allowed | entries
    return sorted(allowed)


def _free_low_port() -> int:
    """A port below 1024 on 127.0.0.1, free for UDP and TCP (53 first)."""
    for port in (53, *range(1023, 899, -1)):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


def _ask(port: int, name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=1.0)


def _addresses(reply: dns.message.Message) -> list[str]:
    return [item.to_text() for rrset in reply.answer for item in rrset]


class _Sandbox:
    """The unit's restrictions around a command: setpriv for the user, capabilities and
    NoNewPrivileges, then the launcher for the seccomp filters."""

    def __init__(self, directory: Path, analyze: str, setpriv: str) -> None:
        self.directory = directory
        self.policy = directory / "policy.json"
        families = _directives(UNIT.read_text())["RestrictAddressFamilies"][0].split()
        self.policy.write_text(
            json.dumps({"syscalls": _allowed_syscalls(analyze), "families": families})
        )
        self.launcher = directory / "launcher.py"
        self.launcher.write_text(LAUNCHER)
        # blokir and its dependencies from this environment, whichever interpreter runs them.
        path = [str(ROOT), *site.getsitepackages()]
        self.env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.setpriv = setpriv
        # DynamicUser=yes means some unprivileged uid. This Python may live where only root can
        # read it (a pyenv under /root): then Debian's Python 3 of the same minor version, and
        # failing that uid 0, with the same single capability.
        candidates = [(sys.executable, NOBODY), (sys.executable, 0)]
        debian = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
        if debian.exists():
            candidates.insert(1, (str(debian), NOBODY))
        for python, uid in candidates:
            self.python, self.uid = python, uid
            if self._works():
                break

    def argv(self, command: list[str]) -> list[str]:
        return [
            self.setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.uid}",
            "--clear-groups",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--no-new-privs",
            self.python,
            str(self.launcher),
            str(self.policy),
            "--",
            *command,
        ]

    def run(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv([self.python, "-c", code]),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def _works(self) -> bool:
        result = subprocess.run(
            self.argv([self.python, "-c", "import numpy, dns.message, resolver.worker"]),
            capture_output=True,
            env=self.env,
            timeout=60,
        )
        return result.returncode == 0


@pytest.fixture
def sandbox() -> Iterator[_Sandbox]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("needs Linux and root (setpriv changes user and capabilities)")
    analyze = _systemd_analyze()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed (Debian package util-linux)")
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed (Debian package libseccomp2)")
    # Not pytest's tmp_path: that is private to root, and the sandboxed user must read it.
    directory = Path(tempfile.mkdtemp(prefix="blokir-unit-"))
    try:
        directory.chmod(0o755)
        yield _Sandbox(directory, analyze, setpriv)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_sandbox_is_real(sandbox: _Sandbox) -> None:
    """The filters bite: W+X memory, a packet socket and a privileged call are refused."""
    result = sandbox.run(
        textwrap.dedent(
            """
            import mmap, os, socket
            try:
                mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
                print("wx-mapped")
            except OSError as e:
                print("wx-refused", e.errno)
            try:
                socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
                print("netlink-opened")
            except OSError as e:
                print("netlink-refused", e.errno)
            try:
                os.setgroups([])
                print("setgroups-done")
            except OSError as e:
                print("setgroups-refused", e.errno)
            print("capeff", open("/proc/self/status").read().split("CapEff:")[1].split()[0])
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "wx-refused 1" in result.stdout
    assert "netlink-refused 97" in result.stdout  # EAFNOSUPPORT
    assert "setgroups-refused 1" in result.stdout  # @privileged is denied
    assert "capeff 0000000000000400" in result.stdout  # CAP_NET_BIND_SERVICE only


def test_blokir_serves_port_below_1024_inside_the_units_sandbox(
    sandbox: _Sandbox, fake_upstream: FakeUpstream
) -> None:
    port = _free_low_port()
    metrics_port = free_port()
    state = sandbox.directory / "state"  # the StateDirectory, owned by the service's user
    state.mkdir()
    os.chown(state, sandbox.uid, sandbox.uid)
    lists = sandbox.directory / "lists"
    lists.mkdir()
    (lists / "block.txt").write_text("blocked-in-sandbox.example\n")
    config = sandbox.directory / "blokir.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            listen = ["127.0.0.1:{port}"]
            workers = 2
            [upstream]
            servers = ["127.0.0.1:{fake_upstream.port}"]
            timeout = 1.0
            attempts = 1
            [blocking]
            landing_ipv4 = "{LANDING}"
            index_path = "{state}/blokir.blkx"
            [metrics]
            listen = "127.0.0.1:{metrics_port}"
            [[lists]]
            name = "sandbox"
            path = "lists/block.txt"
            """
        )
    )
    for path in (config, lists, lists / "block.txt"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    log = sandbox.directory / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            sandbox.argv([sandbox.python, "-m", "resolver", "serve", "-c", str(config)]),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=sandbox.env,
        )
    try:
        deadline = time.monotonic() + 60
        reply = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = _ask(port, "blocked-in-sandbox.example")
                break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.2)
        assert reply is not None, log.read_text()
        assert _addresses(reply) == [LANDING]
        assert _addresses(_ask(port, "allowed.example")) == [UPSTREAM_IPV4]
        metrics = ""
        for _ in range(50):  # published every 0.5 s
            with socket.create_connection(("127.0.0.1", metrics_port), timeout=2) as conn:
                conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                metrics = b"".join(iter(lambda: conn.recv(65536), b"")).decode()
            if 'blokir_blocked_total{action="landing"' in metrics:
                break
            time.sleep(0.1)
        assert 'list="sandbox"' in metrics

        # systemctl reload: SIGHUP recompiles the changed list inside the sandbox.
        (lists / "block.txt").write_text("blocked-in-sandbox.example\nadded-on-reload.example\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _addresses(_ask(port, "added-on-reload.example")) == [LANDING]:
                break
            time.sleep(0.2)
        assert _addresses(_ask(port, "added-on-reload.example")) == [LANDING], log.read_text()
        index = state / "blokir.blkx"
        assert index.stat().st_uid == sandbox.uid

        # systemctl stop: SIGTERM drains and exits 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "Operation not permitted" not in text, text
