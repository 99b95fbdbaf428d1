"""The README Quickstart, as written, from a fresh clone: `make run` creates the virtualenv,
installs the package and serves; /metrics answers and the README's example event shows up
there as the README says it will.

The exporter `make run` starts listens on free loopback ports given through its
KPI_EXPORTER_*_LISTEN variables, and the README's commands are run with those ports in place
of 4318 and 9464: a developer's own exporter on the default ports is neither hit nor in the
way. That the defaults are the ports the README names is checked against the code's
defaults and `serve --help` (test_readme_ports_are_the_defaults).

Slow by nature (a new virtualenv and a full install every time: reusing one would not show
that a fresh clone works).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from mixin.config import CONFIG
from tests.helpers import ROOT, free_port, wait_http
from tests.test_mixin_promtool import tool

README = ROOT / "README.md"
INSTALL_AND_START = 1200  # seconds: venv + pip install of every dependency, on a slow day


def quickstart_blocks() -> list[list[str]]:
    """The shell blocks of the README's Quickstart section, as lists of lines."""
    text = README.read_text("utf-8")
    m = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Quickstart' section"
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", m.group(1), re.S)
    return [b.strip("\n").splitlines() for b in blocks]


def command_of(line: str) -> str:
    """A README line without its trailing comment."""
    return re.sub(r"\s+#.*$", "", line).strip()


# The README's ports, by what they serve.
README_PORTS = {"otlp_grpc_listen": 4317, "otlp_listen": 4318, "metrics_listen": 9464}


def test_readme_ports_are_the_defaults():
    from exporter.config import load_config
    defaults = load_config(None, env={}).server
    for key, port in README_PORTS.items():
        assert getattr(defaults, key) == f"0.0.0.0:{port}", key
    text = README.read_text("utf-8")
    quickstart = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    assert "OTLP on :4317 (gRPC) and :4318 (HTTP), metrics on :9464" in quickstart
    assert "localhost:4318/v1/logs" in quickstart and "localhost:9464/metrics" in quickstart
    help_text = subprocess.run([sys.executable, "-m", "exporter", "serve", "--help"],
                               capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    for port in README_PORTS.values():
        assert f"default 0.0.0.0:{port}" in help_text


def on_test_ports(command: str, ports: dict[str, int]) -> str:
    """A README command with the test's ports in place of the default ones."""
    for key, port in README_PORTS.items():
        command = re.sub(rf"(?<=:){port}\b", str(ports[key]), command)
    return command


@pytest.mark.timeout(INSTALL_AND_START + 300)
def test_readme_quickstart_from_a_fresh_clone(tmp_path: Path):
    blocks = quickstart_blocks()
    setup = [command_of(line) for line in blocks[0] if command_of(line)]
    assert setup == ["make run", "make test"], setup
    ports = {key: free_port() for key in README_PORTS}
    metrics = f"http://127.0.0.1:{ports['metrics_listen']}"

    clone = tmp_path / "kpi-exporter"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()

    # A fresh shell: nothing of the test run's own environment leaks into the install.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
           and not k.startswith(("PYTEST_", "KPI_EXPORTER_"))}
    serve_env = {**env, **{f"KPI_EXPORTER_{key.upper()}": f"127.0.0.1:{port}"
                           for key, port in ports.items()}}
    log_path = tmp_path / "make-run.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=serve_env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            try:
                wait_http(f"{metrics}/-/ready", timeout=INSTALL_AND_START, proc=proc)
            except (TimeoutError, RuntimeError) as exc:
                pytest.fail(f"`make run` did not serve: {exc}\n"
                            f"{log_path.read_text(errors='replace')[-5000:]}")
            ready_after = time.monotonic() - started
            print(f"make run in a fresh clone: serving after {ready_after:.0f}s")
            assert (clone / ".venv" / "bin" / "kpi-exporter").exists()

            served = requests.get(f"{metrics}/metrics", timeout=10)
            assert served.status_code == 200
            assert "kpi_exporter_build_info" in served.text
            log_text = log_path.read_text(errors="replace")
            for key, port in ports.items():
                assert f"127.0.0.1:{port}" in log_text, (key, log_text[-3000:])

            # "Then send an event and see it": the README's commands, and its promised output.
            see = blocks[1]
            commands = [on_test_ports(line, ports) for line in see
                        if line.strip() and not line.startswith("#")]
            promised = [line.lstrip("# ").strip() for line in see if line.startswith("# ")]
            assert commands and promised, see
            out = subprocess.run(["bash", "-c", "set -e\n" + "\n".join(commands)], cwd=clone,
                                 env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            for line in promised:
                assert line in out.stdout.splitlines(), (line, out.stdout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # make and the exporter it started
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# ---- "Five minutes to a dashboard with numbers" -------------------------------------------

def five_minutes_commands() -> list[str]:
    """The commands of the README's five-minutes section, in order."""
    text = README.read_text("utf-8")
    m = re.search(r"^## Five minutes to a dashboard with numbers\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Five minutes to a dashboard with numbers' section"
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), re.S)
    return [command_of(line) for b in blocks for line in b.splitlines() if command_of(line)]


def the_command(commands: list[str], start: str) -> list[str]:
    found = [c for c in commands if c.startswith(start)]
    assert len(found) == 1, f"README's five-minutes section should have one '{start}...': {found}"
    return shlex.split(found[0])


def as_unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run as the user nobody when the tests run as root: the README promises that
    no step needs root."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *cmd]


def test_readme_five_minutes_steps_work_as_written_and_give_last_week(tmp_path):
    commands = five_minutes_commands()
    assert commands[:3] == ["make run",
                            ".venv/bin/kpi-exporter demo --backfill 7d --duration 60s --rate 200",
                            ".venv/bin/kpi-exporter demo --duration 10m"], commands

    # A working directory the unprivileged user owns, holding what the commands read.
    work = Path(tempfile.mkdtemp(prefix="kpi-five-minutes-"))
    servers: list[subprocess.Popen[bytes]] = []
    am_port = free_port()
    try:
        for d in ("prometheus", "alerts"):
            shutil.copytree(ROOT / d, work / d)
        # The shipped config scrapes localhost:9464 and alerts localhost:9093: on a
        # developer's machine those may be their own exporter and Alertmanager. The test's
        # Prometheus scrapes a port nothing listens on and alerts the test's Alertmanager.
        shipped = work / "prometheus" / "prometheus.yml"
        config = yaml.safe_load(shipped.read_text())
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{free_port()}"]}]
        config["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{am_port}"]}]
        shipped.write_text(yaml.safe_dump(config, sort_keys=False))
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(work)], check=True)

        history = the_command(commands, ".venv/bin/kpi-exporter demo --openmetrics")
        # the installed command, as this user (the virtualenv may not be readable by nobody)
        cmd = [sys.executable, "-m", "exporter", *history[1:]]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "promtool tsdb create-blocks-from openmetrics" in r.stdout
        om = work / history[history.index("--openmetrics") + 1]
        assert om.read_text().endswith("# EOF\n")
        os.chmod(om, 0o644)

        promtool = the_command(commands, "promtool tsdb create-blocks-from openmetrics")
        r = subprocess.run(as_unprivileged([tool("promtool"), *promtool[1:]]), cwd=work,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr

        prometheus = the_command(commands, "prometheus --config.file=")
        storage = next(a for a in prometheus if a.startswith("--storage.tsdb.path="))
        assert not storage.split("=", 1)[1].startswith("/var/lib"), storage
        assert storage.split("=", 1)[1] == promtool[-1], "promtool must write where Prometheus reads"
        port = free_port()
        log = open(work.parent / f"{work.name}-prometheus.log", "wb")
        servers.append(subprocess.Popen(
            as_unprivileged([tool("prometheus"), *prometheus[1:],
                             f"--web.listen-address=127.0.0.1:{port}"]),
            cwd=work, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/-/ready", timeout=60, proc=servers[-1])

        # The Business KPIs dashboard's week-over-week panels, as Grafana would ask them.
        business = json.loads((ROOT / "grafana/dashboards/kpi-business.json").read_text())
        offset_panels = {p["title"]: t["expr"] for p in business["panels"]
                         for t in p.get("targets", []) if "offset 1w" in t.get("expr", "")}
        assert len(offset_panels) >= 3, offset_panels
        now = time.time()
        for title, expr in offset_panels.items():
            q = expr.replace("$job", "kpi-exporter").replace("$instance", ".+")
            answer = requests.get(url + "/api/v1/query", params={"query": q, "time": now},
                                  timeout=30).json()
            assert answer["status"] == "success", (title, answer)
            result = answer["data"]["result"]
            assert len(result) == 1 and math.isfinite(float(result[0]["value"][1])), (title, result)
            # the last-week curve over the dashboard's 7 days, one point an hour, without a gap
            last_week = re.search(r"(?:sum|avg|max)\([^()]*offset 1w\)", q)
            assert last_week, q
            curve = requests.get(url + "/api/v1/query_range", params={
                "query": last_week.group(0), "start": now - 7 * 86400, "end": now,
                "step": 3600}, timeout=30).json()["data"]["result"]
            assert len(curve) == 1 and len(curve[0]["values"]) == 7 * 24 + 1, (title, curve)
        dau_last_week = requests.get(url + "/api/v1/query", params={
            "query": 'max(app_active_users{job="kpi-exporter",window="1d"} offset 1w)',
            "time": now}, timeout=30).json()["data"]["result"]
        assert 0 < float(dau_last_week[0]["value"][1]) <= 200

        alertmanager = the_command(commands, "prometheus-alertmanager")
        am_storage = next(a for a in alertmanager if a.startswith("--storage.path="))
        assert not am_storage.split("=", 1)[1].startswith("/var/lib"), am_storage
        am_log = open(work.parent / f"{work.name}-alertmanager.log", "wb")
        servers.append(subprocess.Popen(
            as_unprivileged([tool("prometheus-alertmanager"), *alertmanager[1:],
                             f"--web.listen-address=127.0.0.1:{am_port}",
                             "--cluster.listen-address="]),
            cwd=work, stdout=am_log, stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{am_port}/-/ready", timeout=60, proc=servers[-1])
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        for leftover in work.parent.glob(f"{work.name}-*.log"):
            leftover.unlink()


def test_readme_grafana_command_matches_the_provisioning():
    docker = [part for arg in the_command(five_minutes_commands(), "docker run")
              for part in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])]
    mounts = dict(docker[i + 1].replace("$PWD/", "").rsplit(":", 1)[0].split(":", 1)
                  for i, a in enumerate(docker) if a == "-v")
    assert mounts == {"grafana/provisioning": "/etc/grafana/provisioning",
                      "grafana/dashboards": CONFIG.grafana_dashboards_path}, mounts
    for source in mounts:
        assert (ROOT / source).is_dir()
    env = dict(docker[i + 1].split("=", 1) for i, a in enumerate(docker) if a == "-e")
    hosts = [docker[i + 1] for i, a in enumerate(docker) if a == "--add-host"]
    datasource = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/kpi-exporter.yaml").read_text())["datasources"][0]
    # Grafana expands $VAR / ${VAR} in provisioning files from its environment (os.ExpandEnv)
    url = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), datasource["url"])
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.port == 9090, (datasource["url"], env)
    assert parts.hostname not in ("localhost", "127.0.0.1"), \
        "inside the container localhost is Grafana itself"
    assert parts.hostname == "host.docker.internal" and \
        "host.docker.internal:host-gateway" in hosts, "Linux Docker needs --add-host for it"
    assert "-p" in docker and "3000:3000" in docker
