"""The landing page's decision without sockets: status, texts, languages, escaping, reloads."""

from __future__ import annotations

from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.landing.page import Notice, Pages, choose_language, page_values
from resolver.landing.server import BadRequest, IndexFollower, Landing, Reply, host_of
from resolver.landing.stats import LandingStats, landing_metrics, merge
from tests.unit.landing_support import (
    BLOCKED,
    EXCEPTION,
    OWN_NAME,
    REGULATOR_BLOCKED,
    compile_index,
    landing_config,
)


def request(
    host: str | bytes, target: str | bytes = "/", method: str = "GET", **headers: str
) -> h11.Request:
    fields = [("Host", host)] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    return h11.Request(method=method, target=target, headers=fields)


@pytest.fixture
def landing(tmp_path: Path) -> Landing:
    return Landing(landing_config(tmp_path), str(tmp_path / "index.blkx"))


def header(reply: Reply, name: str) -> str | None:
    return next((v for k, v in reply.headers if k.lower() == name.lower()), None)


def test_blocked_name_gets_451_with_the_list_category_and_legal_texts(landing: Landing) -> None:
    reply = landing.answer(request(f"www.{BLOCKED}:80"))
    page = reply.body.decode()
    assert reply.status == 451 and reply.category == "gambling"
    assert f"www.{BLOCKED}" in page and "trustpositif" in page and "gambling" in page
    assert "Terms of service section 4" in page and "Contoh ISP &amp; Partners" in page
    assert "mailto:abuse@isp.example" in page
    # RFC 7725: who blocks it, as a Link header; the URL's & escaped in the page's href.
    assert header(reply, "Link") == '<https://isp.example/appeal?a=1&b=2>; rel="blocked-by"'
    assert 'href="https://isp.example/appeal?a=1&amp;b=2"' in page
    assert header(reply, "Content-Language") == "en"


def test_a_lists_own_texts_override_the_global_ones(landing: Landing) -> None:
    reply = landing.answer(request(REGULATOR_BLOCKED))
    page = reply.body.decode()
    assert reply.status == 451 and reply.category == "illegal-lending"
    assert "POJK 10/2022" in page and "Otoritas Jasa Keuangan" in page
    assert "Terms of service" not in page
    assert header(reply, "Link") == '<https://ojk.example/aduan>; rel="blocked-by"'


@pytest.mark.parametrize("host", [EXCEPTION, "www.example.org", "judi-contoh.example.org"])
def test_names_not_blocked_get_200_and_no_legal_text(landing: Landing, host: str) -> None:
    reply = landing.answer(request(host))
    page = reply.body.decode()
    assert reply.status == 200 and reply.category == "not_blocked"
    assert f"{host}</span> is not blocked" in page
    assert "451" not in page and "Legal basis" not in page and header(reply, "Link") is None


@pytest.mark.parametrize("host", [OWN_NAME, "127.0.0.80", "[2001:db8::80]:8080"])
def test_own_name_and_addresses_get_the_about_page(landing: Landing, host: str) -> None:
    reply = landing.answer(request(host))
    assert reply.status == 200 and reply.category == "landing"
    assert "Block notices of Contoh ISP &amp; Partners" in reply.body.decode()


def test_indonesian_by_accept_language(landing: Landing) -> None:
    reply = landing.answer(request(BLOCKED, accept_language="en;q=0.5, id-ID;q=0.9"))
    assert header(reply, "Content-Language") == "id" and header(reply, "Vary") == "Accept-Language"
    assert f'Akses ke <span id="name">{BLOCKED}</span> diblokir' in reply.body.decode()


@pytest.mark.parametrize(
    ("accept", "default", "expected"),
    [
        (None, "id", "id"),
        ("", "en", "en"),
        ("id", "en", "id"),
        ("fr, de;q=0.9", "id", "id"),  # nothing we have: the default
        ("fr, en-GB;q=0.3, id;q=0.2", "id", "en"),
        ("id;q=0, *", "id", "id"),  # * is the default, id refused but it is all we can do
        ("en;q=0, id;q=0.1", "en", "id"),
        ("id;q=0.8, en;q=0.8", "en", "id"),  # a tie: the first
        ("en;q=2, id;q=abc, id;q=0.4", "en", "id"),  # invalid weights skipped
        ("x" * 5000, "en", "en"),
    ],
)
def test_choose_language(accept: str | None, default: str, expected: str) -> None:
    assert choose_language(accept, default) == expected


def test_robots_favicon_and_any_path(landing: Landing) -> None:
    robots = landing.answer(request(BLOCKED, "/robots.txt"))
    assert robots.status == 200 and robots.body == b"User-agent: *\nDisallow: /\n"
    assert robots.category is None
    assert landing.answer(request(BLOCKED, "/favicon.ico")).status == 204
    for target in ("/some/deep/path?q=1", "/robots.txt.bak", f"http://{BLOCKED}/x"):
        assert landing.answer(request(BLOCKED, target)).status == 451, target


def test_absolute_form_target_names_the_host(landing: Landing) -> None:
    reply = landing.answer(request("www.example.org", f"http://{BLOCKED}/robots.txt"))
    assert reply.status == 200 and reply.body.startswith(b"User-agent")
    assert landing.answer(request("www.example.org", f"http://{BLOCKED}/")).status == 451


def test_other_methods_are_405(landing: Landing) -> None:
    with pytest.raises(BadRequest) as caught:
        landing.answer(request(BLOCKED, method="POST"))
    assert caught.value.status == 405


@pytest.mark.parametrize(
    "host",
    [
        b"<script>alert(1)</script>.example",
        b"a b.example",
        b"\xff\xfe.example",
        b"caf\xc3\xa9.example",
        b"a" * 300 + b".example",
        b"x." + b"a" * 64 + b".example",
        b"example.com:http",
        b"[::1",
        b"[not-v6]:80",
        b"",
        b".",
        b"-bad.example",
    ],
)
def test_hostile_hosts_are_400(host: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        host_of(request(host))
    assert caught.value.status == 400


def test_everything_from_the_request_and_config_is_escaped() -> None:
    notice = Notice(
        "blocked", '"><img src=x>', "l<1>", "c&d", justification="<b>law</b>", contact="x'y"
    )
    values = page_values(notice, "en")
    assert values["name"] == "&quot;&gt;&lt;img src=x&gt;"
    assert values["list"] == "l&lt;1&gt;" and values["category"] == "c&amp;d"
    assert values["justification"] == "&lt;b&gt;law&lt;/b&gt;" and values["contact"] == "x&#x27;y"
    page = Pages().render(notice, "en").decode()
    assert "<img" not in page and "<b>law" not in page


def test_operator_templates_replace_the_built_in_ones(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "blocked.id.html").write_text("Diblokir $name\n<p class=x>$name $category</p>\n")
    config = landing_config(tmp_path, f'template_dir = "{templates}"\ndefault_language = "id"')
    landing = Landing(config, str(config.blocking.index_path))
    page = landing.answer(request(BLOCKED)).body.decode()
    assert "<title>Diblokir judi-contoh.example</title>" in page
    assert "<p class=x>judi-contoh.example gambling</p>" in page
    english = landing.answer(request(BLOCKED, accept_language="en")).body.decode()
    assert "Access to" in english  # the built-in one where the directory has none


def test_the_index_is_followed_when_a_reload_replaces_it(tmp_path: Path) -> None:
    config = landing_config(tmp_path)
    now = [0.0]
    follower = IndexFollower(str(config.blocking.index_path), clock=lambda: now[0])
    first = follower.current()
    assert first is not None and first.match_policy_id(b"new-block.example") == 0
    (tmp_path / "gambling.txt").write_text(f"{BLOCKED}\nnew-block.example\n")
    compile_index(config)
    assert follower.current() is first  # checked at most once a second
    now[0] = 1.5
    fresh = follower.current()
    assert fresh is not first and fresh is not None and fresh.match_policy_id(b"new-block.example")
    (tmp_path / "index.blkx").write_bytes(b"garbage")  # a broken file: the last good one stays
    now[0] = 3.0
    assert follower.current() is fresh


def test_counters_survive_a_restart_and_sum_over_slots() -> None:
    stats = LandingStats()
    stats.count("gambling", "http")
    stats.refuse_tls("gambling")
    stats.reject("timeout")
    stats.connections = 3
    successor = LandingStats()
    successor.resume(stats.snapshot())
    successor.count("gambling", "http")
    assert successor.requests[("gambling", "http")] == 2 and successor.connections == 0
    total = merge([successor.snapshot(), stats.snapshot(), None])
    assert total.requests[("gambling", "http")] == 3 and total.rejected["timeout"] == 2
    names = {m.name: m for m in landing_metrics(total)}
    assert set(names) == {
        "blokir_landing_requests",
        "blokir_landing_tls_refused",
        "blokir_landing_rejected",
        "blokir_landing_connections",
    }
    samples = {
        (s.labels.get("category"), s.labels.get("scheme")): s.value
        for s in names["blokir_landing_requests"].samples
    }
    assert samples[("gambling", "http")] == 3 and samples[("not_blocked", "http")] == 0


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(host=st.binary(max_size=300), target=st.binary(min_size=1, max_size=80))
def test_any_host_and_target_give_a_page_or_a_bad_request(
    landing: Landing, host: bytes, target: bytes
) -> None:
    try:
        reply = request(host, b"/" + target.strip())
    except h11.LocalProtocolError:
        return  # h11 itself refuses to represent it: a real client's bytes never get this far
    try:
        answer = landing.answer(reply)
    except BadRequest as exc:
        assert exc.status == 400
        return
    assert answer.status in (200, 204, 451)
    assert b"<script" not in answer.body.lower() and b"\x00" not in answer.body
