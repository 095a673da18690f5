"""Shared fixtures for integration tests: everything stays on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.dnsutil import answer_everything
from tests.support.upstream import FakeUpstream


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """An upstream on 127.0.0.1 answering every A/AAAA query with a fixed address."""
    with FakeUpstream() as upstream:
        yield answer_everything(upstream)
