"""docs/configuration.md, written from the schema: `python -m resolver.config.docs`.

scripts/gen-config-docs runs this with the project's venv. `--check` writes nothing and exits 1
when the file differs from what the schema gives; tests/unit/test_config_docs.py does the same
in memory, so a key added or changed without regenerating the file fails the unit tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TypeGuard

from resolver.config.addresses import format_address
from resolver.config.schema import (
    FRACTION,
    SCHEMA,
    SECONDS,
    SECTIONS,
    KeySpec,
)
from resolver.envconfig import ENV_VARIABLES

__all__ = ["DOCS_PATH", "EXAMPLE", "REGENERATE", "render"]

DOCS_PATH = Path(__file__).resolve().parent.parent.parent / "docs" / "configuration.md"
REGENERATE = "scripts/gen-config-docs"

# A config for a small ISP deployment; tests parse it, so it stays valid as the schema changes.
EXAMPLE = """\
[server]
listen = ["0.0.0.0:53", "[::]:53"]
workers = 4
allow = ["100.64.0.0/10", "2001:db8::/32"]
user = "blokir"

[upstream]
servers = ["192.0.2.53", "[2001:db8::53]:53"]

[blocking]
landing_ipv4 = "192.0.2.10"
landing_ipv6 = "2001:db8::10"
contact = "mailto:abuse@isp.example"
organisation = "Example ISP"

[cache]
serve_stale = true

[[allowlists]]
name = "exceptions"
path = "allow.txt"

[[lists]]
name = "regulator"
path = "https://lists.isp.example/domains.txt"
category = "negative-content"
ede = "censored"

[[lists]]
name = "ads"
path = "ads.hosts"
action = "nxdomain"
"""

_INTRO = """\
blokir reads one TOML file (`blokir <command> --config FILE`; without it, the repository's
`config/blokir.toml`). Every section except the lists is optional, and so is every key with a
default, so a file holding only `[[lists]]` is a complete config. Relative paths are relative to
the directory of the config file, not the working directory. Unknown keys and sections are
errors. Every error names the file, line and key, for example
`blokir.toml:12 lists[2].action: 'nxdomian' is not one of landing, nxdomain, nodata, refused`
(array indices count from 0).

Seconds are numbers greater than 0 (integers are accepted); choices are matched in any case."""


def render() -> str:
    """The whole of docs/configuration.md."""
    out = [
        "# Configuration",
        "",
        f"<!-- Written by {REGENERATE} from resolver/config/schema.py; do not edit. -->",
        "",
        _INTRO,
        "",
        "## Example",
        "",
        "```toml",
        EXAMPLE.rstrip("\n"),
        "```",
    ]
    for name, section in SECTIONS.items():
        out += ["", f"## {section.title}", "", section.doc, ""]
        out += ["| Key | Type | Default | Allowed | Meaning |", "|---|---|---|---|---|"]
        for spec in SCHEMA[name].values():
            setting = spec.setting
            cells = [f"`{spec.name}`", setting.type, _default(spec), _allowed(spec), setting.doc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += [
        "",
        "## Environment variables",
        "",
        "These override the file's setting when set to something other than blanks "
        '(README, "Settings from the environment").',
        "",
        "| Variable | Setting |",
        "|---|---|",
    ]
    for variable, key in ENV_VARIABLES.items():
        table, _, name = key.partition(".")
        out.append(f"| `{variable}` | `[{table}] {name}` |")
    return "\n".join(out) + "\n"


def _default(spec: KeySpec) -> str:
    """The default as one would write it in the file, unless the schema words it."""
    if spec.setting.shown_default:
        return spec.setting.shown_default
    if spec.required:
        return "required"
    return _toml(spec.default, spec.name)


def _toml(value: object, name: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"`{value}`"
    if isinstance(value, (str, StrEnum)):
        return f"`{json.dumps(str(value))}`"
    if isinstance(value, Path):
        return f"`{json.dumps(str(value))}`"
    if _is_address(value):
        return f'`"{format_address(value)}"`'
    if isinstance(value, tuple) and all(_is_address(v) for v in value):
        return "`[" + ", ".join(f'"{format_address(v)}"' for v in value) + "]`"
    raise TypeError(f"no way to show the default of {name} ({value!r}); give it shown_default")


def _is_address(value: object) -> TypeGuard[tuple[str, int]]:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _allowed(spec: KeySpec) -> str:
    setting = spec.setting
    parts: list[str] = []
    if setting.choices:
        parts.append(", ".join(f"`{choice}`" for choice in setting.choices))
    low, high = setting.low, setting.high
    if low is not None and high is not None:
        parts.append(f"{low}..{high}")
    elif low is not None:
        parts.append(f">= {low}")
    elif high is not None:
        parts.append(f"<= {high}")
    elif setting.type == SECONDS:
        parts.append("> 0")
    elif setting.type == FRACTION:
        raise TypeError(f"{spec.section}.{spec.name}: a fraction needs low and high")
    if setting.allowed:
        parts.append(setting.allowed)
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Write docs/configuration.md from the config schema."
    )
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="default: %(default)s")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the file is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.is_file() else ""
        if current != text:
            print(f"{output} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
