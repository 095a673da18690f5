"""The query log: what clients asked and what blokir answered, streamed as dnstap.

client.py is the worker's side (a list append per logged query), writer.py the process that
encodes dnstap (schema.py, with the protobuf library) and writes Frame Streams (framestream.py)
to a file or a socket (sinks.py). docs/querylog.md says what is kept.

Nothing here is imported by a worker unless `[querylog] dnstap` is set.
"""
