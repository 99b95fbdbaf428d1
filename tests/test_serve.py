"""The serve command as a user runs it: exposition formats, the landing page, health,
reload by HTTP and by SIGHUP, graceful stop, and explain."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from prometheus_client import CollectorRegistry

import exporter.app
from exporter.config import ConfigError, load_config
from tests.helpers import ROOT, eventually, free_port

PAGE_VIEW = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"eventName": "app.page_view",
     "attributes": [{"key": "url.path", "value": {"stringValue": "/home"}}]}]}]}]}).encode()

CUSTOM = """
rules:
  - metric: app_signups_total
    type: counter
    help: Sign-ups.
    match: {signal: log, name: app.signup}
    labels: {plan: app.plan}
"""


# POST /-/reload is off unless enabled, as Prometheus' lifecycle API is.
LIFECYCLE = "server: {enable_lifecycle: true}\n"


def signup(plan="pro"):
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "app.signup",
         "attributes": [{"key": "app.plan", "value": {"stringValue": plan}}]}]}]}]}).encode()


def test_openmetrics_and_gzip_negotiation(exporter):
    exporter.post("/v1/logs", PAGE_VIEW)
    r = requests.get(exporter.metrics_url + "/metrics", timeout=5,
                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    assert "# TYPE app_page_views counter" in r.text
    assert 'app_page_views_total{route="/home",service_name="unknown_service"} 1.0' in r.text
    r = requests.get(exporter.metrics_url + "/metrics", timeout=5, stream=True,
                     headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"
    assert b"app_page_views_total" in gzip.decompress(r.raw.read())
    plain = requests.get(exporter.metrics_url + "/metrics", timeout=5)
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_landing_page_health_and_readiness(exporter):
    page = requests.get(exporter.metrics_url + "/", timeout=5)
    assert page.status_code == 200 and 'href="/metrics"' in page.text
    assert "app_page_views_total" in page.text and "built-in defaults" in page.text
    assert requests.get(exporter.metrics_url + "/-/healthy", timeout=5).status_code == 200
    assert requests.get(exporter.metrics_url + "/-/ready", timeout=5).status_code == 200


def test_self_metrics_are_exposed(exporter):
    exporter.post("/v1/logs", PAGE_VIEW)
    exporter.post("/v1/logs", b"{", "application/json")
    s = exporter.scrape()
    assert s.value("kpi_exporter_requests_total", transport="http", signal="log", code="200") == 1
    assert s.value("kpi_exporter_requests_total", transport="http", signal="log", code="400") == 1
    assert s.value("kpi_exporter_request_duration_seconds_count", transport="http", signal="log") == 2
    assert s.value("kpi_exporter_metric_series", metric="app_page_views_total") == 1
    assert s.value("kpi_exporter_metric_series_limit", metric="app_page_views_total") == 2000
    assert s.matching("kpi_exporter_build_info")


def test_reload_over_http_keeps_unchanged_series_and_refuses_a_broken_config(exporter_factory):
    e = exporter_factory(LIFECYCLE + CUSTOM)
    e.post("/v1/logs", signup())
    e.post("/v1/logs", PAGE_VIEW)
    assert e.config_path is not None
    with open(e.config_path, "a") as f:
        f.write("""  - metric: app_logins_total
    type: counter
    match: {signal: log, name: app.login}
""")
    r = requests.post(e.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 200, r.text
    e.post("/v1/logs", signup())
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 2
    assert s.value("app_page_views_total", route="/home", service_name="unknown_service") == 1
    assert s.value("kpi_exporter_config_reloads_total", outcome="success") == 1
    with open(e.config_path, "a") as f:
        f.write("  - metric: broken\n")
    r = requests.post(e.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 400 and "broken" in r.text
    e.post("/v1/logs", signup())
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 3
    assert s.value("kpi_exporter_config_reloads_total", outcome="failure") == 1
    assert s.value("kpi_exporter_config_last_reload_successful") == 0


def test_reload_drops_series_whose_labels_changed(exporter_factory):
    e = exporter_factory(LIFECYCLE + CUSTOM)
    e.post("/v1/logs", signup())
    assert e.config_path is not None
    with open(e.config_path, "w") as f:
        f.write(LIFECYCLE + CUSTOM.replace("labels: {plan: app.plan}", "labels: {tier: app.plan}"))
    assert requests.post(e.metrics_url + "/-/reload", timeout=5).status_code == 200
    e.post("/v1/logs", signup())
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") is None
    assert s.value("app_signups_total", tier="pro") == 1


def test_reload_over_http_is_off_unless_the_lifecycle_api_is_enabled(exporter_factory):
    e = exporter_factory(CUSTOM)
    r = requests.post(e.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == ("Lifecycle API is not enabled: start the exporter with "
                      "--web.enable-lifecycle (or server.enable_lifecycle: true, or "
                      "KPI_EXPORTER_WEB_ENABLE_LIFECYCLE=true) to reload with POST /-/reload, "
                      "or send it SIGHUP.\n")
    s = e.scrape()
    assert s.value("kpi_exporter_config_reloads_total", outcome="success") == 0
    assert s.value("kpi_exporter_config_reloads_total", outcome="failure") == 0
    assert "SIGHUP reloads" in requests.get(e.metrics_url + "/", timeout=5).text


@pytest.mark.parametrize("how", [("--web.enable-lifecycle",), ()], ids=["flag", "env"])
def test_the_lifecycle_api_is_enabled_by_flag_or_environment(process_factory, how):
    env = {} if how else {"KPI_EXPORTER_WEB_ENABLE_LIFECYCLE": "true"}
    e = process_factory(*how, env=env)
    r = requests.post(e.metrics_url + "/-/reload", timeout=10)
    assert r.status_code == 200, r.text
    assert r.text.startswith("config reloaded from built-in defaults")


def test_lifecycle_settings_precedence_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server: {enable_lifecycle: true}\n")
    assert load_config(str(path), env={}).server.enable_lifecycle
    assert not load_config(str(path), env={"KPI_EXPORTER_WEB_ENABLE_LIFECYCLE": "false"}
                           ).server.enable_lifecycle
    assert load_config(None, env={"KPI_EXPORTER_WEB_ENABLE_LIFECYCLE": "false"},
                       overrides={"enable_lifecycle": True}).server.enable_lifecycle
    assert not load_config(None, env={}).server.enable_lifecycle
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"KPI_EXPORTER_WEB_ENABLE_LIFECYCLE": "sure"})
    assert err.value.problems == ["KPI_EXPORTER_WEB_ENABLE_LIFECYCLE: expected true or false, "
                                  "got 'sure'"]
    path.write_text("server: {enable_lifecycle: yes please}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [f"{path}:1: server.enable_lifecycle: expected true or false, "
                                  f"got 'yes please'"]


def test_on_a_shared_port_reload_over_http_is_never_reachable_by_senders(process_factory,
                                                                          tmp_path):
    port = free_port()
    e = process_factory(otlp_port=port, metrics_port=port)  # one listener for both
    assert e.post("/v1/logs", PAGE_VIEW).status_code == 200
    assert requests.post(e.otlp_url + "/-/reload", timeout=5).status_code == 403
    # enabling it there is refused at start: whoever can send could reload
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{otlp_listen: '127.0.0.1:{port}', "
                      f"metrics_listen: '127.0.0.1:{port}', enable_lifecycle: true}}\n")
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(config),
                        "--otlp-grpc-listen", ""], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert (f"{config}:1: server.enable_lifecycle: the OTLP receiver and the metrics listener "
            f"share 127.0.0.1:{port}, so whoever can send could reload the config; give "
            f"server.metrics_listen a port of its own, or leave the lifecycle API off and "
            f"reload with SIGHUP") in r.stderr


def test_the_reload_answer_names_the_settings_that_need_a_restart(exporter_factory):
    e = exporter_factory(LIFECYCLE + CUSTOM)
    assert e.config_path is not None
    with open(e.config_path, "w") as f:
        f.write("server: {enable_lifecycle: true, threads: 3}\nstate: {interval: 10s}\n"
                + CUSTOM)
    r = requests.post(e.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 200
    assert r.text.endswith("; restart to apply: server.threads, state\n"), r.text


def test_reloads_run_one_at_a_time(exporter_factory, monkeypatch):
    e = exporter_factory(LIFECYCLE + CUSTOM)
    loading, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_load = exporter.app.load_config

    def slow_load(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 1:
            loading.set()
            release.wait(20)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(exporter.app, "load_config", slow_load)
    answers: list[int] = []
    over_http = threading.Thread(target=lambda: answers.append(
        requests.post(e.metrics_url + "/-/reload", timeout=30).status_code))
    over_http.start()
    assert loading.wait(20)
    by_signal = threading.Thread(target=e.app.reload)  # what SIGHUP runs
    by_signal.start()
    time.sleep(0.5)
    assert calls == [0]  # the second reload waits for the first to finish
    release.set()
    over_http.join(30)
    by_signal.join(30)
    assert calls == [0, 1] and answers == [200]
    assert e.scrape().value("kpi_exporter_config_reloads_total", outcome="success") == 2


def test_a_request_is_mapped_with_the_rules_it_was_decoded_with(exporter_factory, tmp_path):
    e = exporter_factory("default_rules: false\n" + CUSTOM)
    changed = tmp_path / "changed.yaml"
    changed.write_text("default_rules: false\n" + CUSTOM.replace("name: app.signup",
                                                                 "name: app.register"))
    new_config = load_config(str(changed), env={})

    def reload_midway(batch):  # runs between decode and map
        e.pipeline.reconfigure(new_config, [])

    e.pipeline.reconfigure(e.pipeline.config, [reload_midway])
    assert e.post("/v1/logs", signup()).status_code == 200
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 1  # the rules it was decoded with
    assert s.value("kpi_exporter_records_unmatched_total", signal="log") is None
    assert e.post("/v1/logs", signup()).status_code == 200  # the next request: the new rules
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 1
    assert s.value("kpi_exporter_records_unmatched_total", signal="log") == 1


def test_sighup_reloads_and_sigterm_stops_the_real_process(process_factory, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("default_rules: false\n" + CUSTOM)
    e = process_factory("--config", str(config))
    e.post("/v1/logs", signup())
    config.write_text("default_rules: false\n" + CUSTOM.replace("app.signup", "app.register"))
    e.signal(signal.SIGHUP)
    assert eventually(lambda: e.scrape().value("kpi_exporter_config_reloads_total",
                                               outcome="success") == 1)
    e.post("/v1/logs", signup())  # no longer matches
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 1
    assert s.value("kpi_exporter_records_unmatched_total", signal="log") == 1
    assert e.close() == 0
    log = e.log()
    assert "config reloaded" in log and "received SIGTERM" in log
    assert all(line.startswith("ts=") for line in log.splitlines() if line.strip())


def test_serve_refuses_a_broken_config_with_exit_code_2(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rules:\n  - metric: x\n")
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(config)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert f"{config}:2: rules[0] (x)" in r.stderr


def test_explain_shows_matches_skips_and_suggestions(tmp_path):
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "ai.model.performance", "attributes": {
        "gen_ai.request.model": "m1", "ai.model.accuracy": 0.8, "user.id": "u-123",
        "user.email": "a@b.example"}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'ai_model_accuracy_ratio{model="m1"} set to 0.8' in out
    assert "ai_model_latency_seconds): skipped, the record has no attribute 'ai.model.latency'" in out
    assert "u-123" not in out and "a@b.example" not in out
    event.write_text(json.dumps({"name": "app.pageview"}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "app_events_total" in r.stdout
    event.write_text(json.dumps({"signal": "span", "name": "x", "attributes": {}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "gen_ai.operation.name' is None, the rule wants it to exist" in r.stdout
    assert "no metric updates: the record is counted as unmatched" in r.stdout


def test_explain_shows_a_rejected_record_as_rejected_with_nothing_added(tmp_path):
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "app.conversion", "attributes": {
        "user.id": "u-1", "session.id": "s-1", "app.conversion.type": "purchase",
        "app.conversion.value": "9,99"}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert 'would app_conversions_total{type="purchase", service_name="unknown_service"} ' \
           'add 1, but the record is rejected' in r.stdout
    assert "REJECTS the record (non_numeric_value)" in r.stdout
    assert lines[-1] == ("  => REJECTED (non_numeric_value): a record is used whole or not at "
                         "all, so nothing is added (no metric, not the KPI windows); the "
                         "sender's response counts it as rejected")
    assert not [line for line in lines if ": app_" in line]  # no update is shown as made
    assert "KPI windows: count" not in r.stdout
    event.write_text(json.dumps({"name": "app.conversion", "attributes": {
        "user.id": "u-1", "session.id": "s-1", "app.conversion.type": "purchase",
        "app.conversion.value": "9.99"}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert 'app_conversion_value_total{type="purchase", currency="unknown", ' \
           'service_name="unknown_service"} add 9.99' in r.stdout
    assert r.stdout.splitlines()[-1] == ("  KPI windows: count its user (user.id) and its "
                                         "session (session.id, a converting one) by the "
                                         "event's time")


def test_explain_reads_otlp_json_log_records(tmp_path):
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"eventName": "app.feature_used", "attributes": [
        {"key": "app.feature", "value": {"stringValue": "workout"}},
        {"key": "app.action", "value": {"stringValue": "share"}}]}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert 'app_feature_usage_total{feature="workout", action="share", ' \
           'service_name="unknown_service"} add 1' in r.stdout


def test_help_reads_well():
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    for flag in ("--config", "--otlp-listen", "--metrics-listen", "KPI_EXPORTER_OTLP_LISTEN"):
        assert flag in r.stdout


def test_explain_shows_rebucketed_and_rejected_histogram_points(tmp_path):
    point = {"name": "gen_ai.client.operation.duration", "histogram": {
        "aggregationTemporality": 2, "dataPoints": [{
            "startTimeUnixNano": "1", "timeUnixNano": "2", "count": "3", "sum": 0.5,
            "explicitBounds": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                               10.24, 20.48, 40.96, 81.92],
            "bucketCounts": ["0", "0", "0", "1", "1", "1", "0", "0", "0", "0", "0", "0", "0",
                             "0", "0"],
            "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                           {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]}]}}
    event = tmp_path / "p.json"
    event.write_text(json.dumps(point))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "merge a histogram point of 3 observations (sum 0.5) into its buckets" in r.stdout
    assert "only its increase since the stream's last point" in r.stdout
    point["histogram"]["dataPoints"][0]["explicitBounds"] = [0.5]
    point["histogram"]["dataPoints"][0]["bucketCounts"] = ["1", "2"]
    event.write_text(json.dumps(point))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "REJECTS the record (bucket_mismatch)" in r.stdout


def _debug_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if 'msg="otlp request"' in line]


def test_debug_log_has_one_line_per_otlp_request(process_factory):
    e = process_factory("--log-level", "debug")
    mixed = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "app.page_view",
         "attributes": [{"key": "url.path", "value": {"stringValue": "/a"}}]},
        {"eventName": "ai.model.performance",
         "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                        {"key": "ai.model.accuracy", "value": {"stringValue": "high"}}]},
        {"attributes": [{"key": "x", "value": {"stringValue": "no event name"}}]},
    ]}]}]}).encode()
    assert e.post("/v1/logs", gzip.compress(mixed), **{"Content-Encoding": "gzip"}).ok
    assert e.post("/v1/traces", b"not json").status_code == 400
    lines = eventually(lambda: len(_debug_lines(e.log())) == 2 and _debug_lines(e.log()))
    assert lines, e.log()
    ok, bad = lines
    assert ok.startswith("ts=") and " level=debug " in ok
    for field in ("signal=log", "transport=http", "path=/v1/logs", "content_type=application/json",
                  "encoding=gzip", "records=3", "accepted=2", "rejected=1",
                  "rejected_non_numeric_value=1", "unmatched=1", "status=200",
                  " duration_seconds="):
        assert field in ok, (field, ok)
    for field in ("signal=span", "path=/v1/traces", "status=400"):
        assert field in bad, (field, bad)
    assert "records=" not in bad and "not json" not in bad

    quiet = process_factory()  # info: no per-request lines
    assert quiet.post("/v1/logs", PAGE_VIEW).ok
    assert quiet.scrape().value("kpi_exporter_requests_total", transport="http", signal="log", code="200") == 1
    assert _debug_lines(quiet.log()) == []


def test_explain_shows_what_a_genai_span_costs(tmp_path):
    span = {"signal": "span", "name": "chat gpt-4o", "duration": 1.2, "attributes": {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.cache_read.input_tokens": 200, "gen_ai.usage.output_tokens": 500,
        "error.type": "<class 'openai.APITimeoutError'>"}}
    event = tmp_path / "span.json"
    event.write_text(json.dumps(span))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'error_type="APITimeoutError"' in r.stdout
    assert 'gen_ai_token_type="cache_read", app_feature="unknown", ' \
           'service_name="unknown_service"} add 0.00025' in r.stdout
    # a model with no price: never a cost, and the explanation says why
    span["attributes"]["gen_ai.request.model"] = "acme-7b"
    event.write_text(json.dumps(span))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(event)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "gen_ai_span_cost_usd_total{" not in r.stdout
    assert "no input token usage of a model with a known price" in r.stdout


def test_errors_of_the_metrics_listener_are_plain_text(exporter):
    r = requests.get(exporter.metrics_url + "/nope", timeout=5)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == ("404 Not Found: /nope is not served here; this listener serves /metrics, "
                      "/, /-/healthy, /-/ready and POST /-/reload\n")
    r = requests.get(exporter.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 405 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith("405 Method Not Allowed: ") and "<" not in r.text
    assert "POST" in r.headers["Allow"]


def test_a_failing_page_answers_500_in_plain_text_and_logs_why(caplog):
    from werkzeug.test import Client

    from exporter.web import create_web_app

    def broken_config():
        raise RuntimeError("the landing page broke")

    app = create_web_app(CollectorRegistry(), broken_config, threading.Event(),
                         lambda: (True, "reloaded"))
    with caplog.at_level(logging.ERROR, logger="kpi_exporter"):
        r = Client(app).get("/")
    assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain")
    assert r.get_data(as_text=True) == ("500 Internal Server Error: the exporter failed on this "
                                        "request; its log has the details\n")
    assert "the landing page broke" in caplog.text and "Traceback" in caplog.text


def test_a_reload_that_fails_unexpectedly_is_refused_and_the_old_config_kept(
        exporter_factory, monkeypatch, caplog):
    e = exporter_factory(LIFECYCLE + CUSTOM)

    def failing_load(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exporter.app, "load_config", failing_load)
    with caplog.at_level(logging.ERROR, logger="kpi_exporter"):
        r = requests.post(e.metrics_url + "/-/reload", timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == ("config reload failed with an unexpected error (a bug; the exporter's log "
                      "has the traceback), the running config stays\n")
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text
    e.post("/v1/logs", signup())
    s = e.scrape()
    assert s.value("app_signups_total", plan="pro") == 1
    assert s.value("kpi_exporter_config_reloads_total", outcome="failure") == 1
