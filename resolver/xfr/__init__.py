"""Response policy zones over zone transfer (RFC 5936 AXFR, RFC 1995 IXFR, RFC 1996 NOTIFY,
RFC 8945 TSIG).

Secondary (blokir takes a list from a primary):
- source.py: what a `[[lists]] path = "axfr://..."` entry names (primary, zone, TSIG key)
- secondary.py: blokir takes a list by AXFR, then IXFR, and keeps the last good copy on disk
- notify.py: the small UDP listener that receives a primary's NOTIFY and asks for a transfer

Primary (blokir serves its merged policy to a fleet):
- snapshot.py: one version of the zone as a sorted record file, and the difference between two
  versions; built in a child process so the serving processes never carry a 10M-name dict
- history.py: the serial (RFC 1982, persisted) and the last `[rpz] history` differences
- primary.py: serves the zone to secondaries (SOA, AXFR, IXFR) and sends NOTIFY
"""
