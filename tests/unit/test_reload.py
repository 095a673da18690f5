"""The reloader without a server: guards, unchanged detection, config re-reads, the watch's
debounce and what `blokir status` prints. Builds run `python -m resolver.build` for real (about
a quarter of a second each)."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from resolver import metrics
from resolver import reload as r
from resolver.config import Config, ConfigError, load_config, parse_config
from resolver.status import format_outcome, format_status

NAMES = [f"name{i}.example" for i in range(40)]


def write_list(path: Path, names: list[str]) -> None:
    # A new inode and a new mtime, as an operator's atomic replace makes.
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(f"{n}\n" for n in names))
    os.replace(temporary, path)


def make_config(tmp: Path, extra: str = "", list_extra: str = "") -> Path:
    config = tmp / "blokir.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:5353"]
[upstream]
servers = ["127.0.0.1:5300"]
[blocking]
index_path = "index.blkx"
{extra}
[[lists]]
name = "main"
path = "main.txt"
{list_extra}
"""
    )
    return config


class Swaps:
    def __init__(self) -> None:
        self.calls: list[tuple[Config, str]] = []

    def __call__(self, config: Config, index_path: str) -> list[str]:
        self.calls.append((config, index_path))
        return []


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, r.Reloader, Swaps]:
    listfile = tmp_path / "main.txt"
    write_list(listfile, NAMES)
    config_path = make_config(tmp_path)
    swaps = Swaps()
    reloader = r.Reloader(load_config(config_path), lambda: load_config(config_path), swaps)
    outcome = reloader.load()
    assert outcome.result == r.APPLIED and outcome.names_after == 40
    return tmp_path, listfile, reloader, swaps


def test_unchanged_then_applied_with_a_swap(setup: tuple[Path, Path, r.Reloader, Swaps]) -> None:
    _, listfile, reloader, swaps = setup
    assert reloader.reload("test").result == r.UNCHANGED
    assert swaps.calls == []
    write_list(listfile, [*NAMES, "new.example"])
    outcome = reloader.reload("test")
    assert outcome.result == r.APPLIED, outcome.detail
    assert (outcome.names_before, outcome.names_after) == (40, 41)
    assert len(swaps.calls) == 1 and swaps.calls[0][1] == reloader.index_path
    assert reloader.status()["lists"][0]["names"] == 41


def test_shrink_is_refused_unless_forced_and_the_index_file_stays(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    _, listfile, reloader, swaps = setup
    before = Path(reloader.index_path).read_bytes()
    write_list(listfile, NAMES[:19])  # 40 -> 19: 52.5% gone, the default limit is 50%
    outcome = reloader.reload("test")
    assert outcome.result == r.REJECTED_SHRINK and not outcome.ok
    assert "shrank by 52.5% (40 -> 19 names)" in outcome.detail
    assert Path(reloader.index_path).read_bytes() == before
    assert swaps.calls == []
    assert not list(Path(reloader.index_path).parent.glob(".index.blkx.new-*"))
    forced = reloader.reload("test", force=True)
    assert forced.result == r.APPLIED and forced.names_after == 19
    assert forced.problems and forced.problems[0].startswith("forced: ")


def test_per_list_max_shrink_overrides_the_default(tmp_path: Path) -> None:
    listfile = tmp_path / "main.txt"
    write_list(listfile, NAMES)
    config_path = make_config(tmp_path, list_extra="max_shrink = 1.0")
    reloader = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    reloader.load()
    write_list(listfile, NAMES[:2])
    assert reloader.reload("test").result == r.APPLIED


def test_garbage_is_refused_as_a_parse_failure(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    _, listfile, reloader, _ = setup
    listfile.write_text("".join(f"<td class='x'>{i} not a list</td>\n" for i in range(100)))
    outcome = reloader.reload("test")
    assert outcome.result == r.REJECTED_PARSE
    assert "list main: no entry from 100 lines; top reasons: no_dot" in outcome.detail
    assert reloader.status()["index"]["names"] == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "list main: no entry from 0 lines"),
        # Addresses only: kept apart as IP entries, nothing the index can enforce.
        ("203.0.113.1\n198.51.100.2\n", "no entry from 2 lines, 2 IP entries (not enforced)"),
        (
            "ok.example\n" + "bad!name.example\n" * 3,
            "3 of 4 entries rejected (75.0%, more than max_rejected_ratio 0.5)",
        ),
    ],
)
def test_reload_guard_refuses_an_empty_or_mostly_rejected_list(
    setup: tuple[Path, Path, r.Reloader, Swaps], text: str, message: str
) -> None:
    _, listfile, reloader, swaps = setup
    listfile.write_text(text)
    outcome = reloader.reload("test")
    assert outcome.result == r.REJECTED_PARSE, outcome.detail
    assert message in outcome.detail
    assert swaps.calls == [] and reloader.status()["index"]["names"] == 40
    assert reloader.reload("test", force=True).result == r.APPLIED


def test_per_list_max_rejected_ratio(tmp_path: Path) -> None:
    listfile = tmp_path / "main.txt"
    listfile.write_text("ok.example\n" + "bad!name.example\n" * 3)
    config_path = make_config(tmp_path, list_extra="max_rejected_ratio = 0.8")
    reloader = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    assert reloader.load().result == r.APPLIED


def test_start_refuses_a_list_that_gives_nothing_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "main.txt").write_text("local=/a.example/\n")
    config_path = make_config(tmp_path, list_extra='format = "plain"')
    reloader = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    with pytest.raises(r.ReloadError, match=r"refusing to start: list main: no entry .*--force"):
        reloader.load()
    assert not Path(reloader.index_path).exists()
    forced = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    forced.force_start = True
    assert forced.load().result == r.APPLIED
    # The index on disk is now current, but still refused at the next plain start.
    again = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    with pytest.raises(r.ReloadError, match="refusing to start"):
        again.load()


def test_invalid_config_keeps_the_running_one(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    tmp, _, reloader, _ = setup
    running = reloader.config
    (tmp / "blokir.toml").write_text("[server]\nworkers = 'two'\n")
    outcome = reloader.reload("test")
    assert outcome.result == r.INVALID_CONFIG
    assert "workers" in outcome.detail
    assert reloader.config is running


def test_start_only_settings_wait_for_a_restart_and_the_rest_applies(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    tmp, _, reloader, swaps = setup
    text = (tmp / "blokir.toml").read_text()
    text = text.replace('listen = ["127.0.0.1:5353"]', 'listen = ["127.0.0.1:5454"]')
    text = text.replace("[blocking]", '[blocking]\nlanding_ipv4 = "192.0.2.99"')
    (tmp / "blokir.toml").write_text(text)
    outcome = reloader.reload("test")
    assert outcome.result == r.APPLIED
    assert outcome.restart_needed == ["server.listen"]
    applied = swaps.calls[-1][0]
    assert applied.server.listen == (("127.0.0.1", 5353),)
    assert applied.blocking.landing_ipv4 == "192.0.2.99"


def test_effective_config_reports_whole_sections() -> None:
    running = parse_config("[[lists]]\nname='a'\npath='a.txt'\n", "/tmp/x.toml")
    loaded = dataclasses.replace(running, metrics=dataclasses.replace(running.metrics, top_k=5))
    effective, changed = r._effective(running, loaded)
    assert changed == ["[metrics]"]
    assert effective.metrics == running.metrics


def test_upstream_and_cache_changes_apply_without_a_restart(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    tmp, _, reloader, swaps = setup
    text = (tmp / "blokir.toml").read_text()
    text = text.replace(
        'servers = ["127.0.0.1:5300"]', 'servers = ["127.0.0.1:5301"]\ntimeout = 1.5'
    )
    text = text.replace("[blocking]", "[cache]\nmax_entries = 10\n[blocking]")
    (tmp / "blokir.toml").write_text(text)
    outcome = reloader.reload("test")
    assert outcome.result == r.APPLIED and outcome.restart_needed == []
    applied = swaps.calls[-1][0]
    assert applied.upstream.servers == (("127.0.0.1", 5301),) and applied.upstream.timeout == 1.5
    assert applied.cache.max_entries == 10
    assert reloader.reload("again").result == r.UNCHANGED


def test_changed_resolv_conf_nameservers_alone_are_applied(
    setup: tuple[Path, Path, r.Reloader, Swaps], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `[upstream] servers` empty the servers come from /etc/resolv.conf: a change there
    reaches the workers on the next reload though the config file is the same."""
    _, _, reloader, swaps = setup
    nameservers = [("127.0.0.1", 5353)]
    monkeypatch.setattr(Config, "upstream_servers", lambda self: list(nameservers))
    assert reloader.reload("first").result == r.APPLIED  # differs from the config's 5300
    calls = len(swaps.calls)
    assert reloader.reload("same").result == r.UNCHANGED and len(swaps.calls) == calls
    nameservers[0] = ("127.0.0.1", 5454)
    assert reloader.reload("changed").result == r.APPLIED and len(swaps.calls) == calls + 1


def test_no_usable_nameserver_keeps_the_running_config(
    setup: tuple[Path, Path, r.Reloader, Swaps], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, reloader, swaps = setup
    running = reloader.config

    def no_servers(self: Config) -> list[tuple[str, int]]:
        raise ConfigError("every nameserver is one of blokir's own listen addresses")

    monkeypatch.setattr(Config, "upstream_servers", no_servers)
    outcome = reloader.reload("test")
    assert outcome.result == r.INVALID_CONFIG and "own listen" in outcome.detail
    assert reloader.config is running and swaps.calls == []


def test_a_rejected_build_at_start_serves_the_previous_index(tmp_path: Path) -> None:
    listfile = tmp_path / "main.txt"
    write_list(listfile, NAMES)
    config_path = make_config(tmp_path)
    first = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    first.load()
    write_list(listfile, NAMES[:3])
    again = r.Reloader(load_config(config_path), lambda: load_config(config_path))
    outcome = again.load()
    assert outcome.result == r.REJECTED_SHRINK
    assert again.status()["index"]["names"] == 40
    # The watch does not rebuild the same rejected state over and over.
    assert again._due() is None
    assert again._due() is None


def test_watch_waits_until_a_changed_file_settles(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    _, listfile, reloader, _ = setup
    assert reloader._due() is None
    write_list(listfile, [*NAMES, "x.example"])
    assert reloader._due() is None  # changed since the last look: maybe still being written
    request = reloader._due()
    assert request is not None and request.trigger == "file-change"


def test_request_from_another_thread_gets_the_outcome(
    setup: tuple[Path, Path, r.Reloader, Swaps],
) -> None:
    _, listfile, reloader, _ = setup
    reloader.start()
    try:
        write_list(listfile, [*NAMES, "y.example"])
        outcome = reloader.request("SIGHUP", wait=30)
        assert outcome is not None and outcome.result == r.APPLIED
    finally:
        reloader.stop()


def test_url_lists_in_the_config(tmp_path: Path) -> None:
    config = parse_config(
        "[updates]\nstate_dir = 'state'\nmax_shrink = 0.2\n"
        "[[lists]]\nname = 'tp'\npath = 'https://lists.example/tp.txt'\nrefresh = 600\n",
        tmp_path / "blokir.toml",
    )
    entry = config.lists[0]
    assert entry.source.url == "https://lists.example/tp.txt"
    assert entry.source.refresh == 600
    assert entry.path == tmp_path / "state" / "tp.list"
    assert config.updates.max_shrink == 0.2
    assert config.updates.socket_path == tmp_path / "state" / "control.sock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[lists]]\nname='a'\npath='a.txt'\nrefresh=60\n", "only used with a URL path"),
        ("[[lists]]\nname='a'\npath='ftp://x/a.txt'\n", "only http://, https:// and axfr://"),
        ("[updates]\nmax_shrink = 1.5\n", "must be between 0 and 1"),
        ("[updates]\ncontrol_socket = '/" + "x" * 120 + "'\n", "Unix socket limit"),
    ],
)
def test_update_settings_are_validated(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, tmp_path / "blokir.toml")


def test_status_and_outcome_text() -> None:
    now = 1_000_000.0
    outcome = r.ReloadOutcome(
        r.REJECTED_SHRINK,
        "blokir reload",
        now - 120,
        seconds=1.5,
        detail="not applied",
        problems=["list a shrank by 90.0%"],
        restart_needed=["server.listen"],
    ).to_json()
    status = {
        "pid": 7,
        "listen": ["127.0.0.1:53"],
        "workers": [{"number": 0, "pid": 8}],
        "config": "/etc/blokir/blokir.toml",
        "index": {
            "path": "/var/lib/blokir/blokir.blkx",
            "names": 1_234_567,
            "checksum": "abc",
            "built_at": now - 3600,
            "loaded_at": now - 60,
        },
        "lists": [
            r.ListStatus(
                "tp",
                "url",
                "https://x/tp.txt",
                "/s/tp.list",
                1_234_567,
                2_000_000,
                5,
                "f" * 64,
                now - 7200,
                now - 30,
                "http_500",
                "HTTP 500",
            ).to_json()
        ],
        "last_reload": outcome,
        "reloads": {"applied": 2, "rejected_shrink": 1, "unchanged": 0},
    }
    text = format_status(status, now=now)
    assert "1,234,567 names, checksum abc, built 1h ago, loaded 1m ago" in text
    assert "tp    url   1,234,567  5" in text
    assert "http_500 30s ago" in text
    assert "tp: last download failed: HTTP 500" in text
    assert "reloads since start: applied 2, rejected_shrink 1" in text
    assert "need a restart: server.listen" in format_outcome(outcome)
    assert "upstreams and cache: not shown ([metrics] enabled = false)" in text
    snapshot = {
        "live": True,
        "cells": [0] * metrics.N_CELLS,
        "blocked": [],
        "histogram": [0] * (metrics.N_OUTCOMES * (metrics.N_BUCKETS + 1)),
        "duration_sum": [0.0] * metrics.N_OUTCOMES,
        "top": [],
        "cache": {"entries": 40, "hits": 30, "misses": 10},
        "upstreams": [
            {
                "address": "10.0.0.1:53",
                "requests": 12,
                "responses": 10,
                "timeouts": 2,
                "errors": 0,
                "failure_rcodes": 0,
                "tcp_fallbacks": 0,
                "up": False,
                "buckets": [0] * metrics.N_BUCKETS,
                "duration_sum": 0.05,
            }
        ],
    }
    retired = metrics.retire(
        {**snapshot, "upstreams": [{**snapshot["upstreams"][0], "address": "gone:53"}]}
    )
    summary = metrics.serving_summary(metrics.merge([snapshot, retired]))
    assert [u["address"] for u in summary["upstreams"]] == ["10.0.0.1:53"]  # not the removed one
    text = format_status({**status, **summary}, now=now)
    assert "upstream 10.0.0.1:53: DOWN, 10 of 12 answered, 2 timeouts, 0 errors, avg 5.0 ms" in text
    assert "cache    40 entries, 75% of cache lookups hit (1 worker(s) reporting)" in text


def test_url_list_is_refreshed_by_its_timer(tmp_path: Path) -> None:
    """A URL list is downloaded at start and again once its `refresh` has passed, with no
    reload asked for; an unchanged list (a 304) rebuilds nothing."""
    served = {"body": "".join(f"{n}\n" for n in NAMES).encode()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served["body"]
            etag = f'"{len(body)}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/list.txt"
        config_path = tmp_path / "blokir.toml"
        config_path.write_text(
            f"[upstream]\nservers = ['127.0.0.1:5300']\n[blocking]\nindex_path = 'index.blkx'\n"
            f"[updates]\nwatch = false\n"
            f"[[lists]]\nname = 'remote'\npath = '{url}'\nrefresh = 0.3\n"
        )
        reloader = r.Reloader(load_config(config_path), lambda: load_config(config_path))
        assert reloader.load().names_after == 40
        time.sleep(0.35)
        request = reloader._due()
        assert request is not None and request.trigger == "timer"
        assert reloader.reload("timer", download_all=False, reread_config=False).result == (
            r.UNCHANGED
        )
        assert reloader.status()["lists"][0]["last_result"] == "not_modified"
        served["body"] += b"added.example\n"
        time.sleep(0.35)
        outcome = reloader.reload("timer", download_all=False, reread_config=False)
        assert outcome.result == r.APPLIED and outcome.names_after == 41
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_current_but_corrupt_index_is_rebuilt_at_start(tmp_path: Path) -> None:
    write_list(tmp_path / "main.txt", NAMES)
    config_path = make_config(tmp_path)
    r.Reloader(load_config(config_path), lambda: load_config(config_path)).load()
    index = tmp_path / "index.blkx"
    data = bytearray(index.read_bytes())
    data[-8] ^= 0xFF  # inside the data the header's xxh3 covers
    index.write_bytes(bytes(data))
    outcome = r.Reloader(load_config(config_path), lambda: load_config(config_path)).load()
    assert outcome.result == r.APPLIED and outcome.names_after == 40
