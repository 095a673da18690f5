"""The query log: what clients asked and what blokir answered, streamed as dnstap.

client.py is the worker's side: per logged query one call into encoder.py's encoder (C from
_dnstap.c where the install built it, else its pure-Python twin), which cuts the client address
and writes the record's dnstap frames into a buffer; batches of frames go over a pipe to
writer.py, a process of the worker's own that forwards them to a file or a socket (sinks.py,
Frame Streams in framestream.py). schema.py holds the dnstap schema as protobuf classes (the
protobuf library): the enum numbers the encoders use, and what tests compare their bytes with.
docs/querylog.md says what is kept.

A worker without `[querylog] dnstap` imports client.py only (its constants): neither the
encoder nor the protobuf library.
"""
