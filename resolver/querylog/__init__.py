"""The query log: what clients asked and what blokir answered, streamed as dnstap.

client.py is the worker's side (a list append per logged query), writer.py the process that
encodes dnstap and writes Frame Streams (framestream.py) to a file or a socket (sinks.py).
schema.py holds the dnstap schema as protobuf classes (the protobuf library); encoder.py, the
writer's own encoder (compiled with the hot path), writes the same bytes faster (tests compare
it with the library's output; encoder.py says why). docs/querylog.md says what is kept.

Nothing here is imported by a worker unless `[querylog] dnstap` is set.
"""
