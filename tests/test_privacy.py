"""Privacy: salted identity hashes, the attribute denylist at ingest, the salt file, and a run
of the real exporter after which nothing it wrote contains a known id, email or the salt."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from exporter import otlp_json
from exporter.config import ConfigError, load_config
from exporter.privacy import (
    DEFAULT_DENYLIST, AttributeScrubber, IdentityHasher, load_or_create_salt,
)
from exporter.records import LOG, METRIC, Record
from tests.helpers import ROOT, ProcessExporter, built
from tests.otel import logger_provider, tracer_provider


# -- hashing --------------------------------------------------------------------------------------

def test_identity_hashes_depend_on_the_salt_and_nothing_else():
    a, b = IdentityHasher("salt-one-0123456789"), IdentityHasher("salt-two-0123456789")
    assert a.hash("alice") == IdentityHasher("salt-one-0123456789").hash("alice")
    assert a.hash("alice") != b.hash("alice")
    assert a.hash("alice") != a.hash("bob")
    assert a.hash(42) == a.hash("42")  # an id sent as a number is the same identity
    assert -2**63 <= a.hash("alice") < 2**63
    assert a.fingerprint != b.fingerprint and "salt" not in a.fingerprint
    a.set_salt("salt-two-0123456789")
    assert a.hash("alice") == b.hash("alice") and a.fingerprint == b.fingerprint


def test_hash_cache_is_bounded_holds_no_raw_ids_and_never_changes_a_hash():
    h = IdentityHasher("salt-cache-0123456789")
    h.CACHE_SIZE = 100
    fresh = {f"user-{i}": IdentityHasher("salt-cache-0123456789").hash(f"user-{i}")
             for i in range(250)}
    for _round in range(2):
        for uid, expected in fresh.items():
            assert h.hash(uid) == expected
    assert 0 < len(h._cache) <= 100
    assert not any(isinstance(k, str) or isinstance(v, str) for k, v in h._cache.items())


# -- the denylist ---------------------------------------------------------------------------------

SENSITIVE = {
    "user.email": "alice@example.com", "Customer_Email": "bob@example.com",
    "user.phone": "+44 7700 900123", "phone_number": "+1 202 555 0100",
    "client.address": "203.0.113.7", "net.peer.ip": "198.51.100.23",
    "user.ip_address": "192.0.2.55", "device.ip": "192.0.2.66",
}
HARMLESS = {"url.path": "/home", "app.platform": "ios", "user.id": "u-1", "session.id": "s-1"}


def test_the_default_denylist_drops_emails_phones_and_ip_addresses():
    records = [Record(LOG, "app.page_view", 0, {**SENSITIVE, **HARMLESS}) for _ in range(3)]
    AttributeScrubber(DEFAULT_DENYLIST).scrub(records, LOG)
    for r in records:
        assert r.attributes == HARMLESS


def test_metric_points_keep_hashes_of_identities_not_the_identities():
    hasher = IdentityHasher("salt-metric-0123456789")
    r = Record(METRIC, "app.jobs", 0, {"user.id": "alice-7f3a", "enduser.id": "e-99",
                                       "queue": "q1", "user.email": "a@example.com"})
    AttributeScrubber(DEFAULT_DENYLIST, ("user.id", "session.id"), hasher).scrub([r], METRIC)
    assert set(r.attributes) == {"user.id", "enduser.id", "queue"}
    assert r.attributes["queue"] == "q1"
    assert r.attributes["user.id"] == f"hashed:{hasher.hash('alice-7f3a') & (2**64 - 1):016x}"
    assert "alice-7f3a" not in repr(r) and "e-99" not in repr(r)


def test_what_rules_and_observers_see_has_no_denylisted_attribute(exporter_factory):
    e = exporter_factory("privacy: {attribute_denylist: ['billing.*']}\n")
    seen: list[dict] = []
    e.pipeline.add_observer(lambda batch: seen.extend(
        dict(r.attributes) for r in batch.records))
    lp = logger_provider(e.otlp_url, service="web")
    lp.get_logger("app").emit(event_name="app.page_view", attributes={
        **SENSITIVE, **HARMLESS, "billing.iban": "DE89370400440532013000"})
    lp.shutdown()
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "eventName": "app.page_view",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in SENSITIVE.items()]
        + [{"key": "url.path", "value": {"stringValue": "/json"}}]}]}]}]}
    assert e.post("/v1/logs", json.dumps(doc).encode()).status_code == 200
    assert len(seen) == 2
    for attrs in seen:
        assert not set(attrs) & (set(SENSITIVE) | {"billing.iban"}), attrs
    assert seen[0]["url.path"] == "/home" and seen[1]["url.path"] == "/json"


def test_a_reloaded_denylist_takes_effect_at_once(exporter_factory):
    e = exporter_factory("server: {enable_lifecycle: true}\nprivacy: {attribute_denylist: []}\n")
    seen: list[dict] = []
    e.pipeline.add_observer(lambda batch: seen.extend(
        dict(r.attributes) for r in batch.records))

    def send():
        lp = logger_provider(e.otlp_url, service="web")
        lp.get_logger("app").emit(event_name="app.page_view",
                                  attributes={"app.tier": "gold", "url.path": "/"})
        lp.shutdown()

    send()
    assert seen[-1].get("app.tier") == "gold"
    assert e.config_path is not None
    Path(e.config_path).write_text("server: {enable_lifecycle: true}\n"
                                   "privacy: {attribute_denylist: ['app.tier']}\n")
    assert requests.post(e.metrics_url + "/-/reload", timeout=10).status_code == 200
    send()
    assert "app.tier" not in seen[-1] and seen[-1]["url.path"] == "/"


def test_denylist_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("privacy: {default_denylist: false, attribute_denylist: [tax.*]}\n")
    assert load_config(str(path), env={}).privacy.denylist == ("tax.*",)
    path.write_text("privacy: {attribute_denylist: [tax.*]}\n")
    assert load_config(str(path), env={}).privacy.denylist == DEFAULT_DENYLIST + ("tax.*",)


RULE = "rules:\n  - metric: app_x_total\n    type: counter\n"


@pytest.mark.parametrize("text, env, message", [
    ("privacy: {salt: tiny-salt-x}\n", {},
     "c.yaml:1: privacy.salt: expected a string of at least 16"),
    ("", {"KPI_EXPORTER_SALT": "tiny-salt-x"}, "KPI_EXPORTER_SALT: the salt is shorter than 16"),
    ("privacy: {attribute_denylist: ['user.*']}\n", {},
     "the denylist pattern 'user.*' matches 'user.id', which the KPI windows count"),
    ("privacy: {attribute_denylist: ['tier']}\n" + RULE
     + "    match: {signal: log, name: app.x}\n    labels: {tier: tier}\n", {},
     "attribute 'tier' is dropped at ingest by the privacy denylist (pattern 'tier')"),
    (RULE + "    match: {signal: log, name: a, attributes: {client.address: {exists: true}}}\n",
     {}, "attribute 'client.address' is dropped at ingest by the privacy denylist"),
    ("privacy: {attribute_denylst: []}\n", {}, "did you mean 'attribute_denylist'"),
    ("privacy: {default_denylist: 1}\n", {}, "default_denylist: expected true or false"),
])
def test_privacy_config_errors_name_the_key(tmp_path, text, env, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env=env)
    assert message in str(err.value)
    assert "tiny-salt-x" not in str(err.value)  # a salt is never echoed, not even a bad one


def test_the_env_salt_wins_over_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("privacy: {salt: from-the-config-file-123}\n")
    cfg = load_config(str(path), env={"KPI_EXPORTER_SALT": "from-the-environment-123"})
    assert (cfg.privacy.salt, cfg.privacy.salt_source) == ("from-the-environment-123",
                                                           "KPI_EXPORTER_SALT")
    assert "from-the" not in repr(cfg)


# -- the salt file --------------------------------------------------------------------------------

def test_the_salt_file_is_created_once_with_mode_0600(tmp_path, caplog):
    salt = load_or_create_salt(tmp_path)
    path = tmp_path / "salt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(salt) == 64 and load_or_create_salt(tmp_path) == salt
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="kpi_exporter"):
        assert load_or_create_salt(tmp_path) == salt
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by others" in caplog.text and salt not in caplog.text


class Crash(BaseException):
    """The process dying in the middle of a write."""


def test_a_crash_while_the_salt_is_written_leaves_no_short_salt(tmp_path, monkeypatch):
    real_write = os.write

    def half_then_crash(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        raise Crash()

    monkeypatch.setattr(os, "write", half_then_crash)
    with pytest.raises(Crash):
        load_or_create_salt(tmp_path)
    monkeypatch.setattr(os, "write", real_write)
    assert not (tmp_path / "salt").exists()
    salt = load_or_create_salt(tmp_path)  # the next start makes a whole one
    assert len(salt) == 64 and (tmp_path / "salt").read_text() == salt + "\n"


def test_a_temp_file_left_by_a_crash_is_removed_and_a_whole_salt_made(tmp_path):
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    leftover = state_dir / ".salt.tmp-4242"
    leftover.write_text("3f5c")  # what a crash after the first bytes leaves
    e = ProcessExporter(["--state-dir", str(state_dir)])
    try:
        assert e.post("/v1/logs", json.dumps({"resourceLogs": []}).encode()).status_code == 200
        assert "left by a start that was interrupted while creating the salt" in e.log()
    finally:
        e.close()
    assert not leftover.exists()
    assert len((state_dir / "salt").read_text().strip()) == 64


def test_a_damaged_salt_file_stops_the_exporter_with_a_message(tmp_path):
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    (state_dir / "salt").write_text("x\n")
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--otlp-listen",
                        "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0", "--metrics-listen",
                        "127.0.0.1:0", "--state-dir",
                        str(state_dir)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert "is damaged" in r.stderr and "move it away" in r.stderr


# -- nothing written contains an id, an email or the salt ----------------------------------------

USERS = ["alice-7f3a9c", "bob-52de10", "carol-e81b44"]
SESSIONS = ["sess-91bd0f2a", "sess-0c44aa17"]
EMAILS = ["alice.liddell@example.com", "bob.builder@example.org"]
PHONE, IP = "+44 7700 900461", "203.0.113.77"

EXPLAIN_INPUT = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"eventName": "app.page_view", "attributes": [
        {"key": "user.id", "value": {"stringValue": USERS[0]}},
        {"key": "session.id", "value": {"stringValue": SESSIONS[0]}},
        {"key": "user.email", "value": {"stringValue": EMAILS[0]}},
        {"key": "client.address", "value": {"stringValue": IP}},
        {"key": "url.path", "value": {"stringValue": "/home"}}]},
    {"eventName": "app.conversion", "attributes": [
        {"key": "user.id", "value": {"stringValue": USERS[1]}},
        {"key": "customer.email", "value": {"stringValue": EMAILS[1]}},
        {"key": "phone", "value": {"stringValue": PHONE}}]}]}]}]}


def send_identities(otlp_url: str) -> None:
    lp = logger_provider(otlp_url, service="web")
    log = lp.get_logger("app")
    for i, user in enumerate(USERS):
        log.emit(event_name="app.page_view", attributes={
            "user.id": user, "session.id": SESSIONS[i % 2], "user.email": EMAILS[i % 2],
            "user.phone": PHONE, "client.address": IP, "url.path": "/home"})
    log.emit(event_name="app.conversion", attributes={
        "user.id": USERS[0], "session.id": SESSIONS[0], "customer.email": EMAILS[0],
        "app.conversion.type": "purchase"})
    lp.shutdown()
    tp = tracer_provider(otlp_url)
    with tp.get_tracer("t").start_as_current_span("chat m", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
            "user.id": USERS[2], "enduser.id": USERS[1], "client.address": IP}):
        pass
    tp.shutdown()
    r = requests.post(otlp_url + "/v1/metrics", data=genai_histogram({
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "user.id": USERS[1],
        "session.id": SESSIONS[1], "user.email": EMAILS[1]}), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200 and "partialSuccess" not in r.text, r.text


GENAI_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92]


def genai_histogram(attributes: dict[str, str]) -> bytes:
    """A cumulative gen_ai.client.operation.duration point in OTLP JSON."""
    counts = ["0"] * (len(GENAI_BOUNDS) + 1)
    counts[5] = "1"
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "gen_ai.client.operation.duration", "histogram": {
            "aggregationTemporality": 2, "dataPoints": [{
                "startTimeUnixNano": "1", "timeUnixNano": str(time.time_ns()), "count": "1",
                "sum": 0.3, "explicitBounds": GENAI_BOUNDS, "bucketCounts": counts,
                "attributes": [{"key": k, "value": {"stringValue": v}}
                               for k, v in attributes.items()]}]}}]}]}]}).encode()


def everything_written(state_dir: Path, texts: list[str]) -> dict[str, bytes]:
    """Every output of the run by name, gzip files decompressed too."""
    out = {f"output {i}": t.encode() for i, t in enumerate(texts)}
    for path in state_dir.rglob("*"):
        if path.is_file() and path.name != "salt":
            data = path.read_bytes()
            out[str(path)] = data
            if data[:2] == b"\x1f\x8b":
                out[str(path) + " (decompressed)"] = gzip.decompress(data)
    return out


@pytest.mark.parametrize("salt_from", ["generated", "env", "config"])
def test_no_id_email_or_salt_in_anything_the_exporter_wrote(process_factory, tmp_path,
                                                            salt_from):
    state_dir = tmp_path / "state"
    salt = "pepper-" + os.urandom(12).hex()
    args = ["--state-dir", str(state_dir), "--log-level", "debug"]
    env = {}
    config = tmp_path / "config.yaml"
    config.write_text(f"privacy: {{salt: {salt}}}\n" if salt_from == "config" else "")
    args += ["--config", str(config)]
    if salt_from == "env":
        env["KPI_EXPORTER_SALT"] = salt
    e = process_factory(*args, env=env)
    send_identities(e.otlp_url)
    scraped = e.scrape().text
    assert "app_active_users" in scraped
    openmetrics = requests.get(e.metrics_url + "/metrics", timeout=10, headers={
        "Accept": "application/openmetrics-text; version=1.0.0"}).text
    landing = requests.get(e.metrics_url + "/", timeout=10).text
    explain_input = tmp_path / "events.json"
    explain_input.write_text(json.dumps(EXPLAIN_INPUT))
    explained = subprocess.run(
        [sys.executable, "-m", "exporter", "explain", "--config", str(config),
         str(explain_input)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert explained.returncode == 0, explained.stderr
    assert "app_page_views_total" in explained.stdout
    e.signal(signal.SIGTERM)
    assert e.proc.wait(20) == 0
    if salt_from == "generated":
        salt = (state_dir / "salt").read_text().strip()
        assert stat.S_IMODE((state_dir / "salt").stat().st_mode) == 0o600
    else:
        assert not (state_dir / "salt").exists()
    outputs = everything_written(state_dir, [e.log(), scraped, openmetrics, landing,
                                             explained.stdout, explained.stderr])
    assert any(name.endswith("(decompressed)") for name in outputs)
    assert b"gen_ai_client_operation_duration_seconds" in b"".join(outputs.values())
    for secret in [*USERS, *SESSIONS, *EMAILS, PHONE, IP, salt]:
        for name, data in outputs.items():
            assert secret.encode() not in data, f"{secret!r} found in {name}"


def test_explain_leaves_out_denylisted_attributes(tmp_path):
    path = tmp_path / "events.json"
    path.write_text(json.dumps(EXPLAIN_INPUT))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", str(path)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "user.email" not in r.stdout and "client.address" not in r.stdout
    assert "'user.id': '<redacted>'" in r.stdout
    assert "'url.path': '/home'" in r.stdout


def test_explain_does_not_quote_an_identity_a_condition_saw(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rules:\n  - metric: app_vip_total\n    type: counter\n"
                      "    match: {signal: log, name: app.page_view,"
                      " attributes: {user.id: {in: [vip-1]}}}\n")
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "app.page_view",
                                 "attributes": {"user.id": USERS[2], "url.path": "/"}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", "--config", str(config),
                        str(event)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "attribute 'user.id' is '<redacted>', the rule wants" in r.stdout
    assert USERS[2] not in r.stdout


def test_explain_redacts_the_configured_identity_attributes(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("windows: {user_attribute: customer_no, session_attribute: visit}\n"
                      "rules:\n  - metric: app_vip_total\n    type: counter\n"
                      "    match: {signal: log, name: app.page_view,"
                      " attributes: {customer_no: {in: [C-1]}}}\n")
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "app.page_view", "attributes": {
        "customer_no": "C-4711", "visit": "V-0815", "url.path": "/"}}))
    r = subprocess.run([sys.executable, "-m", "exporter", "explain", "--config", str(config),
                        str(event)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "'customer_no': '<redacted>', 'visit': '<redacted>', 'url.path': '/'" in r.stdout
    assert "attribute 'customer_no' is '<redacted>', the rule wants in ['C-1']" in r.stdout
    assert "C-4711" not in r.stdout and "V-0815" not in r.stdout


def test_a_pipeline_keeps_no_raw_identity_of_a_metric_stream(tmp_path):
    p = built(tmp_path).pipeline
    result = p.ingest_batch(otlp_json.decode_metrics(genai_histogram({
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "user.id": USERS[0],
        "client.address": IP})))
    assert result.matched == 1
    text = json.dumps(p.store.export_state())
    assert "hashed:" in text
    assert USERS[0] not in text and IP not in text
