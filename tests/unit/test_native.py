"""The compiled hot path's guard (resolver/native.py): a checkout whose sources changed after the
compiled build must run the sources, never the stale compiled copy."""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import resolver
from resolver import native

PACKAGE = Path(resolver.__file__).resolve().parent
COMPILED = native.decide(PACKAGE, {})[0].compiled


def fake_package(tmp_path: Path) -> Path:
    package = tmp_path / "resolver"
    package.mkdir()
    (package / "wire.py").write_text("X = 1\n")
    (package / "server.py").write_text("Y = 2\n")
    return package


def test_no_manifest_means_pure_python(tmp_path: Path) -> None:
    mode, from_source = native.decide(fake_package(tmp_path), {})
    assert mode == native.Mode(False, "pure Python (not compiled)")
    assert from_source == []


def test_a_build_that_could_not_compile_says_why(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    native.write_fallback(package, "C build: CompileError: command 'gcc' failed")
    mode, from_source = native.decide(package, {})
    assert mode == native.Mode(
        False,
        "pure Python (the install could not compile it: C build: CompileError: "
        "command 'gcc' failed)",
    )
    assert from_source == []


def test_a_manifest_matching_the_sources_means_compiled(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    native.write_manifest(package, package, ["resolver.wire", "resolver.server"])
    assert native.decide(package, {}) == (native.Mode(True, "compiled with mypyc"), [])


def test_any_source_changed_after_the_build_means_all_from_source(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    native.write_manifest(package, package, ["resolver.wire", "resolver.server"])
    # A module that was not compiled counts too: the compiled code was typed against it.
    (package / "config.py").write_text("Z = 3\n")
    mode, from_source = native.decide(package, {})
    assert not mode.compiled and "sources changed" in mode.why
    assert from_source == ["resolver.wire", "resolver.server"]


def test_a_subpackage_source_counts_too(tmp_path: Path) -> None:
    # resolver/config/ is a package: the compiled server is typed against its modules.
    package = fake_package(tmp_path)
    (package / "config").mkdir()
    (package / "config" / "schema.py").write_text("W = 4\n")
    native.write_manifest(package, package, ["resolver.wire", "resolver.server"])
    assert native.decide(package, {})[0].compiled
    (package / "config" / "schema.py").write_text("W = 5\n")
    mode, from_source = native.decide(package, {})
    assert not mode.compiled and "sources changed" in mode.why
    assert from_source == ["resolver.wire", "resolver.server"]


def test_the_environment_can_ask_for_the_sources(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    native.write_manifest(package, package, ["resolver.wire"])
    mode, from_source = native.decide(package, {native.PURE_ENV: "1"})
    assert not mode.compiled and native.PURE_ENV in mode.why
    assert from_source == ["resolver.wire"]
    assert native.decide(package, {native.PURE_ENV: "0"})[0].compiled


def test_a_broken_manifest_loads_every_extension_module_from_source(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    (package / native.MANIFEST).write_text("{not json")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"wire{suffix}").write_bytes(b"")  # a compiled copy beside wire.py
    (package / f"_native__mypyc{suffix}").write_bytes(b"")  # the shared library: no source
    mode, from_source = native.decide(package, {})
    assert not mode.compiled and "unreadable" in mode.why
    assert from_source == ["resolver.wire"]


def test_the_source_finder_answers_only_for_its_modules(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    finder = native.SourceFirst(package, ["resolver.wire", "resolver.dns.query"])
    spec = finder.find_spec("resolver.wire", None)
    assert spec is not None and spec.origin == str(package / "wire.py")
    assert finder.find_spec("resolver.server", None) is None
    # A module of a subpackage loads from its own directory, not from the package's.
    spec = finder.find_spec("resolver.dns.query", None)
    assert spec is not None and spec.origin == str(package / "dns" / "query.py")


def test_compiled_modules_of_subpackages_count_too(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    (package / "dns").mkdir()
    (package / "dns" / "query.py").write_text("Q = 1\n")
    (package / native.MANIFEST).write_text("{not json")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / "dns" / f"query{suffix}").write_bytes(b"")
    (package / f"wire{suffix}").write_bytes(b"")
    assert native.decide(package, {})[1] == ["resolver.dns.query", "resolver.wire"]


def where_wire_loads_from(package_parent: Path, env: dict[str, str] | None = None) -> str:
    """Where a copy of the package loads its query parser from (a compiled module of the
    resolver.dns subpackage)."""
    code = "import resolver.dns.query as w; print(w.__spec__.origin)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=package_parent,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not COMPILED, reason="this install has no compiled hot path to shadow")
def test_an_edited_copy_of_a_compiled_package_runs_its_sources(tmp_path: Path) -> None:
    copy = tmp_path / "resolver"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert where_wire_loads_from(tmp_path).endswith(".so")  # as built: compiled
    source = copy / "dns" / "query.py"
    assert where_wire_loads_from(tmp_path, {native.PURE_ENV: "1"}) == str(source)
    source.write_text(source.read_text() + "\n# edited after the build\n")
    assert where_wire_loads_from(tmp_path) == str(source)
    manifest = json.loads((copy / native.MANIFEST).read_text())
    assert "resolver.dns.query" in manifest["modules"]
