# Types of resolver/querylog/_dnstap.c (the C extension; resolver/querylog/encoder.py has its
# pure-Python twin, PyEncoder, and the protocol both follow, EncoderLike).

class Encoder:
    count: int
    size: int
    limit: int
    dropped: int
    def __init__(
        self,
        head: bytes,
        tail: bytes,
        query_type: bytes,
        response_type: bytes,
        bits4: int,
        bits6: int,
        blocked_bits4: int,
        blocked_bits6: int,
        limit: int,
    ) -> None: ...
    def add(
        self,
        when: float,
        client: str,
        udp: bool,
        query: bytes,
        answer: bytes | None,
        policy_id: int,
        match: int,
        value: bytes,
        /,
    ) -> int: ...
    def set_policies(self, fields: list[bytes], unknown: bytes, /) -> None: ...
    def take(self) -> bytes: ...
    def clear(self) -> int: ...
