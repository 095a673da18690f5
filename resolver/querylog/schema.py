"""The dnstap message classes, built at run time from a descriptor with the `protobuf` library.

Why not generated code: `protoc` output (dnstap_pb2.py) is tied to the protobuf runtime version
that generated it and needs a compiler at build time; a descriptor declared here needs neither,
and the library then encodes exactly as generated classes would. The fields are those of
dnstap.proto beside this file (the public schema, kept as data; a test checks that every field
declared here has the name, number, type and label the schema gives it).

Only what blokir writes is declared: the Dnstap envelope, Message and Policy with their enums.
Unknown fields are never written, so a reader with the full schema decodes every message.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "dnstap"
CONTENT_TYPE = b"protobuf:dnstap.Dnstap"  # the Frame Streams content type readers expect

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "bytes": _F.TYPE_BYTES,
    "string": _F.TYPE_STRING,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "fixed32": _F.TYPE_FIXED32,
}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "required": _F.LABEL_REQUIRED}

# message -> [(label, type, name, number)]; a type not in _TYPES names an enum or a message.
FIELDS: dict[str, list[tuple[str, str, str, int]]] = {
    "Dnstap": [
        ("optional", "bytes", "identity", 1),
        ("optional", "bytes", "version", 2),
        ("optional", "bytes", "extra", 3),
        ("required", "Dnstap.Type", "type", 15),
        ("optional", "Message", "message", 14),
    ],
    "Policy": [
        ("optional", "string", "type", 1),
        ("optional", "bytes", "rule", 2),
        ("optional", "Policy.Action", "action", 3),
        ("optional", "Policy.Match", "match", 4),
        ("optional", "bytes", "value", 5),
    ],
    "Message": [
        ("required", "Message.Type", "type", 1),
        ("optional", "SocketFamily", "socket_family", 2),
        ("optional", "SocketProtocol", "socket_protocol", 3),
        ("optional", "bytes", "query_address", 4),
        ("optional", "bytes", "response_address", 5),
        ("optional", "uint32", "query_port", 6),
        ("optional", "uint32", "response_port", 7),
        ("optional", "uint64", "query_time_sec", 8),
        ("optional", "fixed32", "query_time_nsec", 9),
        ("optional", "bytes", "query_message", 10),
        ("optional", "bytes", "query_zone", 11),
        ("optional", "uint64", "response_time_sec", 12),
        ("optional", "fixed32", "response_time_nsec", 13),
        ("optional", "bytes", "response_message", 14),
        ("optional", "Policy", "policy", 15),
    ],
}
# Enum -> values used (names as in the schema).
ENUMS: dict[str, dict[str, int]] = {
    "SocketFamily": {"INET": 1, "INET6": 2},
    "SocketProtocol": {"UDP": 1, "TCP": 2},
    "Dnstap.Type": {"MESSAGE": 1},
    "Policy.Match": {"QNAME": 1, "CLIENT_IP": 2, "RESPONSE_IP": 3},
    "Policy.Action": {"NXDOMAIN": 1, "NODATA": 2, "PASS": 3, "DROP": 4, "LOCAL_DATA": 6},
    "Message.Type": {"CLIENT_QUERY": 5, "CLIENT_RESPONSE": 6},
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="blokir/dnstap.proto", package=PACKAGE, syntax="proto2"
    )
    messages = {}
    for name in FIELDS:
        messages[name] = proto.message_type.add(name=name)
    for enum_name, values in ENUMS.items():
        owner, _, short = enum_name.rpartition(".")
        holder = messages[owner].enum_type if owner else proto.enum_type
        enum = holder.add(name=short)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    for name, fields in FIELDS.items():
        for label, kind, field_name, number in fields:
            field = messages[name].field.add(name=field_name, number=number, label=_LABELS[label])
            if kind in _TYPES:
                field.type = _TYPES[kind]
            else:
                field.type = _F.TYPE_ENUM if kind in ENUMS else _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
    return proto


def message_classes() -> tuple[Any, Any, Any]:
    """(Dnstap, Message, Policy) classes, in a pool of their own (a process that also loads
    other dnstap code keeps its own definitions)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    classes = [
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("Dnstap", "Message", "Policy")
    ]
    return classes[0], classes[1], classes[2]
