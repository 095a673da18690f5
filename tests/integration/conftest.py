"""Shared fixtures for integration tests: everything stays on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.dnsutil import answer_everything
from tests.integration.peers import Peers, run_peers, skip_reason
from tests.support.upstream import FakeUpstream


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """An upstream on 127.0.0.1 answering every A/AAAA query with a fixed address."""
    with FakeUpstream() as upstream:
        yield answer_everything(upstream)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """blokir and Unbound forwarding to one NSD upstream (peers.py), shared by a module."""
    why = skip_reason()
    if why:
        pytest.skip(why)
    yield from run_peers(tmp_path_factory.mktemp("peers"))
