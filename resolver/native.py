"""Whether this process runs the compiled hot path or the plain sources, and why.

setup.py compiles the query path's modules with mypyc into one shared library beside their
sources and then writes native.json: the modules it compiled and a digest of every source file
of the package (the compiler reads them all to type the compiled code). Python imports an
extension module before a source file of the same name, so a source edited after the build
would be shadowed by its stale compiled copy. `select` (run by the package's __init__, before
any other module of the package loads) compares the digest with the sources on disk; when they
differ, when there is no manifest, or when BLOKIR_PURE_PYTHON is set, it puts a finder first on
sys.meta_path that loads those modules from their sources. All or nothing: compiled modules call
each other directly, not through module attributes, so a mix would run the stale code anyway.

No imports from the package: setup.py loads this file on its own to write the manifest.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

GROUP = "resolver._native"  # the compiled modules' shared library (mypyc's group name)
MANIFEST = "native.json"
PURE_ENV = "BLOKIR_PURE_PYTHON"
# The C extensions beside the compiled hot path, each optional and with a status file of its
# own, since any build may fail without the others.


class CExtension(NamedTuple):
    module: str  # the import name
    source: str  # the C file, relative to the package directory
    status: str  # the build's status file, in the package directory
    env: str  # `ENV=0` rules it out at run time
    on: str  # what `blokir --version` says when it runs
    off: str  # ... and when it does not


UDP_BATCH = CExtension(
    "resolver._udpbatch",
    "_udpbatch.c",
    "udpbatch.json",
    "BLOKIR_UDP_BATCH",
    "batched recvmmsg/sendmmsg",
    "plain recvfrom/sendto",
)
DNSTAP = CExtension(
    "resolver.querylog._dnstap",
    "querylog/_dnstap.c",
    "dnstap.json",
    "BLOKIR_DNSTAP_C",
    "dnstap encoded in C in the worker",
    "dnstap encoded in Python in the worker",
)
C_EXTENSIONS = (UDP_BATCH, DNSTAP)


class Mode(NamedTuple):
    compiled: bool
    why: str  # a phrase for `blokir --version` and the start-up log


def source_digest(package_dir: Path) -> str:
    """sha256 over the relative path and bytes of every .py file under `package_dir`."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_manifest(output_dir: Path, package_dir: Path, modules: Sequence[str]) -> None:
    """Written by the build after the compiled modules are in `output_dir`."""
    manifest = {"modules": list(modules), "sources": source_digest(package_dir)}
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def write_fallback(output_dir: Path, why: str) -> None:
    """Written by the build when it could not compile: the reason, for `blokir --version`."""
    manifest = {"modules": [], "fallback": why[:500]}
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_c_status(output_dir: Path, source: Path, fallback: str | None, status: str) -> None:
    """Written by the build: the digest of the C source it built, or why it did not build."""
    record = {"source": file_digest(source)} if fallback is None else {"fallback": fallback[:500]}
    (output_dir / status).write_text(json.dumps(record, indent=1) + "\n")


def decide_c_extension(
    extension: CExtension, package_dir: Path, environ: Mapping[str, str]
) -> Mode:
    """Whether `extension` may be used; `compiled` means yes. The caller still imports it (and
    falls back when that fails)."""
    plain = extension.off
    if environ.get(extension.env, "1") == "0":
        return Mode(False, f"{plain} ({extension.env}=0)")
    status_path = package_dir / extension.status
    try:
        status = json.loads(status_path.read_text())
        if "fallback" in status:
            return Mode(False, f"{plain} (the install could not build it: {status['fallback']})")
        built_from = str(status["source"])
    except FileNotFoundError:
        return Mode(False, f"{plain} (not built)")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return Mode(False, f"{plain} ({status_path} unreadable: {error})")
    source = package_dir / extension.source
    # An installed wheel has no C source to compare with; a checkout edited since the build
    # must not run the stale library.
    if source.is_file() and file_digest(source) != built_from:
        return Mode(False, f"{plain} ({extension.source} changed since the build; reinstall)")
    return Mode(True, extension.on)


def dnstap_mode(environ: Mapping[str, str]) -> Mode:
    """What the query log's encoder will be, without importing it (it loads the protobuf
    library): for `blokir --version` and the start-up log. resolver/querylog/encoder.py decides
    the same way and also falls back when the import fails."""
    return decide_c_extension(DNSTAP, Path(__file__).resolve().parent, environ)


def decide_udp_batch(package_dir: Path, environ: Mapping[str, str]) -> Mode:
    """Whether the worker may use the recvmmsg/sendmmsg extension (resolver/udpbatch.py)."""
    return decide_c_extension(UDP_BATCH, package_dir, environ)


def _compiled_modules(package_dir: Path) -> list[str]:
    """Modules of the package (subpackages included) with both an extension file and a source
    file."""
    found = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in package_dir.rglob(f"*{suffix}"):
            source = path.with_name(path.name[: -len(suffix)] + ".py")
            if source.is_file():
                parts = source.relative_to(package_dir).with_suffix("").parts
                found.append(".".join(("resolver", *parts)))
    return sorted(found)


def decide(package_dir: Path, environ: Mapping[str, str]) -> tuple[Mode, list[str]]:
    """The mode, and the modules to load from source (empty when compiled or nothing was)."""
    manifest_path = package_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        modules = [str(name) for name in manifest["modules"]]
        if "fallback" in manifest:
            why = f"pure Python (the install could not compile it: {manifest['fallback']})"
            return Mode(False, why), _compiled_modules(package_dir)
        built_from = str(manifest["sources"])
    except FileNotFoundError:
        return Mode(False, "pure Python (not compiled)"), _compiled_modules(package_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        why = f"pure Python ({manifest_path} unreadable: {error})"
        return Mode(False, why), _compiled_modules(package_dir)
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return Mode(False, f"pure Python ({PURE_ENV} is set)"), modules
    if source_digest(package_dir) != built_from:
        return (
            Mode(False, "pure Python (sources changed since the compiled build; reinstall)"),
            modules,
        )
    return Mode(True, "compiled with mypyc"), []


class SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the named modules of the package from their .py files, past any extension module."""

    def __init__(self, package_dir: Path, modules: Iterable[str]) -> None:
        self.package_dir = package_dir
        self.modules = frozenset(modules)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        # resolver.dns.query -> <package_dir>/dns/query.py
        source = self.package_dir.joinpath(*fullname.split(".")[1:]).with_suffix(".py")
        return importlib.util.spec_from_file_location(fullname, source)


def select(package_dir: Path) -> Mode:
    mode, from_source = decide(package_dir, os.environ)
    if from_source and not any(isinstance(f, SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst(package_dir, from_source))
    return mode
