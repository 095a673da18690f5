"""blokir: a DNS forwarder that enforces regulator and operator blocklists at ISP scale."""

__version__ = "0.1.0"
