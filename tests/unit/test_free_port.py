"""The test harness's port picker: the fault suite once failed in CI because a port it had
picked (from the kernel's ephemeral range) was given to a resolver's outgoing socket before
the server meant to listen on it had started."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import free_port

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def test_ports_lie_outside_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, high = (int(v) for v in EPHEMERAL.read_text().split())
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert [p for p in ports if low <= p <= high] == []
    assert all(1024 <= p <= 65535 for p in ports)
