"""A `Resolver` over a small compiled index, built the way the unit tests of the query pipeline
need it: one blocklist, loopback allowed, an upstream that is never contacted (`handle` returns
a Query for a miss; the tests do not call `forward` unless they stub the pool)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resolver.compile import compile_lists, write_index
from resolver.config import parse_config
from resolver.index import open_index
from resolver.pipeline import Resolver


def make_resolver(
    directory: Path,
    blocked: Sequence[str] = ("judi-contoh.example",),
    *,
    server: str = 'allow = ["127.0.0.0/8"]',
    upstream: str = "",
    cache: str = "",
    servers: str = '["127.0.0.1:9"]',
) -> Resolver:
    """`server`, `upstream` and `cache` are TOML lines for those sections; `servers` is the
    `[upstream] servers` array."""
    (directory / "block.txt").write_text("".join(f"{name}\n" for name in blocked))
    config = parse_config(
        f"""
[server]
{server}
[upstream]
servers = {servers}
{upstream}
[cache]
{cache}
[blocking]
landing_ipv4 = "192.0.2.10"
[[lists]]
name = "t"
path = "block.txt"
""",
        directory / "blokir.toml",
    )
    write_index(compile_lists(config.list_specs()), directory / "i.blkx")
    return Resolver(config, open_index(directory / "i.blkx"))
