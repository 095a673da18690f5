"""The plugin's decision, reload and metrics without Unbound (tests/integration/
test_plugin_unbound.py runs them inside a real one)."""

from __future__ import annotations

import os
from pathlib import Path

from resolver.cli import main as blokir
from resolver.config import load_config
from resolver.dns.names import encode_name
from resolver.plugins.engine import PluginEngine, plugin_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _setup(tmp: Path, names: str) -> tuple[Path, PluginEngine, Clock]:
    (tmp / "list.txt").write_text(names)
    (tmp / "allow.txt").write_text("ok.bad.example\n")
    config = tmp / "blokir.toml"
    config.write_text(
        '[blocking]\nindex_path = "i.blkx"\nlanding_ipv4 = "192.0.2.7"\nttl = 42\n'
        '[metrics]\ntextfile = "m.prom"\n'
        '[[allowlists]]\nname = "allow"\npath = "allow.txt"\n'
        '[[lists]]\nname = "reg"\npath = "list.txt"\ncategory = "gambling"\n'
        'action = "landing"\nede = "censored"\n'
    )
    assert blokir(["compile", "-c", str(config)]) == 0
    clock = Clock()
    return config, PluginEngine(plugin_settings(load_config(config)), clock), clock


def test_decides_like_serve(tmp_path: Path) -> None:
    _, engine, _ = _setup(tmp_path, "bad.example\n")
    reply = engine.decide(encode_name("WWW.Bad.Example."), 1)
    assert reply is not None and reply.rcode == 0
    assert reply.answer == ("42 IN A 192.0.2.7",) and not reply.authority
    assert reply.ede[:2] == b"\x00\x10" and b"list reg" in reply.ede  # 16 Censored
    other = engine.decide(encode_name("bad.example."), 16)  # TXT: NODATA with the SOA
    assert other is not None and not other.answer and other.authority[0].startswith("42 IN SOA")
    assert engine.decide(encode_name("ok.bad.example."), 1) is None  # the allowlist wins
    assert engine.decide(encode_name("good.example."), 1) is None
    assert engine.decide(b"\x0bbad.example\x00", 1) is None  # one label holding a dot
    chain = [encode_name("cdn.good.example."), encode_name("x.bad.example.")]
    assert engine.decide_chain(chain, 1) == reply


def test_reload_swaps_and_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    config, engine, clock = _setup(tmp_path, "bad.example\n")
    (tmp_path / "list.txt").write_text("bad.example\nnew.example\n")
    assert blokir(["compile", "-c", str(config)]) == 0
    name = encode_name("new.example.")
    assert engine.decide(name, 1) is None  # checked at most once a second
    clock.now += 1.5
    assert engine.decide(name, 1) is not None
    assert engine.reloads == {"applied": 1, "rejected": 0}
    index = tmp_path / "i.blkx"
    data = index.read_bytes()
    incoming = tmp_path / ".incoming"
    incoming.write_bytes(data[: len(data) // 2])
    os.replace(incoming, index)
    clock.now += 1.5
    assert engine.decide(name, 1) is not None  # the old index keeps serving
    assert engine.reloads == {"applied": 1, "rejected": 1}
    clock.now += 1.5
    engine.decide(name, 1)
    assert engine.reloads["rejected"] == 1  # the same bad file is not tried again


def test_metrics_textfile(tmp_path: Path) -> None:
    _, engine, clock = _setup(tmp_path, "bad.example\n")
    reply = engine.decide(encode_name("bad.example."), 1)
    assert reply is not None
    engine.count(reply)
    engine.count(reply)
    clock.now += 30
    engine.decide(encode_name("good.example."), 1)
    text = (tmp_path / "m.prom").read_text()
    assert 'blokir_blocked_total{action="landing",category="gambling",list="reg"} 2.0' in text
    assert "blokir_index_entries 2.0" in text
