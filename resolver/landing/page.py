"""The landing page's content: which language, which template, and the values put into it.

Templates are the standard library's `string.Template` (`$name` placeholders, no logic), so an
operator's template cannot run code, and every value is HTML-escaped here before substitution:
the host name comes from the request's Host header, which is attacker input, and list settings
may hold `&` or `<`. Values that go into an `href` are only ever http(s) URLs checked by the
config validator, or the contact URI (also validated), escaped like the rest.
"""

from __future__ import annotations

import html
import logging
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from resolver.config import Config
from resolver.config.schema import LANGUAGES

log = logging.getLogger("blokir.landing")

KINDS = ("blocked", "unblocked", "about")
BLOCKED, UNBLOCKED, ABOUT = KINDS
MAX_TEMPLATE_BYTES = 256 << 10  # an operator's template; a bigger file is a mistake
# RFC 9110 section 12.5.4: language-range [ ";" weight ], weight = "q=" 0..1 (3 decimals).
_LANGUAGE_RANGE = re.compile(
    r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*"
)
MAX_LANGUAGE_RANGES = 32  # a longer Accept-Language header is read only this far

# What the page says where a setting is missing, per language.
_NOT_STATED = {"en": "not stated", "id": "tidak disebutkan"}
_APPEAL_TO = {
    "en": "Contact {who} at {contact} to ask for a review.",
    "id": "Hubungi {who} melalui {contact} untuk meminta peninjauan.",
}
_APPEAL_AT = {
    "en": 'Ask for a review at <a href="{url}">{url}</a>.',
    "id": 'Ajukan peninjauan di <a href="{url}">{url}</a>.',
}
_NO_APPEAL = {
    "en": "Contact your internet provider to ask for a review.",
    "id": "Hubungi penyedia layanan internet Anda untuk meminta peninjauan.",
}
_OPERATOR = {"en": "your internet provider", "id": "penyedia layanan internet Anda"}


def choose_language(header: str | None, default: str) -> str:
    """The built-in language the client prefers (RFC 9110 section 12.5.4): the highest q-value
    whose primary subtag is one we have (`id-ID` is `id`), the earlier one on a tie; `*` means
    the default; q=0 means "not this one". Anything unparsable is skipped, not an error."""
    best, best_q = default, 0.0
    refused: set[str] = set()
    for part in (header or "").split(",")[:MAX_LANGUAGE_RANGES]:
        match = _LANGUAGE_RANGE.fullmatch(part)
        if match is None:
            continue
        tag = match.group(1).lower()
        try:
            q = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if not 0.0 <= q <= 1.0:
            continue
        primary = default if tag == "*" else tag.split("-")[0]
        if q == 0.0:
            refused.add(primary)
        elif primary in LANGUAGES and q > best_q and primary not in refused:
            best, best_q = primary, q
    return best


@dataclass(frozen=True, slots=True)
class Notice:
    """What the page says about one name. Fields are plain text, escaped when rendered."""

    kind: str  # BLOCKED, UNBLOCKED or ABOUT
    name: str
    list_name: str = ""
    category: str = ""
    justification: str | None = None
    contact: str | None = None
    organisation: str | None = None
    appeal_url: str | None = None


def notice_for(
    config: Config, kind: str, name: str, list_name: str = "", category: str = ""
) -> Notice:
    """The notice with a list's own texts where it has them, else `[blocking]`'s and
    `[landing]`'s."""
    blocking = config.blocking
    own = next((lst for lst in config.lists if lst.name == list_name), None)
    return Notice(
        kind=kind,
        name=name,
        list_name=list_name,
        category=category,
        justification=(own and own.justification) or blocking.justification,
        contact=(own and own.contact) or blocking.contact,
        organisation=(own and own.organisation) or blocking.organisation,
        appeal_url=(own and own.appeal_url) or config.landing.appeal_url,
    )


class Pages:
    """The templates, read once: each file from the operator's directory if it is there, else
    the built-in one. `layout.html` is the page around the content; a kind's file
    (`blocked.en.html`, ...) holds the title on its first line and the content after it."""

    def __init__(self, template_dir: Path | None = None) -> None:
        builtin = resources.files(__package__ or "resolver.landing").joinpath("templates")

        def load(file: str) -> str:
            text = _read_operator_template(template_dir / file) if template_dir else None
            return text if text is not None else builtin.joinpath(file).read_text("utf-8")

        self.layout = string.Template(load("layout.html"))
        self.templates: dict[tuple[str, str], tuple[string.Template, string.Template]] = {}
        for kind in KINDS:
            for language in LANGUAGES:
                title, _, content = load(f"{kind}.{language}.html").partition("\n")
                self.templates[(kind, language)] = (
                    string.Template(title),
                    string.Template(content),
                )

    def render(self, notice: Notice, language: str) -> bytes:
        values = page_values(notice, language)
        title, content = self.templates[(notice.kind, language)]
        page = self.layout.safe_substitute(
            values,
            title=title.safe_substitute(values),
            content=content.safe_substitute(values).rstrip("\n"),
        )
        return page.encode("utf-8")


def _read_operator_template(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            log.error("%s: larger than %d bytes; using the built-in page", path, MAX_TEMPLATE_BYTES)
            return None
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.error("%s: cannot read the template (%s); using the built-in page", path, exc)
        return None


def page_values(notice: Notice, language: str) -> Mapping[str, str]:
    """Every placeholder a template may use, each HTML-escaped (quotes too: values may sit in
    attributes). `appeal_html` is the one fragment with markup, built from escaped parts."""
    missing = _NOT_STATED[language]

    def text(value: str | None) -> str:
        return html.escape(value if value else missing, quote=True)

    who = html.escape(notice.organisation or _OPERATOR[language], quote=True)
    if notice.appeal_url:
        appeal = _APPEAL_AT[language].format(url=html.escape(notice.appeal_url, quote=True))
    elif notice.contact:
        appeal = _APPEAL_TO[language].format(
            who=who, contact=html.escape(notice.contact, quote=True)
        )
    else:
        appeal = _NO_APPEAL[language]
    return {
        "name": html.escape(notice.name, quote=True),
        "list": text(notice.list_name),
        "category": text(notice.category),
        "justification": text(notice.justification),
        "contact": text(notice.contact),
        "organisation": text(notice.organisation),
        "operator": who,
        "appeal_url": html.escape(notice.appeal_url or "", quote=True),
        "appeal_html": appeal,
        "language": language,
        "kind": notice.kind,
    }
