"""Which UDP path the worker runs: batched through resolver._udpbatch (recvmmsg/sendmmsg, one
system call for many datagrams each way) or the plain recvfrom/sendto loop.

Chosen like the compiled hot path (resolver/native.py): the install builds the extension when
it can and records why not otherwise; a missing, failed or stale build means the plain path, and
BLOKIR_UDP_BATCH=0 forces it (to compare the two, or to rule the extension out). `MODE.why`
is what `blokir --version` and the start-up log say.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from resolver import native

# A client's address as recvfrom gives it: (host, port), or for IPv6 (host, port, flowinfo,
# scope_id).
Address = tuple[str, int] | tuple[str, int, int, int]


class BatcherLike(Protocol):
    """resolver._udpbatch.Batcher, as the worker uses it (resolver/_udpbatch.pyi has it all)."""

    @property
    def send_errors(self) -> int: ...

    def recv(self, fd: int, /) -> tuple[list[bytes], list[str]]: ...

    def address(self, index: int, /) -> Address: ...

    def send(self, fd: int, replies: list[bytes | None], /) -> int: ...


MODE: native.Mode = native.decide_udp_batch(Path(__file__).resolve().parent, os.environ)


def _load() -> Callable[[int], BatcherLike] | None:
    global MODE
    if not MODE.compiled:
        return None
    try:
        from resolver._udpbatch import Batcher
    except ImportError as error:
        MODE = native.Mode(False, f"plain recvfrom/sendto (import failed: {error})")
        return None
    return Batcher


BATCHER = _load()


def new_batcher(capacity: int, environ: Mapping[str, str] | None = None) -> BatcherLike | None:
    """A batcher of `capacity` datagrams, or None for the plain path (the extension missing,
    or BLOKIR_UDP_BATCH=0 in `environ`, default this process's environment)."""
    env = os.environ if environ is None else environ
    if BATCHER is None or env.get(native.UDP_BATCH.env, "1") == "0":
        return None
    return BATCHER(capacity)
