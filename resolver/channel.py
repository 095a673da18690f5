"""The supervisor <-> worker channel: length-prefixed messages over the Unix socket pair the
supervisor makes for each worker before forking it (resolver/supervisor.py sends index and
settings swaps; resolver/worker.py answers them). Its own module so that neither side imports
the other.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!I")


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """Length-prefixed pickle. Both ends are this program (a socket pair made before fork), so
    pickle carries the frozen Config as it is, with no second serialiser to keep in step."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(body)) + body)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """One message, or None when the other end has closed."""
    prefix = _recv_exactly(sock, _LENGTH.size)
    if prefix is None:
        return None
    body = _recv_exactly(sock, _LENGTH.unpack(prefix)[0])
    if body is None:
        return None
    message = pickle.loads(body)
    return message if isinstance(message, dict) else None


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
