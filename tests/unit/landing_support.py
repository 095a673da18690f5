"""A config, lists and a compiled index for the landing page tests."""

from __future__ import annotations

from pathlib import Path

from resolver.compile import compile_lists, write_index
from resolver.config import Config, parse_config

BLOCKED = "judi-contoh.example"
REGULATOR_BLOCKED = "pinjol-palsu.example"
EXCEPTION = "berita.judi-contoh.example"
OWN_NAME = "blokir.isp.example"


def landing_config(tmp: Path, landing_extra: str = "") -> Config:
    """Two block lists (one with its own legal texts), an allowlist exception, an index."""
    (tmp / "gambling.txt").write_text(f"{BLOCKED}\n")
    (tmp / "regulator.txt").write_text(f"{REGULATOR_BLOCKED}\n")
    (tmp / "allow.txt").write_text(f"{EXCEPTION}\n")
    text = f"""
[blocking]
index_path = "index.blkx"
organisation = "Contoh ISP & Partners"
contact = "mailto:abuse@isp.example"
justification = "Terms of service section 4"
[landing]
listen = ["127.0.0.1:0"]
server_names = ["{OWN_NAME}"]
appeal_url = "https://isp.example/appeal?a=1&b=2"
{landing_extra}
[[allowlists]]
name = "exceptions"
path = "allow.txt"
[[lists]]
name = "trustpositif"
path = "gambling.txt"
category = "gambling"
[[lists]]
name = "ojk"
path = "regulator.txt"
category = "illegal-lending"
justification = "POJK 10/2022"
organisation = "Otoritas Jasa Keuangan"
appeal_url = "https://ojk.example/aduan"
"""
    (tmp / "blokir.toml").write_text(text)
    config = parse_config(text, tmp / "blokir.toml")
    compile_index(config)
    return config


def compile_index(config: Config) -> None:
    write_index(compile_lists(config.list_specs()), config.blocking.index_path)
