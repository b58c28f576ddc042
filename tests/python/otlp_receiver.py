"""A small OTLP/gRPC trace receiver, as an OpenTelemetry Collector would
receive procgate's spans: grpcio serving TraceService/Export from the
opentelemetry-proto package.

usage: otlp_receiver.py PORT

Prints "listening" once it serves, then one JSON line per span received:
{"service", "name", "kind", "trace_id", "span_id", "parent_span_id",
 "status", "attributes", "links": [{"trace_id", "span_id"}]}.
"""

import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as rpc
from opentelemetry.proto.trace.v1 import trace_pb2


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(rpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = {
                a.key: value_of(a.value) for a in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "service": resource.get("service.name"),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code),
                        "attributes": {
                            a.key: value_of(a.value) for a in span.attributes
                        },
                        "links": [
                            {"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()}
                            for l in span.links
                        ],
                    }
                    print(json.dumps(line), flush=True)
        return service.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
rpc.add_TraceServiceServicer_to_server(Receiver(), server)
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print("listening", flush=True)
server.wait_for_termination()
