"""blokir: a DNS forwarder that enforces regulator and operator blocklists at ISP scale."""

from pathlib import Path

from resolver import native

__version__ = "0.1.0"

# Before any other module of the package loads: the compiled hot path, or the sources when
# there is no compiled copy or the sources changed since it was built (resolver/native.py).
NATIVE = native.select(Path(__file__).resolve().parent)
