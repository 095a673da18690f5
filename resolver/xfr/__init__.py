"""RPZ over zone transfer (RFC 5936 AXFR, RFC 1995 IXFR, RFC 1996 NOTIFY, RFC 8945 TSIG).

- snapshot.py: one version of the zone as a sorted record file, and the difference between two
  versions; built in a child process so the serving processes never carry a 10M-name dict
- history.py: the serial (RFC 1982, persisted) and the last `[rpz] history` differences
- primary.py: serves the zone to secondaries (SOA, AXFR, IXFR) and sends NOTIFY
"""
