"""blokir's DNS layer: reading and writing DNS messages in wire format, without message objects.

- constants: header flags, RCODEs, types, classes, EDNS option and EDE codes, protocol limits
- names: the one walker over (possibly compressed) names, and MessageError
- query: parse_query (a client's query, strictly) and the query as it goes upstream
- message: walking a whole message (upstream responses): records, CNAME targets, negative TTL,
  EDNS options removed
- response: response headers, OPT and EDE, the error, truncated and RFC 8482 answers
- answers: block answers (BlockResponder), prebuilt per policy and query shape

Named `resolver.dns`; dnspython's top-level `dns` is a different package (imports are absolute,
so `import dns.message` anywhere in blokir still means dnspython's).
"""
