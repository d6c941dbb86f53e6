"""Decodes OTLP/HTTP protobuf trace exports with the official OpenTelemetry protobuf types
(`opentelemetry-proto`), so Tollgate's hand-written encoder is checked by the real decoder.

Reads file paths (one ExportTraceServiceRequest body each) from OTLP_FILES (separated by
the OS path separator); prints a JSON
list with one object per span: its ids (hex), name, kind, times, status and attributes (each
value as the AnyValue field that carried it: {"string": ...}, {"int": ...}, ...).
"""
import json
import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

spans = []
for path in os.environ["OTLP_FILES"].split(os.pathsep):
    with open(path, "rb") as f:
        req = ExportTraceServiceRequest()
        req.ParseFromString(f.read())
    for rs in req.resource_spans:
        resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                attrs = {}
                for kv in s.attributes:
                    which = kv.value.WhichOneof("value")
                    attrs[kv.key] = {which.replace("_value", ""): getattr(kv.value, which)}
                spans.append({
                    "resource": resource,
                    "scope": {"name": ss.scope.name, "version": ss.scope.version},
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "status": {"code": s.status.code, "message": s.status.message},
                    "attributes": attrs,
                })
print(json.dumps(spans))
