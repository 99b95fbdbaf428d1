"""Does a listener stall new requests while clients hold connections that send nothing (idle
TCP connections, browsers' pre-connects, slow clients)? For the plain HTTP listener
(waitress) and the TLS one (the TLS front before waitress), with N such connections open,
the time a new request takes, from connect to response. A server that handed each new
connection to a worker thread (cheroot, or a TLS handshake in a worker) would take about its
read timeout once N reaches its thread count. Not a test: nothing here asserts a time.

    python benchmarks/idle_clients.py [--idle 1 8 64 256]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.certs import CA  # noqa: E402
from tests.helpers import free_port, wait_http  # noqa: E402


def request_seconds(port: int, ctx: ssl.SSLContext | None) -> float:
    started = time.perf_counter()
    conn = (http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60) if ctx
            else http.client.HTTPConnection("127.0.0.1", port, timeout=60))
    conn.request("GET", "/-/healthy")
    r = conn.getresponse()
    r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"answered {r.status}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--idle", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "idle-clients.md"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kpi-bench-idle-"))
    ca = CA(tmp / "pki")
    ca.server()
    (tmp / "web.yml").write_text("tls_server_config:\n  cert_file: pki/server.crt\n"
                                 "  key_file: pki/server.key\n")
    rows = []
    for tls in (False, True):
        metrics = free_port()
        args = [sys.executable, "-m", "exporter", "serve", "--otlp-listen",
                f"127.0.0.1:{free_port()}", "--otlp-grpc-listen", "", "--metrics-listen",
                f"127.0.0.1:{metrics}", "--state-dir", str(tmp / f"state-{tls}"),
                "--log-level", "warning"]
        if tls:
            args += ["--web.config.file", str(tmp / "web.yml")]
        proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=str(ca.ca_file)) if tls else None
        try:
            wait_http(f"{'https' if tls else 'http'}://localhost:{metrics}/-/ready", proc=proc,
                      verify=str(ca.ca_file) if tls else True)
            for n in a.idle:
                idle = [socket.create_connection(("127.0.0.1", metrics)) for _ in range(n)]
                time.sleep(0.3)
                seconds = max(request_seconds(metrics, ctx) for _ in range(3))
                for s in idle:
                    s.close()
                label = "TLS front + waitress" if tls else "waitress, plain (baseline)"
                rows.append(f"| {label} | {n} | {seconds * 1000:.1f} ms |")
                print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    report = (f"# New requests while idle connections are open ({time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} cores)\n\n"
              "| listener | idle connections | slowest of 3 new requests |\n|---|---|---|\n"
              + "\n".join(rows) + "\n")
    print(report)
    Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
