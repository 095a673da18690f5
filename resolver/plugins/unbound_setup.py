"""`blokir plugin unbound`: the unbound.conf lines and environment for the plugin, and `--check`.

Unbound embeds the system's libpython and starts it without site-packages, so the plugin's
imports need help: the directory that holds this package (a regular install: site-packages
itself, which the script adds), the interpreter's site-packages when the dependencies live
apart from the package (a development install), and the directory of python3-unbound's
`unboundmodule.py`, which Debian's Unbound imports but does not put on its path. Python only
reads those from PYTHONPATH, and the blokir config from BLOKIR_CONFIG: both go into Unbound's
environment (Debian's unit reads /etc/default/unbound).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import resolver
from resolver.plugins import unbound as module

DEBIAN_UNBOUNDMODULE = Path("/usr/lib/python3/dist-packages")
CHECK_SECONDS = 15.0
READY = "blokir: plugin ready"


@dataclass(frozen=True, slots=True)
class PluginSetup:
    script: Path
    config: Path | None
    pythonpath: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def environment(self) -> dict[str, str]:
        env = {}
        if self.config is not None:
            env[module.CONFIG_ENV] = str(self.config)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        return env

    def conf_lines(self, validator: bool = True) -> str:
        modules = "python validator iterator" if validator else "python iterator"
        return (
            "server:\n"
            f'    module-config: "{modules}"\n'
            "python:\n"
            f'    python-script: "{self.script}"\n'
        )

    def render(self) -> str:
        lines = [f"# blokir {resolver.__version__}: plugin mode for Unbound", "# unbound.conf:"]
        lines.append(self.conf_lines().rstrip("\n"))
        lines.append("")
        lines.append("# Unbound's environment (/etc/default/unbound, or a systemd drop-in):")
        lines.extend(f"{key}={value}" for key, value in self.environment().items())
        lines.extend(f"# note: {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


def plugin_setup(config: Path | None, unbound: str = "unbound") -> PluginSetup:
    script = Path(module.__file__).resolve()
    root = script.parents[2]
    paths: list[str] = []
    for key in ("purelib", "platlib"):
        path = str(Path(sysconfig.get_paths()[key]).resolve())
        if Path(path) != root and path not in paths:
            paths.append(path)  # the dependencies are not next to the package
    if (DEBIAN_UNBOUNDMODULE / "unboundmodule.py").exists():
        paths.append(str(DEBIAN_UNBOUNDMODULE))
    notes = []
    embedded = embedded_python(unbound)
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    if embedded is None:
        notes.append(f"could not tell which libpython {unbound} links; it must be Python {mine}")
    elif embedded != mine:
        notes.append(
            f"{unbound} embeds Python {embedded} but blokir is installed for Python {mine}: "
            f"install blokir with python{embedded} for the plugin"
        )
    if not (DEBIAN_UNBOUNDMODULE / "unboundmodule.py").exists():
        notes.append("unboundmodule.py not found: install python3-unbound")
    resolved = config.resolve() if config is not None else None
    return PluginSetup(script, resolved, tuple(paths), tuple(notes))


def embedded_python(unbound: str = "unbound") -> str | None:
    """The major.minor of the libpython the unbound binary links (ldd), or None."""
    binary = shutil.which(unbound) or shutil.which(unbound, path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        return None
    try:
        out = subprocess.run(
            ["ldd", binary], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"libpython(\d+\.\d+)", out)
    return found.group(1) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def check(setup: PluginSetup, unbound: str = "unbound") -> tuple[bool, str]:
    """Start a real Unbound with the plugin on a throwaway loopback port, wait until it has
    loaded the module (or failed to), stop it. (ok, what happened)."""
    binary = shutil.which(unbound) or shutil.which(unbound, path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        return False, f"{unbound}: not found"
    with tempfile.TemporaryDirectory(prefix="blokir-unbound-check-") as tmp:
        conf = Path(tmp) / "unbound.conf"
        log = Path(tmp) / "unbound.log"
        conf.write_text(
            "server:\n"
            f"    interface: 127.0.0.1@{_free_port()}\n"
            '    username: ""\n    chroot: ""\n    pidfile: ""\n'
            f'    directory: "{tmp}"\n    use-syslog: no\n    verbosity: 1\n'
            f'    logfile: "{log}"\n' + setup.conf_lines(validator=False).removeprefix("server:\n")
        )
        env = {**os.environ, **setup.environment()}
        proc = subprocess.Popen(
            [binary, "-d", "-c", str(conf)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + CHECK_SECONDS
        text = ""
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                text = log.read_text() if log.exists() else ""
                if "start of service" in text or "fatal error" in text:
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        text = (log.read_text() if log.exists() else "") + (err or "")
    ready = [line for line in text.splitlines() if READY in line]
    if ready and "start of service" in text:
        return True, ready[-1].split("info: ", 1)[-1]
    problems = [
        line
        for line in text.splitlines()
        if "error" in line.lower() or "Error" in line or line.startswith(("  ", "Traceback"))
    ]
    return False, "\n".join(problems[-20:]) or text[-2000:] or "unbound did not start"
