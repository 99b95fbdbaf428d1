"""A load generator in its own process for benchmarks/transports.py: sends pre-serialized OTLP
log batches over OTLP/HTTP (keep-alive connections) or OTLP/gRPC (one channel per thread),
plain or TLS, for a fixed time; prints JSON with the requests and events accepted.

    python benchmarks/transport_sender.py http|grpc PORT SECONDS THREADS BATCHES.pickle \\
        EVENTS_PER_BATCH [--ca CA_FILE] [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import pickle
import ssl
import threading
import time

import grpc

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("transport", choices=["http", "grpc"])
    ap.add_argument("port", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("threads", type=int)
    ap.add_argument("batches")
    ap.add_argument("events_per_batch", type=int)
    ap.add_argument("--ca", help="TLS, trusting this CA file")
    ap.add_argument("--gzip", action="store_true")
    a = ap.parse_args()
    with open(a.batches, "rb") as f:
        batches: list[bytes] = pickle.load(f)
    if a.gzip and a.transport == "http":
        batches = [gzip.compress(b) for b in batches]
    ok = [0] * a.threads
    errors = [0] * a.threads
    deadline = time.monotonic() + a.seconds

    def http_worker(n: int) -> None:
        if a.ca:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "localhost", a.port, timeout=30, context=ssl.create_default_context(cafile=a.ca))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf"}
        if a.gzip:
            headers["Content-Encoding"] = "gzip"
        i = n
        while time.monotonic() < deadline:
            conn.request("POST", "/v1/logs", batches[i % len(batches)], headers)
            i += a.threads
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                ok[n] += 1
            else:
                errors[n] += 1
        conn.close()

    def grpc_worker(n: int) -> None:
        compression = grpc.Compression.Gzip if a.gzip else None
        if a.ca:
            with open(a.ca, "rb") as f:
                channel = grpc.secure_channel(f"localhost:{a.port}",
                                              grpc.ssl_channel_credentials(f.read()),
                                              compression=compression)
        else:
            channel = grpc.insecure_channel(f"127.0.0.1:{a.port}", compression=compression)
        call = channel.unary_unary(LOGS, request_serializer=None, response_deserializer=None)
        i = n
        while time.monotonic() < deadline:
            try:
                call(batches[i % len(batches)], timeout=30)
                ok[n] += 1
            except grpc.RpcError:
                errors[n] += 1
            i += a.threads
        channel.close()

    worker = http_worker if a.transport == "http" else grpc_worker
    started = time.monotonic()
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(a.threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - started
    print(json.dumps({"requests": sum(ok), "errors": sum(errors), "seconds": elapsed,
                      "events": sum(ok) * a.events_per_batch}))


if __name__ == "__main__":
    main()
