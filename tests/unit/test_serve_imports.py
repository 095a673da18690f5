"""`blokir serve` runs without numpy and dnspython (about 25 MiB in each of its processes): they
are for compiling lists, which happens in a build process of its own (`python -m resolver.build`).

A fresh interpreter imports what the supervisor and its workers import and does what they do at
start and while serving (the reloader's first load of a current index, a reload's header check,
mapping the index, answering a listed name), then reports which of the heavy packages it loaded.
A top-level `import numpy` anywhere on that path fails this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import resolver
from resolver.compile import compile_lists, write_index
from resolver.config import load_config
from tests.unit.test_reload import make_config

HEAVY = ("numpy", "dns")

SERVE_PATH = """
import json, struct, sys
import resolver.cli, resolver.supervisor, resolver.worker, resolver.reload
from resolver.config import load_config
from resolver.index import open_index
from resolver.reload import UNCHANGED, Reloader
from resolver.pipeline import Resolver

config_path, name = sys.argv[1], sys.argv[2]
config = load_config(config_path)
reloader = Reloader(config, lambda: load_config(config_path))
first = reloader.load()
again = reloader.reload("test", download_all=False)
resolver = Resolver(config, open_index(reloader.index_path))
qname = b"".join(bytes([len(label)]) + label for label in name.encode().split(b".")) + b"\\0"
query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
answer = resolver.handle(query, "127.0.0.1")[0]
print(json.dumps({
    "results": [first.result, again.result],
    "unchanged": UNCHANGED,
    "answered": isinstance(answer, bytes),
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


def test_serving_imports_neither_numpy_nor_dnspython(tmp_path: Path) -> None:
    (tmp_path / "main.txt").write_text("listed.example\nother.example\n")
    config_path = make_config(tmp_path)  # index.blkx and main.txt beside it
    # Compiled here, as the build process would: the serving process must find it current.
    write_index(compile_lists(load_config(config_path).list_specs()), tmp_path / "index.blkx")
    package_root = str(Path(resolver.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}
    run = subprocess.run(
        [sys.executable, "-c", SERVE_PATH, str(config_path), "listed.example"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    # The index was current, so nothing was built (a build would run in another process anyway,
    # but then the check would not cover the reloader's in-process steps).
    assert report["results"] == [report["unchanged"]] * 2
    assert report["answered"], "a listed name should be answered without going upstream"
    assert "resolver" in report["modules"]
    loaded = [name for name in HEAVY if name in report["modules"]]
    assert not loaded, f"the serving path imported {loaded}"
