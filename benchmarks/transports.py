"""OTLP transports in one run: OTLP/HTTP plain (waitress, the baseline), OTLP/HTTP with TLS
(the TLS front before waitress), OTLP/gRPC plain and with TLS, and gRPC with gzip. Each is a
real `kpi-exporter serve` fed 512-event log batches by 2 client connections from another
process; rounds alternate the order. Reported: median requests/s and events/s, and the
exporter's CPU time per request (user + system of the process, from /proc), steadier than
requests/s on a shared machine. Not a test: nothing here asserts a time.

    python benchmarks/transports.py [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.payloads import make_batches  # noqa: E402
from tests.certs import CA  # noqa: E402
from tests.helpers import free_port, wait_http  # noqa: E402

BATCH = 512
# name -> (transport, TLS, gzip)
CONFIGS = {
    "HTTP, plain (baseline)": ("http", False, False),
    "HTTP, TLS": ("http", True, False),
    "gRPC, plain": ("grpc", False, False),
    "gRPC, TLS": ("grpc", True, False),
    "gRPC, plain, gzip": ("grpc", False, True),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(name: str, batches: str, ca: CA, web: Path, seconds: float,
            threads: int) -> tuple[float, float, float]:
    transport, tls, compress = CONFIGS[name]
    otlp, grpc_port, metrics = free_port(), free_port(), free_port()
    state = tempfile.mkdtemp(prefix="kpi-bench-transport-")
    args = [sys.executable, "-m", "exporter", "serve", "--otlp-listen", f"127.0.0.1:{otlp}",
            "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}", "--metrics-listen",
            f"127.0.0.1:{metrics}", "--state-dir", state, "--log-level", "warning"]
    if tls:
        args += ["--web.config.file", str(web)]
    proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        scheme = "https" if tls else "http"
        wait_http(f"{scheme}://localhost:{metrics}/-/ready", proc=proc,
                  verify=str(ca.ca_file) if tls else True)
        port = otlp if transport == "http" else grpc_port
        cmd = [sys.executable, str(ROOT / "benchmarks" / "transport_sender.py"), transport,
               str(port), "{seconds}", str(threads), batches, str(BATCH)]
        if tls:
            cmd += ["--ca", str(ca.ca_file)]
        if compress:
            cmd.append("--gzip")
        subprocess.run([c.replace("{seconds}", "1") for c in cmd], check=True,
                       capture_output=True)  # warm up: connections, caches, rule lookups
        cpu = cpu_seconds(proc.pid)
        out = json.loads(subprocess.run([c.replace("{seconds}", str(seconds)) for c in cmd],
                                        check=True, capture_output=True, text=True).stdout)
        cpu = cpu_seconds(proc.pid) - cpu
        if out["errors"]:
            raise RuntimeError(f"{name}: {out['errors']} requests failed")
        return (out["requests"] / out["seconds"], out["events"] / out["seconds"],
                cpu * 1000 / max(out["requests"], 1))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transports.md"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kpi-bench-tls-"))
    ca = CA(tmp / "pki")
    ca.server()
    web = tmp / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n")
    batches = tmp / "batches.pickle"
    batches.write_bytes(pickle.dumps(make_batches(16, BATCH)))

    rps: dict[str, list[float]] = {n: [] for n in CONFIGS}
    eps: dict[str, list[float]] = {n: [] for n in CONFIGS}
    cpu: dict[str, list[float]] = {n: [] for n in CONFIGS}
    for r in range(a.rounds):
        for name in (list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))):
            x, e, ms = run_one(name, str(batches), ca, web, a.seconds, a.threads)
            rps[name].append(x)
            eps[name].append(e)
            cpu[name].append(ms)
            print(f"round {r} {name:24} {x:7.1f} req/s {e:9,.0f} events/s {ms:6.2f} CPU ms/req",
                  flush=True)
    base = statistics.median(cpu["HTTP, plain (baseline)"])
    lines = [
        f"# OTLP transports ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, {a.rounds} rounds of {a.seconds:g}s, "
        f"{a.threads} client connections, {BATCH}-event batches)",
        "",
        "| transport | median requests/s | median events/s | requests/s per round | "
        "exporter CPU ms per request (median) | CPU vs HTTP plain |",
        "|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        m = statistics.median(cpu[name])
        lines.append(f"| {name} | {statistics.median(rps[name]):.0f} | "
                     f"{statistics.median(eps[name]):,.0f} | "
                     f"{', '.join(f'{x:.0f}' for x in rps[name])} | {m:.2f} | {m / base:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
