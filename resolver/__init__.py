"""blokir: a DNS forwarder that enforces regulator and operator blocklists at ISP scale."""

from pathlib import Path

from resolver import native

__version__ = "0.1.0"

# Before any other module of the package loads: compiled hot path, or the sources when the
# compiled copy is missing or older than them (resolver/native.py).
NATIVE = native.select(Path(__file__).resolve().parent)
