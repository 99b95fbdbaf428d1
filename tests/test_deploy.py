"""The deployment artifacts agree with the code they deploy: the Kubernetes manifest, the
systemd units, the container recipe and the Collector configs name flags, ports, paths,
variables and files that exist, and the image's build context builds the package."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.cli import build_parser
from exporter.config import ConfigError, load_config, parse_listen
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
EXPORTER_SOURCE = "\n".join(p.read_text() for p in (ROOT / "exporter").rglob("*.py"))


def manifest() -> dict[str, list[dict[str, Any]]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "kpi-exporter.yaml").read_text())
            if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def test_kubernetes_manifest_is_consistent_with_the_exporter(tmp_path, exporter):
    k = manifest()
    assert {kind: len(v) for kind, v in k.items()} == {
        "ConfigMap": 1, "StatefulSet": 1, "Service": 2, "ServiceMonitor": 1}
    sts = k["StatefulSet"][0]
    pod = sts["spec"]["template"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]

    # the config the ConfigMap ships is valid, and is the file the container reads
    config_path = tmp_path / "config.yaml"
    config_path.write_text(k["ConfigMap"][0]["data"]["config.yaml"])
    config = load_config(str(config_path), env={})
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.config == f"{mounts['config']}/config.yaml"
    assert args.state_dir == mounts["state"]

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"otlp-grpc": parse_listen(config.server.otlp_grpc_listen)[1],
                     "otlp-http": parse_listen(config.server.otlp_listen)[1],
                     "metrics": parse_listen(config.server.metrics_listen)[1]}
    # probes point at endpoints a running exporter answers on its metrics port
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "metrics"
        assert requests.get(exporter.metrics_url + get["path"], timeout=5).status_code == 200
    # every variable the pod sets is one the exporter reads
    for env in container["env"]:
        assert env["name"] in EXPORTER_SOURCE, env["name"]
    # several replicas share their KPI windows: a store and one salt from the Secret, and
    # the config is valid with them
    assert sts["spec"]["replicas"] > 1
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {"KPI_EXPORTER_SALT", "KPI_EXPORTER_WINDOWS_STORE"} <= set(secrets)
    shared = load_config(str(config_path), env={"KPI_EXPORTER_SALT": "s" * 32,
                                                "KPI_EXPORTER_WINDOWS_STORE": "redis://r:6379/0"})
    assert shared.windows.shared and shared.windows.redis_prefix
    with pytest.raises(ConfigError, match="KPI_EXPORTER_SALT"):
        load_config(str(config_path), env={"KPI_EXPORTER_WINDOWS_STORE": "redis://r:6379/0"})

    # Services route to named container ports; the ServiceMonitor scrapes exactly one of them
    for svc in k["Service"]:
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
    monitor = k["ServiceMonitor"][0]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = [s for s in k["Service"] if wanted <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in scraped] == ["kpi-exporter"]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in scraped[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    headless = next(s for s in k["Service"] if s["spec"].get("clusterIP") == "None")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("unit", ["kpi-exporter.service", "kpi-exporter@.service"])
def test_systemd_units_verify_and_run_a_valid_command(unit: str, tmp_path: Path):
    path = DEPLOY / "systemd" / unit
    settings = unit_settings(path)
    # the template's instance name is its metrics port
    command = shlex.split(settings["ExecStart"][0].replace("%i", "9465"))
    assert command[0] == "/opt/kpi-exporter/bin/kpi-exporter"
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve" and args.config
    if "@" in unit:
        # instances share the OTLP port and the windows, each with its own metrics port
        assert args.reuse_port and parse_listen(args.metrics_listen)[1] == 9465
        assert "%i" in settings["StateDirectory"][0]
    state_dir = settings["Environment"][0].partition("KPI_EXPORTER_STATE_DIR=")[2]
    assert state_dir == "/var/lib/" + settings["StateDirectory"][0]
    assert "KPI_EXPORTER_STATE_DIR" in EXPORTER_SOURCE

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/install-system-deps.sh installs it"
    # verify needs the binary to exist: point it at one that does, keep everything else
    checked = tmp_path / unit
    checked.write_text(path.read_text().replace("/opt/kpi-exporter/bin/kpi-exporter", "/bin/true"))
    target = checked if "@" not in unit else tmp_path / unit.replace("@", "@1")
    out = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_container_recipe_builds_the_package_from_its_build_context(tmp_path: Path):
    steps = dockerfile_instructions()
    copies = [rest.split() for word, rest in steps if word == "COPY" and "--from" not in rest]
    context = tmp_path / "context"
    context.mkdir()
    for *sources, _dest in copies:
        for src in sources:
            origin = ROOT / src
            assert origin.exists(), f"the Dockerfile copies {src}, which does not exist"
            if origin.is_dir():
                shutil.copytree(origin, context / src,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, context / src)
    # what `pip install .` in the image does, from only what the image copies
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                          "-w", str(wheels), str(context)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(wheels.glob("kpi_exporter-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"exporter/cli.py", "exporter/sdk.py", "exporter/defaults/rules.yaml",
            "exporter/py.typed"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)

    env = dict(kv.split("=", 1) for word, rest in steps if word == "ENV"
               for kv in rest.split())
    assert env["KPI_EXPORTER_STATE_DIR"] in next(rest for word, rest in steps if word == "VOLUME")
    assert set(next(rest for word, rest in steps if word == "EXPOSE").split()) == {
        "4317", "4318", "9464"}
    entry = yaml.safe_load(next(rest for word, rest in steps if word == "ENTRYPOINT"))
    cmd = yaml.safe_load(next(rest for word, rest in steps if word == "CMD"))
    assert entry == ["kpi-exporter"]
    assert build_parser().parse_args(cmd).command == "serve"
    health = next(rest for word, rest in steps if word == "HEALTHCHECK")
    assert re.search(r"127\.0\.0\.1:9464/-/healthy", health)


def test_collector_gateway_forwards_everything_to_the_exporters_without_routing():
    cfg = yaml.safe_load((DEPLOY / "collector" / "otelcol-gateway.yaml").read_text())
    for pipeline in cfg["service"]["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in cfg[section], f"{component} is not defined"
    pipelines = cfg["service"]["pipelines"]
    assert set(pipelines) == {"logs", "traces", "metrics"}
    # plain OTLP/HTTP to the exporters' Service: no per-user routing, no load-balancing
    # exporter (it routes log records by trace id, not by attribute)
    assert not any(e.startswith("loadbalancing") for e in cfg["exporters"])
    config = load_config(None, env={})
    service = next(s for s in manifest()["Service"] if s["metadata"]["name"] == "kpi-exporter")
    for name in {e for p in pipelines.values() for e in p["exporters"]}:
        endpoint = cfg["exporters"][name]["endpoint"]
        assert name.startswith("otlphttp")
        assert endpoint.startswith(f"http://{service['metadata']['name']}.")
        assert endpoint.endswith(f":{parse_listen(config.server.otlp_listen)[1]}")
    # cumulative streams become deltas, which any replica can add up
    assert "cumulativetodelta" in pipelines["metrics"]["processors"]


def test_collector_recipe_sends_only_events_and_genai_next_to_existing_pipelines():
    path = DEPLOY / "collector" / "otelcol-events-to-kpi-exporter.yaml"
    cfg = yaml.safe_load(path.read_text())
    pipelines = cfg["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in cfg[section], f"{name}: {component} is not defined"
    # the filter processor's documented shape: error_mode and OTTL conditions per context
    kpi = {name: p for name, p in pipelines.items() if "otlphttp/kpi_exporter" in p["exporters"]}
    assert set(kpi) == {"logs/kpi", "traces/kpi", "metrics/kpi"}
    events = cfg["processors"][kpi["logs/kpi"]["processors"][0]]
    spans = cfg["processors"][kpi["traces/kpi"]["processors"][0]]
    points = cfg["processors"][kpi["metrics/kpi"]["processors"][0]]
    assert set(events) == {"error_mode", "logs"} and list(events["logs"]) == ["log_record"]
    assert set(spans) == {"error_mode", "traces"} and list(spans["traces"]) == ["span"]
    assert set(points) == {"error_mode", "metrics"} and list(points["metrics"]) == ["metric"]
    # what is kept is what kpi-exporter reads: the event name field or its deprecated
    # attribute, and the attribute the built-in GenAI span rules require
    drop_non_events = events["logs"]["log_record"]
    assert drop_non_events == ['event_name == "" and attributes["event.name"] == nil']
    config = load_config(None, env={})
    span_rules = [r for r in config.rules if r.signal == "span"]
    assert span_rules and all(
        any(key == "gen_ai.operation.name" and text == "it to exist"
            for key, text, _p in r.conditions) for r in span_rules)
    assert spans["traces"]["span"] == ['attributes["gen_ai.operation.name"] == nil']
    metric_rules = [r for r in config.rules if r.signal == "metric"]
    assert metric_rules and all((r.name_exact or "").startswith("gen_ai.") for r in metric_rules)
    assert points["metrics"]["metric"] == ['not IsMatch(name, "^gen_ai[.]")']
    # the user's own pipelines keep every record: no kpi filter there
    for name in ("logs", "traces", "metrics"):
        assert not any(p.startswith("filter/") for p in pipelines[name].get("processors", []))
        assert "otlphttp/kpi_exporter" not in pipelines[name]["exporters"]
    forward = cfg["exporters"]["otlphttp/kpi_exporter"]["endpoint"]
    assert forward.endswith(f":{parse_listen(config.server.otlp_listen)[1]}")
    assert not forward.endswith(("/v1/logs", "/v1/traces"))  # otlphttp adds the paths


def test_sending_doc_shows_the_shipped_collector_recipe():
    doc = (ROOT / "docs" / "sending.md").read_text()
    shown = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, re.S)]
    assert len(shown) == 1
    recipe = yaml.safe_load((DEPLOY / "collector" / "otelcol-events-to-kpi-exporter.yaml")
                            .read_text())
    for section in ("processors", "exporters"):
        for name, body in shown[0][section].items():
            shipped = recipe[section][name]
            assert {k: shipped[k] for k in body} == body, (section, name)
    for name, pipeline in shown[0]["service"]["pipelines"].items():
        assert recipe["service"]["pipelines"][name] == pipeline
    assert "otelcol-events-to-kpi-exporter.yaml" in doc
