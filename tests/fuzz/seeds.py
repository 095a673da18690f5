"""Seed inputs for the fuzz campaign: DNS packets built with dnspython and pieces of the list
files, from which the mutators start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def dns_seeds() -> list[bytes]:
    """Seed packets built with dnspython: the shapes real clients send and the ones that parse
    paths care about (EDNS, cookies, padding, ECS, TSIG, compressed names, long and many-label
    names, other opcodes and classes, responses). Deterministic: IDs are fixed."""
    import dns.edns
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.rcode
    import dns.rdataclass
    import dns.rrset
    import dns.tsigkeyring
    import dns.update

    names = [
        "judi-contoh.example",  # blocked (plain, adblock, rpz)
        "WwW.Judi-Contoh.Example",  # blocked, below, 0x20 case
        "berita.judi-contoh.example",  # allowlisted under a blocked parent
        "malware-contoh.example",  # rpz-drop
        "situs-terblokir.example",  # rpz local data
        "slot-gacor88.example",
        "poker-jaya.example",  # hosts list: nxdomain
        "pinjol-cepat.example",  # adblock list: refused
        "allowed.example.org",
        "cached.example.net",
        ".",
        "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,  # 255 octets
        ".".join(["x"] * 127),  # 127 labels, 255 octets
    ]
    seeds: list[bytes] = []

    def add(message: Any, qid: int) -> None:
        message.id = qid
        seeds.append(message.to_wire())

    qid = 1
    for name in names:
        for rdtype in ("A", "AAAA", "ANY", "HTTPS", "TXT"):
            add(dns.message.make_query(name, rdtype), qid)
            qid += 1
        add(dns.message.make_query(name, "A", use_edns=0, payload=1232), qid)
        add(dns.message.make_query(name, "AAAA", want_dnssec=True, payload=4096), qid + 1)
        qid += 2
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    server_cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x02" * 24)
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 40)
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    for options in ([cookie], [server_cookie], [padding], [ecs], [cookie, padding, ecs]):
        add(dns.message.make_query("judi-contoh.example", "A", use_edns=0, options=options), qid)
        add(dns.message.make_query("allowed.example.org", "ANY", use_edns=0, options=options), qid)
        qid += 1
    add(dns.message.make_query("judi-contoh.example", "A", use_edns=1), qid)  # BADVERS
    add(dns.message.make_query("version.bind", "TXT", rdclass="CH"), qid + 1)
    add(dns.message.make_query("judi-contoh.example", "A", rdclass="ANY"), qid + 2)
    add(dns.message.make_query("judi-contoh.example", "A", rdclass="NONE"), qid + 3)
    odd = dns.name.Name([b"judi-contoh.example", b""])  # one label holding a dot
    add(dns.message.make_query(odd, "A"), qid + 4)
    nocache = dns.message.make_query("cached.example.net", "A")
    nocache.flags = dns.flags.CD
    add(nocache, qid + 5)
    signed = dns.message.make_query("allowed.example.org", "A", use_edns=0)
    signed.use_tsig(dns.tsigkeyring.from_text({"k.example.": "c2VjcmV0c2VjcmV0"}), "k.example.")
    add(signed, qid + 6)
    update = dns.update.UpdateMessage("example.org")
    update.add("www", 300, "A", "192.0.2.1")
    add(update, qid + 7)
    notify = dns.message.make_query("example.org", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    add(notify, qid + 8)
    # Responses: compressed names in every section, to splice pointers into queries.
    question = dns.message.make_query("www.judi-contoh.example", "A", use_edns=0)
    response = dns.message.make_response(question)
    response.answer.append(
        dns.rrset.from_text(
            "www.judi-contoh.example.", 60, "IN", "CNAME", "cdn.judi-contoh.example."
        )
    )
    response.answer.append(
        dns.rrset.from_text("cdn.judi-contoh.example.", 60, "IN", "A", "192.0.2.7")
    )
    response.authority.append(
        dns.rrset.from_text("judi-contoh.example.", 60, "IN", "NS", "ns.judi-contoh.example.")
    )
    add(response, qid + 9)
    # An upstream answer holding options of the client's hop (message.without_options).
    response = dns.message.make_response(dns.message.make_query("allowed.example.org", "A"))
    response.answer.append(dns.rrset.from_text("allowed.example.org.", 60, "IN", "A", "192.0.2.8"))
    ede = dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER, "from upstream")
    response.use_edns(0, payload=1232, options=[server_cookie, ede, ecs, padding])
    add(response, qid + 10)
    two = bytearray(dns.message.make_query("judi-contoh.example", "A").to_wire())
    two[5] = 2  # QDCOUNT 2, second question a pointer to the first
    seeds.append(bytes(two) + b"\xc0\x0c\x00\x1c\x00\x01")
    return seeds


def list_seeds() -> list[bytes]:
    """List seeds: the sample lists and the parser tests' quirk files, cut into small pieces so
    mutations reach every kind of line quickly. The first byte of a list input picks the
    format (see lists_check)."""
    from resolver.lists import FORMATS

    seeds: list[bytes] = []
    files = sorted((ROOT / "blocklists").glob("sample-*")) + sorted(
        (ROOT / "tests" / "data" / "lists").glob("*/*")
    )
    for path in files:
        if path.suffix == ".json":
            continue
        text = path.read_bytes()
        lines = text.splitlines(keepends=True)
        for start in range(0, len(lines), 12):
            seeds.append(bytes([len(seeds) % len(FORMATS)]) + b"".join(lines[start : start + 12]))
    return seeds
