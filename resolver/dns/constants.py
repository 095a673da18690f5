"""DNS protocol numbers and limits, defined once for the whole package.

Final, so the compiled modules (setup.py) use them as C constants rather than looking them up.
"""

from __future__ import annotations

from typing import Final

# -- the message header (RFC 1035 4.1.1) ----------------------------------------------------------

HEADER_SIZE: Final = 12  # ID, flags and four 16-bit counts

# Flag bits of the 16-bit flags word (RFC 1035 4.1.1, RFC 4035 3.2 for AD and CD).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010
OPCODE_MASK: Final = 0x7800
RCODE_MASK: Final = 0x000F

# RCODEs (RFC 1035 4.1.1, RFC 6891 9 for the extended BADVERS).
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16

# -- types and classes (RFC 1035 3.2.2-3.2.4 and the RFCs named) ----------------------------------

TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_HINFO: Final = 13
TYPE_SIG: Final = 24  # SIG(0), RFC 2931: signs the whole message, as TSIG does
TYPE_AAAA: Final = 28
TYPE_DNAME: Final = 39  # RFC 6672
TYPE_OPT: Final = 41  # RFC 6891: its TTL field is the extended RCODE and flags, not a TTL
TYPE_TSIG: Final = 250  # RFC 8945: signs one hop; a rewritten copy would not verify
TYPE_ANY: Final = 255
CLASS_IN: Final = 1
CLASS_CH: Final = 3
CLASS_HS: Final = 4
CLASS_ANY: Final = 255

# -- EDNS (RFC 6891) ----------------------------------------------------------------------------

EDNS_DO: Final = 0x8000  # RFC 3225: in the OPT TTL field
MIN_UDP_PAYLOAD: Final = 512  # RFC 1035 4.2.1 without EDNS; RFC 6891 6.2.5 floor with it
OPTION_NSID: Final = 3  # RFC 5001
OPTION_ECS: Final = 8  # RFC 7871 (EDNS Client Subnet)
OPTION_COOKIE: Final = 10  # RFC 7873 section 4
OPTION_TCP_KEEPALIVE: Final = 11  # RFC 7828
OPTION_PADDING: Final = 12  # RFC 7830
OPTION_EDE: Final = 15  # RFC 8914 section 2

# Extended DNS Error INFO-CODEs blokir sends (RFC 8914 section 4; the block answers' codes 15-17
# are the lists' own: resolver/policy.py).
EDE_OTHER: Final = 0  # 4.1, with EXTRA-TEXT saying what went wrong
EDE_STALE_ANSWER: Final = 3  # 4.4, an answer served stale (RFC 8767)
EDE_PROHIBITED: Final = 18  # 4.19
EDE_NO_REACHABLE_AUTHORITY: Final = 22  # 4.23: the upstreams did not answer

# -- names and TTLs -----------------------------------------------------------------------------

MAX_LABEL: Final = 63  # RFC 1035 2.3.4; length octets 64-191 are reserved, 192+ are pointers
MAX_NAME_WIRE: Final = 255  # RFC 1035 2.3.4, wire octets: length octets and the root included
MAX_NAME_TEXT: Final = 253  # the same limit in dotted text without the trailing dot
# 255 octets hold at most 127 one-octet labels plus the root. An encoder points at a suffix it
# wrote before, so a name needs at most one pointer hop per label; a longer chain is pointers
# pointing at pointers, which no encoder writes.
MAX_POINTER_HOPS: Final = 128
MAX_TTL: Final = 0x7FFFFFFF  # RFC 2181 section 8: a TTL with the top bit set counts as zero
