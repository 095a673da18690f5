"""The config schema (resolver/config/schema.py) against the files that use it and the
validator that enforces it: every key written anywhere is declared, every declared key is
documented, and the validator applies the schema's ranges and choices."""

from __future__ import annotations

import contextlib
import dataclasses
import textwrap
import tomllib
from pathlib import Path

import pytest

from resolver.config import (
    DEFAULT_CONFIG_PATH,
    SCHEMA,
    SECTION_KEYS,
    SECTIONS,
    Config,
    ConfigError,
    KeySpec,
    parse_config,
)
from resolver.config.schema import INTEGER, keys_of
from resolver.envconfig import ENV_VARIABLES

DATA = Path(__file__).resolve().parent.parent / "data" / "config"
# A minimal [[lists]] / [[allowlists]] entry, for checking their keys one at a time.
ENTRY = {"name": "n", "path": "n.txt"}


def all_specs() -> list[KeySpec]:
    return [spec for keys in SCHEMA.values() for spec in keys.values()]


def keys_written(path: Path) -> list[tuple[str, str]]:
    """(section, key) for every key in a config file; top-level keys as ("", key)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []
    for section, value in raw.items():
        found.append(("", section))
        tables = value if isinstance(value, list) else [value]
        for table in tables:
            found += [(section, key) for key in table]
    return found


@pytest.mark.parametrize("path", [DEFAULT_CONFIG_PATH, DATA / "full.toml"], ids=lambda p: p.name)
def test_every_key_in_the_shipped_configs_is_in_the_schema(path: Path) -> None:
    written = keys_written(path)
    assert written, f"{path} holds no keys"
    for section, key in written:
        if not section:
            assert key in SECTIONS, f"{path.name}: unknown section [{key}]"
        else:
            assert key in SECTION_KEYS[section], f"{path.name}: [{section}] {key} not in schema"


def test_every_schema_key_is_documented() -> None:
    specs = all_specs()
    assert len(specs) >= len(SECTIONS)
    for spec in specs:
        assert spec.setting.doc.strip(), f"{spec.section}.{spec.name} has no description"
        assert spec.setting.type.strip(), f"{spec.section}.{spec.name} has no type"
        assert "\n" not in spec.setting.doc, f"{spec.section}.{spec.name}: one line, please"
    for name, section in SECTIONS.items():
        assert section.title.strip() and section.doc.strip(), name


def test_sections_are_the_config_fields() -> None:
    fields = [f.name for f in dataclasses.fields(Config) if f.name != "source"]
    assert sorted(SECTIONS) == sorted(fields)


def test_every_section_field_is_a_key_or_gathers_keys() -> None:
    # A field added to a section class without a Setting would be silently unreachable from the
    # file: only the fields below are not keys on purpose.
    not_keys = {"source", "url", "tls_servers"}  # tls_servers: the tls:// entries of servers
    for name, section in SECTIONS.items():
        declared = {spec.name for spec in keys_of(section.cls, name)}
        for f in dataclasses.fields(section.cls):
            assert f.name in declared or f.name in not_keys, f"{name}.{f.name} has no Setting"


def toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def config_setting(spec: KeySpec, value: object) -> str:
    line = f"{spec.name} = {toml_value(value)}"
    if SECTIONS[spec.section].array:
        entry = "\n".join(f'{k} = "{v}"' for k, v in ENTRY.items())
        return f"[[{spec.section}]]\n{entry}\n{line}\n"
    return f"[{spec.section}]\n{line}\n"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "blokir.toml")
    return str(info.value)


@pytest.mark.parametrize(
    "spec",
    [s for s in all_specs() if s.setting.type == INTEGER],
    ids=lambda s: f"{s.section}.{s.name}",
)
def test_integer_ranges_come_from_the_schema(spec: KeySpec) -> None:
    setting = spec.setting
    key = f"{spec.section}.{spec.name}" if not SECTIONS[spec.section].array else spec.name
    for value in (setting.low, setting.high):
        if value is not None:  # the bounds are allowed (another key may object: min <= max)
            with contextlib.suppress(ConfigError):
                parse_config(config_setting(spec, value), "blokir.toml")
                continue
            assert f"{key}: must be" not in error_of(config_setting(spec, value))
    if setting.low is not None:
        message = error_of(config_setting(spec, setting.low - 1))
        assert f"{key}: must be" in message and str(setting.low) in message
    if setting.high is not None:
        message = error_of(config_setting(spec, setting.high + 1))
        assert f"{key}: must be" in message and str(setting.high) in message


@pytest.mark.parametrize(
    "spec", [s for s in all_specs() if s.setting.choices], ids=lambda s: f"{s.section}.{s.name}"
)
def test_choices_come_from_the_schema(spec: KeySpec) -> None:
    for choice in spec.setting.choices:
        parse_config(config_setting(spec, choice.upper()), "blokir.toml")
    message = error_of(config_setting(spec, "bogus"))
    assert message.endswith(f"'bogus' is not one of {', '.join(spec.setting.choices)}")


def test_a_required_key_is_required() -> None:
    required = [s for s in all_specs() if s.required]
    assert {s.name for s in required} == set(ENTRY)  # the keys ENTRY must supply
    for spec in required:
        keys = SECTION_KEYS[spec.section]  # [[groups]] has a name but no path
        others = "\n".join(f'{k} = "{v}"' for k, v in ENTRY.items() if k != spec.name and k in keys)
        text = textwrap.dedent(f"[[{spec.section}]]\n{others}\n")
        assert error_of(text).endswith(f"{spec.name}: required key is missing")


def test_environment_variables_name_schema_keys() -> None:
    for variable, key in ENV_VARIABLES.items():
        section, _, name = key.partition(".")
        assert name in SECTION_KEYS.get(section, ()), f"{variable} -> {key}"
