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

The same command builds the C extensions (resolver/native.py C_EXTENSIONS: resolver/_udpbatch.c,
the worker's recvmmsg/sendmmsg batches, docs/performance.md; resolver/querylog/_dnstap.c, the
query log's encoder, docs/querylog.md), each on its own terms: a failure leaves the mypyc build
and the other extension alone, the worker takes the plain path, and the extension's status
file (resolver/udpbatch.json, resolver/dnstap.json) says why for `blokir --version`.
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
    # The query log's encoder where resolver/querylog/_dnstap.c was not built (docs/querylog.md).
    "querylog.encoder",
)
C_EXTENSIONS = {ext.module: ext for ext in native.C_EXTENSIONS}
# The setup.py commands that install or package code (PEP 517 backends run one per hook).
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


_MYPYC_EXTENSIONS: list[Extension] = []


class CompileHotPath(build_ext):
    """build_ext whose extensions mypyc makes when the command is set up, not when setup.py is
    read: pip reads setup.py several times per install (metadata, then the build), and
    generating the C code takes about ten seconds. Any failure (no mypy, a type error, no C
    compiler or Python headers) installs pure Python and says why."""

    fallback: str | None = None
    c_fallbacks: dict[str, str]  # why each C extension (by module name) was not built

    def finalize_options(self) -> None:
        self.distribution.ext_modules = []
        self.c_fallbacks = {}
        if not BUILDING & set(self.distribution.commands):
            pass  # metadata only (dist_info, egg_info, sdist): no C code needed
        elif os.environ.get("BLOKIR_COMPILE", "1") == "0":
            self.fallback = "BLOKIR_COMPILE=0"
            self.c_fallbacks = dict.fromkeys(C_EXTENSIONS, "BLOKIR_COMPILE=0")
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
            c_extensions = [Extension(m, [f"resolver/{e.source}"]) for m, e in C_EXTENSIONS.items()]
            self.distribution.ext_modules = [*c_extensions, *self.distribution.ext_modules]
            # Until build_extension says otherwise.
            self.c_fallbacks = dict.fromkeys(C_EXTENSIONS, "not attempted")
        super().finalize_options()

    def build_extensions(self) -> None:
        super().build_extensions()
        # Nothing for the editable install to copy of what did not build.
        self.extensions = [e for e in self.extensions if e.name not in self.c_fallbacks]

    def build_extension(self, ext: Extension) -> None:
        if ext.name not in C_EXTENSIONS:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
            self.c_fallbacks.pop(ext.name, None)
        except (Exception, SystemExit) as error:  # any failure: that extension's plain path
            self.c_fallbacks[ext.name] = f"C build: {type(error).__name__}: {error}"

    def run(self) -> None:
        output = Path(self.get_ext_fullpath(native.GROUP)).parent  # resolver/
        # A build that fails half-way must not leave the last build's manifest vouching for it.
        (output / native.MANIFEST).unlink(missing_ok=True)
        for extension in C_EXTENSIONS.values():
            (output / extension.status).unlink(missing_ok=True)
        if self.fallback is not None:  # only the C extensions, if anything, are left to build
            self.extensions = [e for e in self.extensions if e.name in C_EXTENSIONS]
        if self.extensions:
            try:
                super().run()
            except (Exception, SystemExit) as error:  # any failure: pure Python
                self.fallback = self.fallback or f"C build: {type(error).__name__}: {error}"
        if BUILDING & set(self.distribution.commands):  # metadata only: no status to write
            self._record_c_extensions(output)
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

    def _record_c_extensions(self, output: Path) -> None:
        """Each C extension's status file; an earlier build's library of one that did not build
        is removed, so that it is not imported in its place."""
        for name, extension in C_EXTENSIONS.items():
            why = self.c_fallbacks.get(name)
            if why is not None:
                print(f"blokir: not building {name} ({why})", file=sys.stderr)
                subpackage = output.joinpath(*name.split(".")[1:-1])
                (subpackage / Path(self.get_ext_fullpath(name)).name).unlink(missing_ok=True)
            source = ROOT / "resolver" / extension.source
            native.write_c_status(output, source, why, extension.status)


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
