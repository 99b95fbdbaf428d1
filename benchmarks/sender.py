"""A load generator in its own process: POSTs pre-serialized OTLP batches over keep-alive
connections for a fixed time and prints how many events the exporter accepted (JSON)."""

from __future__ import annotations

import http.client
import json
import pickle
import sys
import threading
import time


def main() -> None:
    host, port, seconds, threads, payload_file, events_per_batch = (
        sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
        int(sys.argv[6]))
    with open(payload_file, "rb") as f:
        batches: list[bytes] = pickle.load(f)
    accepted = [0] * threads
    errors = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        i = n
        while time.monotonic() < deadline:
            body = batches[i % len(batches)]
            i += threads
            conn.request("POST", "/v1/logs", body, {"Content-Type": "application/x-protobuf"})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                accepted[n] += events_per_batch
            else:
                errors[n] += 1
        conn.close()

    started = time.monotonic()
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - started
    print(json.dumps({"events": sum(accepted), "errors": sum(errors), "seconds": elapsed}))


if __name__ == "__main__":
    main()
