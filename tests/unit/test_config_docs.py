"""docs/configuration.md is what the schema gives (resolver/config/docs.py), and its example is a
config blokir accepts."""

from __future__ import annotations

from pathlib import Path

from resolver.config import SCHEMA, SECTIONS, docs, parse_config


def test_committed_docs_match_the_schema() -> None:
    committed = docs.DOCS_PATH.read_text(encoding="utf-8") if docs.DOCS_PATH.is_file() else ""
    assert committed == docs.render(), (
        f"{docs.DOCS_PATH.name} is out of date with resolver/config/schema.py: "
        f"run {docs.REGENERATE} and commit the result"
    )


def test_every_section_and_key_is_in_the_docs() -> None:
    text = docs.render()
    for name, section in SECTIONS.items():
        assert f"## {section.title}\n" in text
        for key in SCHEMA[name]:
            assert f"| `{key}` |" in text, f"{name}.{key}"


def test_the_example_is_a_valid_config(tmp_path: Path) -> None:
    config = parse_config(docs.EXAMPLE, tmp_path / "blokir.toml")
    assert [entry.name for entry in config.lists] == ["regulator", "ads"]
    assert config.lists[0].source.url is not None  # a URL list: downloaded, not read here


def test_check_says_when_the_file_is_stale(tmp_path: Path) -> None:
    output = tmp_path / "configuration.md"
    assert docs.main(["--check", "--output", str(output)]) == 1  # missing
    assert docs.main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == docs.render()
    assert docs.main(["--check", "--output", str(output)]) == 0
    output.write_text(docs.render().replace("| `workers` |", "| `worker` |"), encoding="utf-8")
    assert docs.main(["--check", "--output", str(output)]) == 1
