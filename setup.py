"""The one build step pyproject.toml cannot declare: compiling the query hot path with mypyc.

Everything else about the package is in pyproject.toml. `build_ext` compiles the modules every
query passes through (HOT_MODULES) into one shared library beside their sources, then writes
resolver/native.json: a digest of every source the compiler read. `resolver.native` compares
that digest at import and runs the plain sources when they changed since the build, so an
edited checkout never runs a stale compiled copy (README, "Compiled hot path").

Measured on the project's 2-core VM (bench/results/2026-11-29-033623, dnsperf, five
alternating runs each): the compiled worker answered 1.19x the queries/s of the same code run
from its sources. A machine without a C compiler or Python headers still installs: the build
falls back to plain Python and `blokir --version` says why. BLOKIR_COMPILE=0 skips the compile.

The same command builds resolver/_udpbatch.c, the worker's recvmmsg/sendmmsg batches
(docs/performance.md), on its own terms: its failure leaves the mypyc build alone and the worker
on its plain recvfrom/sendto path, and resolver/udpbatch.json says why for `blokir --version`.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "resolver"))
# native.py is plain Python with no imports from the package: the digest the build writes and the
# one the package checks at import come from the same function.
import native  # noqa: E402

sys.path.pop(0)

# The modules a UDP query passes through on the blocked, cached and memo paths (the worker's UDP
# callback and the pipeline's handle) and the ones they call per query, as paths under resolver/
# in dotted form.
HOT_MODULES = (
    "dns.constants",
    "dns.names",
    "dns.query",
    "dns.message",
    "dns.response",
    "dns.answers",
    "cache",
    "inflight",
    "index",
    "pipeline",
    "worker",
    # Not on the query path but beside it: the query log writer's per-record dnstap encoding
    # (the writer process shares the cores with the workers; docs/querylog.md).
    "querylog.encoder",
)
UDP_BATCH = "resolver._udpbatch"
UDP_BATCH_SOURCE = ROOT / "resolver" / native.UDP_BATCH_SOURCE
# The setup.py commands that install or package code (PEP 517 backends run one per hook).
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


_MYPYC_EXTENSIONS: list[Extension] = []


class CompileHotPath(build_ext):
    """build_ext whose extensions mypyc makes when the command is set up, not when setup.py is
    read: pip reads setup.py several times per install (metadata, then the build), and
    generating the C code takes about ten seconds. Any failure (no mypy, a type error, no C
    compiler or Python headers) installs pure Python and says why."""

    fallback: str | None = None
    udp_fallback: str | None = None  # why resolver._udpbatch was not built

    def finalize_options(self) -> None:
        self.distribution.ext_modules = []
        if not BUILDING & set(self.distribution.commands):
            pass  # metadata only (dist_info, egg_info, sdist): no C code needed
        elif os.environ.get("BLOKIR_COMPILE", "1") == "0":
            self.fallback = self.udp_fallback = "BLOKIR_COMPILE=0"
        else:
            try:
                from mypyc.build import mypycify

                self.distribution.ext_modules = _MYPYC_EXTENSIONS or mypycify(
                    [
                        # Not the project's strict [tool.mypy] (scripts/test runs that one):
                        # the build environment has none of the runtime dependencies, so their
                        # types are Any here (the hot path calls none of them per query but
                        # xxhash, which has no type information anyway), and strict mode
                        # would reject what that makes of the code (a class that subclasses
                        # prometheus_client's Collector). Type errors still stop the compile.
                        "--config-file=",
                        "--ignore-missing-imports",
                        *(f"resolver/{name.replace('.', '/')}.py" for name in HOT_MODULES),
                    ],
                    group_name=native.GROUP,
                    opt_level="3",
                    debug_level="0",
                )
                # editable_wheel sets build_ext up twice: generate the C code once.
                _MYPYC_EXTENSIONS[:] = self.distribution.ext_modules
            except (Exception, SystemExit) as error:  # any failure: pure Python
                self.fallback = f"mypyc: {type(error).__name__}: {error}"
            # First in the list: built before the mypyc group, whose failure ends the command.
            udp = Extension(UDP_BATCH, [str(UDP_BATCH_SOURCE.relative_to(ROOT))])
            self.distribution.ext_modules = [udp, *self.distribution.ext_modules]
            self.udp_fallback = "not attempted"  # until build_extension says otherwise
        super().finalize_options()

    def build_extensions(self) -> None:
        super().build_extensions()
        if self.udp_fallback is not None:  # nothing for the editable install to copy
            self.extensions = [e for e in self.extensions if e.name != UDP_BATCH]

    def build_extension(self, ext: Extension) -> None:
        if ext.name != UDP_BATCH:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
            self.udp_fallback = None
        except (Exception, SystemExit) as error:  # any failure: the plain UDP path
            self.udp_fallback = f"C build: {type(error).__name__}: {error}"

    def run(self) -> None:
        output = Path(self.get_ext_fullpath(native.GROUP)).parent  # resolver/
        # A build that fails half-way must not leave the last build's manifest vouching for it.
        (output / native.MANIFEST).unlink(missing_ok=True)
        (output / native.UDP_BATCH_STATUS).unlink(missing_ok=True)
        if self.fallback is not None:  # only the UDP extension, if anything, is left to build
            self.extensions = [e for e in self.extensions if e.name == UDP_BATCH]
        if self.extensions:
            try:
                super().run()
            except (Exception, SystemExit) as error:  # any failure: pure Python
                self.fallback = self.fallback or f"C build: {type(error).__name__}: {error}"
        if self.udp_fallback is not None:
            print(f"blokir: not building {UDP_BATCH} ({self.udp_fallback})", file=sys.stderr)
            # An earlier build's library must not be imported in its place.
            (output / Path(self.get_ext_fullpath(UDP_BATCH)).name).unlink(missing_ok=True)
        if BUILDING & set(self.distribution.commands):
            native.write_udp_batch_status(output, UDP_BATCH_SOURCE, self.udp_fallback)
        if self.fallback is not None:
            print(
                f"blokir: not compiling the hot path ({self.fallback}); installing pure Python",
                file=sys.stderr,
            )
            # pip shows none of this without -v: `blokir --version` will say why instead.
            native.write_fallback(output, self.fallback)
            return
        _remove_orphans(output)
        native.write_manifest(output, ROOT / "resolver", [f"resolver.{m}" for m in HOT_MODULES])
        print(f"blokir: compiled {', '.join(HOT_MODULES)} with mypyc", file=sys.stderr)


def _remove_orphans(output: Path) -> None:
    """Delete extension modules an earlier build left for sources that are gone (a module moved
    or renamed): Python would still import the stale compiled copy under the old name. The
    group library (_native__mypyc) has no source of its own and stays."""
    for path in output.rglob("*"):
        if not path.name.endswith(tuple(EXTENSION_SUFFIXES)):
            continue
        stem = path.name.partition(".")[0]  # module names hold no dot; the suffix may hold many
        source = ROOT / "resolver" / path.parent.relative_to(output) / f"{stem}.py"
        if not stem.startswith("_") and not source.exists():
            path.unlink()


setup(
    # A placeholder so setuptools runs build_ext at all; CompileHotPath replaces it.
    ext_modules=[Extension("resolver._placeholder", sources=[])],
    cmdclass={"build_ext": CompileHotPath},
)
