"""The protobuf encoding of OTLP traces, decoded by the protobuf library
(Debian's python3-protobuf) and turned into the dict the JSON encoding
gives, so every span test reads both the same way.

The schema is built here from the field numbers of opentelemetry-proto
(collector/trace/v1, trace/v1, common/v1, resource/v1): only the
messages and fields an exporter of spans uses.
"""
import base64

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
STR, BYTES, BOOL, I64, U32 = F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_UINT32
DBL, FX64, FX32, MSG, ENUM = F.TYPE_DOUBLE, F.TYPE_FIXED64, F.TYPE_FIXED32, F.TYPE_MESSAGE, F.TYPE_ENUM

PKG = "otlp.test"

# message -> [(name, number, type, label, message or enum type, oneof)]
MESSAGES = {
    "AnyValue": [
        ("string_value", 1, STR, OPT, None, 0), ("bool_value", 2, BOOL, OPT, None, 0),
        ("int_value", 3, I64, OPT, None, 0), ("double_value", 4, DBL, OPT, None, 0),
        ("array_value", 5, MSG, OPT, "ArrayValue", 0),
        ("kvlist_value", 6, MSG, OPT, "KeyValueList", 0),
        ("bytes_value", 7, BYTES, OPT, None, 0)],
    "ArrayValue": [("values", 1, MSG, REP, "AnyValue", None)],
    "KeyValueList": [("values", 1, MSG, REP, "KeyValue", None)],
    "KeyValue": [("key", 1, STR, OPT, None, None), ("value", 2, MSG, OPT, "AnyValue", None)],
    "InstrumentationScope": [
        ("name", 1, STR, OPT, None, None), ("version", 2, STR, OPT, None, None),
        ("attributes", 3, MSG, REP, "KeyValue", None),
        ("dropped_attributes_count", 4, U32, OPT, None, None)],
    "Resource": [("attributes", 1, MSG, REP, "KeyValue", None),
                 ("dropped_attributes_count", 2, U32, OPT, None, None)],
    "Event": [("time_unix_nano", 1, FX64, OPT, None, None), ("name", 2, STR, OPT, None, None),
              ("attributes", 3, MSG, REP, "KeyValue", None),
              ("dropped_attributes_count", 4, U32, OPT, None, None)],
    "Link": [("trace_id", 1, BYTES, OPT, None, None), ("span_id", 2, BYTES, OPT, None, None),
             ("trace_state", 3, STR, OPT, None, None),
             ("attributes", 4, MSG, REP, "KeyValue", None),
             ("dropped_attributes_count", 5, U32, OPT, None, None),
             ("flags", 6, FX32, OPT, None, None)],
    "Status": [("message", 2, STR, OPT, None, None), ("code", 3, ENUM, OPT, "StatusCode", None)],
    "Span": [
        ("trace_id", 1, BYTES, OPT, None, None), ("span_id", 2, BYTES, OPT, None, None),
        ("trace_state", 3, STR, OPT, None, None), ("parent_span_id", 4, BYTES, OPT, None, None),
        ("name", 5, STR, OPT, None, None), ("kind", 6, ENUM, OPT, "SpanKind", None),
        ("start_time_unix_nano", 7, FX64, OPT, None, None),
        ("end_time_unix_nano", 8, FX64, OPT, None, None),
        ("attributes", 9, MSG, REP, "KeyValue", None),
        ("dropped_attributes_count", 10, U32, OPT, None, None),
        ("events", 11, MSG, REP, "Event", None), ("dropped_events_count", 12, U32, OPT, None, None),
        ("links", 13, MSG, REP, "Link", None), ("dropped_links_count", 14, U32, OPT, None, None),
        ("status", 15, MSG, OPT, "Status", None), ("flags", 16, FX32, OPT, None, None)],
    "ScopeSpans": [("scope", 1, MSG, OPT, "InstrumentationScope", None),
                   ("spans", 2, MSG, REP, "Span", None), ("schema_url", 3, STR, OPT, None, None)],
    "ResourceSpans": [("resource", 1, MSG, OPT, "Resource", None),
                      ("scope_spans", 2, MSG, REP, "ScopeSpans", None),
                      ("schema_url", 3, STR, OPT, None, None)],
    "ExportTraceServiceRequest": [("resource_spans", 1, MSG, REP, "ResourceSpans", None)],
}
ENUMS = {
    "SpanKind": ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                 "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"],
    "StatusCode": ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"],
}


def _request_class():
    fd = descriptor_pb2.FileDescriptorProto(name="otlp_test.proto", package=PKG, syntax="proto3")
    for name, values in ENUMS.items():
        e = fd.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)
    for name, fields in MESSAGES.items():
        m = fd.message_type.add(name=name)
        if any(f[5] is not None for f in fields):
            m.oneof_decl.add(name="value")
        for fname, num, typ, label, ref, oneof in fields:
            f = m.field.add(name=fname, number=num, type=typ, label=label)
            if ref:
                f.type_name = ".%s.%s" % (PKG, ref)
            if oneof is not None:
                f.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName(PKG + ".ExportTraceServiceRequest")
    return message_factory.MessageFactory(pool).GetPrototype(desc)


_Request = _request_class()
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ID_FIELDS and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                _hex_ids(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids(v)


def decode(body):
    """The ExportTraceServiceRequest in body as the OTLP/JSON document:
    camelCase names, ids in hex, 64-bit integers as strings, enums as
    numbers. Raises on anything the protobuf library refuses (bad UTF-8 in
    a string, a truncated message)."""
    msg = _Request()
    msg.ParseFromString(body)
    if msg.ByteSize() != len(body):
        raise ValueError("%d bytes decoded of %d" % (msg.ByteSize(), len(body)))
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _hex_ids(doc)
    return doc
