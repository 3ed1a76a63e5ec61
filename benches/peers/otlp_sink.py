#!/usr/bin/env python3
"""An OTLP/gRPC trace collector that accepts and counts spans (for benchmarking tracing).

    python3 benches/peers/otlp_sink.py [--listen 127.0.0.1:4317]

Prints the spans received every 5 s and at exit. Needs `grpcio` and `opentelemetry-proto`
(PyPI), an independent implementation of the collector side.
"""

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = 0
        self.exports = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        n = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
        with self.lock:
            self.spans += n
            self.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:4317")
    args = parser.parse_args()
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(args.listen)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(5):
        print(f"otlp_sink: {sink.spans} spans in {sink.exports} exports", flush=True)
    server.stop(1)
    print(f"otlp_sink: {sink.spans} spans in {sink.exports} exports (final)", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
