"""Encrypted DNS transports: DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484) listeners,
the TLS context they share, and the answer shaping encrypted transports need (RFC 8467
padding, RFC 8484 Cache-Control)."""
