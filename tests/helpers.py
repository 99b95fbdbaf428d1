"""Shared test helpers: free ports, a running exporter (in-process or as a real process),
and reading /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App, build
from exporter.config import load_config

ROOT = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and never one this test
    process handed out before: two calls before either port is bound can otherwise get the
    same port from the kernel."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None,
              **kwargs: Any) -> None:
    """Waits until ``url`` answers 200; fails early if ``proc`` died. ``kwargs`` go to
    requests (``verify``, ``auth``)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1, **kwargs).status_code == 200:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def parse_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text as {(sample name, frozenset(labels)): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@dataclass
class Scrape:
    """A parsed /metrics answer with lookups by name and labels."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.samples = parse_samples(self.text)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with exactly these labels, or None."""
        return self.samples.get((name, frozenset(labels.items())))

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return {lab: v for (n, lab), v in self.samples.items() if n == name and want <= lab}


def built(tmp: Path, config_text: str | None = None, **kwargs: Any) -> App:
    """An exporter built (not serving) from ``config_text`` (None: the built-in defaults),
    with its state directory and config file in ``tmp``."""
    path = None
    if config_text is not None:
        path = tmp / f"config-{time.monotonic_ns()}.yaml"
        path.write_text(config_text)
    overrides = {"state_dir": str(tmp / "data")}
    config = load_config(str(path) if path else None, env={}, overrides=overrides)
    return build(config, config_path=str(path) if path else None, config_overrides=overrides,
                 process_metrics=False, **kwargs)


class RunningExporter:
    """An exporter reachable over real HTTP on loopback ports."""

    otlp_url: str
    metrics_url: str
    # the CA file to verify the exporter's certificate with (TLS), and basic auth for the
    # metrics listener
    verify: str | bool = True
    auth: tuple[str, str] | None = None
    cert: tuple[str, str] | None = None

    def scrape(self, **headers: str) -> Scrape:
        r = requests.get(self.metrics_url + "/metrics", headers=headers, timeout=10,
                         verify=self.verify, auth=self.auth, cert=self.cert)
        r.raise_for_status()
        return Scrape(r.text)

    def post(self, signal_path: str, body: bytes, content_type: str = "application/json",
             **headers: str) -> requests.Response:
        return requests.post(self.otlp_url + signal_path, data=body,
                             headers={"Content-Type": content_type, **headers}, timeout=10,
                             verify=self.verify, cert=self.cert)


class InProcessExporter(RunningExporter):
    """The real exporter (composition root, pipeline, waitress listeners, state directory),
    in this process: fast to start."""

    def __init__(self, config_text: str | None = None, tmp: Path | None = None,
                 verify: str | bool = True, auth: tuple[str, str] | None = None,
                 cert: tuple[str, str] | None = None, lifecycle: bool = False):
        self.verify, self.auth, self.cert = verify, auth, cert
        self._dir = tempfile.TemporaryDirectory() if tmp is None else None
        tmp = Path(self._dir.name) if self._dir else tmp
        assert tmp is not None
        self.config_path: str | None = None
        if config_text is not None:
            self.config_path = str(tmp / "config.yaml")
            Path(self.config_path).write_text(config_text)
        self.otlp_port, self.metrics_port = free_port(), free_port()
        self.grpc_port = free_port()
        overrides = {"otlp_listen": f"127.0.0.1:{self.otlp_port}",
                     "otlp_grpc_listen": f"127.0.0.1:{self.grpc_port}",
                     "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                     "state_dir": str(tmp / "data")}
        if lifecycle:  # as --web.enable-lifecycle: POST /-/reload on, whatever the file says
            overrides["enable_lifecycle"] = True
        config = load_config(self.config_path, env={}, overrides=overrides)
        self.app = build(config, config_path=self.config_path, config_overrides=overrides,
                         process_metrics=False)
        self.pipeline = self.app.pipeline
        self.app.start()
        scheme = "https" if self.app.tls is not None else "http"
        self.otlp_url = f"{scheme}://127.0.0.1:{self.otlp_port}"
        self.metrics_url = f"{scheme}://127.0.0.1:{self.metrics_port}"
        wait_http(self.metrics_url + "/-/ready", verify=verify, auth=auth, cert=cert)

    def close(self) -> None:
        self.app.stop()
        if self._dir:
            self._dir.cleanup()


class ProcessExporter(RunningExporter):
    """``kpi-exporter serve`` as a real child process."""

    def __init__(self, args: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, otlp_port: int | None = None,
                 metrics_port: int | None = None, grpc_port: int | None = None,
                 scheme: str = "http", verify: str | bool = True,
                 auth: tuple[str, str] | None = None, cert: tuple[str, str] | None = None):
        self.verify, self.auth, self.cert = verify, auth, cert
        self.otlp_port = otlp_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.otlp_url = f"{scheme}://127.0.0.1:{self.otlp_port}"
        self.metrics_url = f"{scheme}://127.0.0.1:{self.metrics_port}"
        cmd = [sys.executable, "-m", "exporter", "serve",
               "--otlp-listen", f"127.0.0.1:{self.otlp_port}",
               "--otlp-grpc-listen", f"127.0.0.1:{self.grpc_port}",
               "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *(args or [])]
        self.log_path = Path(tempfile.mkstemp(prefix="kpi-exporter-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        # Its own working directory, so that the default state directory (./data) never
        # carries counts from one test's exporter into the next.
        self._home = tempfile.TemporaryDirectory(prefix="kpi-exporter-cwd-")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=cwd or self._home.name)
        try:
            wait_http(self.metrics_url + "/-/ready", proc=self.proc, verify=verify, auth=auth,
                      cert=cert)
        except Exception:
            self.close()
            raise RuntimeError(f"exporter did not start:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._home.cleanup()
        return int(self.proc.returncode)


def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Retries ``check()`` until it returns a truthy value (which is returned) or time is up;
    for state that changes after a background action, never as a performance assertion."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)



