"""metrics.py: buckets, the top-K sketch, shared slots, merging and retiring worker snapshots."""

from __future__ import annotations

from resolver import metrics as m


def test_bucket_of_powers_of_two_microseconds() -> None:
    assert m.bucket_of(0.0) == 0
    assert m.bucket_of(0.5e-6) == 0  # <= 1 us
    assert m.bucket_of(1.5e-6) == 1  # <= 2 us
    assert m.bucket_of(3e-6) == 2  # <= 4 us
    assert m.bucket_of(0.0015) == 11  # 1500 us <= 2048 us
    assert m.bucket_of(10.0) == m.N_BUCKETS  # +Inf
    assert m.BUCKET_BOUNDS[11] == 2048e-6


def test_cell_layout_is_unique() -> None:
    cells = {
        m.cell(t, qtype, o)
        for t in (m.UDP, m.TCP, m.TLS, m.HTTPS)
        for qtype in (*m.QTYPE_INDEX, 9999)
        for o in range(m.N_OUTCOMES)
    }
    assert len(cells) == m.N_CELLS and max(cells) == m.N_CELLS - 1


def test_top_counter_keeps_heavy_hitters() -> None:
    top = m.TopCounter(capacity=3)
    for round_ in range(5):
        for name, hits in ((b"heavy.example", 50), (b"medium.example", 20)):
            top.interval[(name, 1)] = hits
        top.interval[(f"noise{round_}.example".encode(), 1)] = 1
        top.interval[(f"noise{round_}b.example".encode(), 2)] = 1
        top.fold(lambda pid: {1: "judi", 2: "pinjol"}[pid])
    assert len(top.sketch) == 3
    ranked = sorted(top.sketch.items(), key=lambda kv: kv[1], reverse=True)
    assert ranked[0] == (("heavy.example", "judi"), 250)
    assert ranked[1] == (("medium.example", "judi"), 100)


def snapshot(blocked: int, cached_entries: int, up: bool) -> dict[str, object]:
    stats = m.WorkerStats()
    stats.cells[m.cell(m.UDP, 1, m.BLOCKED)] = blocked
    stats.blocked_by_labels[("judi", "gambling", "landing", "default")] = blocked
    stats.observe(m.BLOCKED, 5e-6)
    upstream = {
        "address": "127.0.0.1:53",
        "requests": 3,
        "responses": 2,
        "timeouts": 1,
        "errors": 0,
        "failure_rcodes": 0,
        "tcp_fallbacks": 0,
        "up": up,
        "buckets": [1] * (m.N_BUCKETS + 1),
        "duration_sum": 0.5,
    }
    raw = m.snapshot_bytes(stats, {"entries": cached_entries, "hits": 4}, [upstream], {})
    import json

    parsed: dict[str, object] = json.loads(raw)
    return parsed


def test_slots_round_trip_and_seqlock() -> None:
    slots = m.SharedSlots(2)
    assert slots.read(0) is None
    slots.write(1, b'{"a": 1}')
    slots.write(1, b'{"a": 2}')
    assert slots.read(1) == {"a": 2}
    slots.clear(1)
    assert slots.read(1) is None


def test_merge_sums_counters_and_retire_keeps_only_counters() -> None:
    live = snapshot(blocked=5, cached_entries=10, up=False)
    live["live"] = True
    dead = m.retire(snapshot(blocked=7, cached_entries=99, up=True))
    total = m.merge([live, dead])
    assert total["cells"][m.cell(m.UDP, 1, m.BLOCKED)] == 12
    assert total["blocked"] == {("judi", "gambling", "landing", "default"): 12}
    assert total["cache"] == {"entries": 10, "hits": 8}  # a dead worker's gauge is dropped
    upstream = total["upstreams"]["127.0.0.1:53"]
    assert upstream["requests"] == 6 and upstream["up"] == 0  # only live workers vote on health
    assert total["workers"] == 1


def test_hub_retires_a_dead_slot_into_the_totals() -> None:
    hub = m.MetricsHub(workers=2, top_k=5)
    import json

    hub.slots.write(0, json.dumps(snapshot(3, 1, True)).encode())
    hub.slots.write(1, json.dumps(snapshot(4, 1, True)).encode())
    assert hub.totals()["cells"][m.cell(m.UDP, 1, m.BLOCKED)] == 7
    hub.retire_slot(1)
    assert hub.totals()["cells"][m.cell(m.UDP, 1, m.BLOCKED)] == 7
    assert hub.totals()["workers"] == 1
