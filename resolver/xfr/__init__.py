"""Response policy zones over zone transfer (RFC 5936 AXFR, RFC 1995 IXFR, RFC 1996 NOTIFY,
RFC 8945 TSIG).

- source.py: what a `[[lists]] path = "axfr://..."` entry names (primary, zone, TSIG key)
- secondary.py: blokir takes a list by AXFR, then IXFR, and keeps the last good copy on disk
- notify.py: the small UDP listener that receives a primary's NOTIFY and asks for a transfer
"""
