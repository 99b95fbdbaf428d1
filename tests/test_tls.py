"""TLS and basic auth from the web config file, with real handshakes: certificates made by
the test, the OpenTelemetry SDK sending over HTTPS and gRPC with TLS, client certificates,
TLS versions, certificate renewal on disk without a restart, and files with errors refused
at start and on reload with the reason."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.certs import CA, serial_of
from tests.helpers import ROOT, eventually, free_port
from tests.test_grpc import LOGS, logs_payload

PASSWORD = "correct horse battery staple"


def password_hash(password: str = PASSWORD, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


@pytest.fixture(autouse=True)
def _no_ca_bundle_from_the_environment(monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE win over a session's own CA file,
    # which is how the SDK's HTTP exporter passes certificate_file.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> CA:
    ca = CA(tmp_path / "pki")
    ca.server()
    ca.client()
    ca.client("stranger", san="stranger.example")
    return ca


def web_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
MTLS = TLS + ("  client_auth_type: RequireAndVerifyClientCert\n"
              "  client_ca_file: pki/ca.crt\n")


def start(exporter_factory, web: Path, pki: CA, extra: str = "", **kwargs):
    return exporter_factory(f"server:\n  web_config_file: {web}\n{extra}",
                            verify=str(pki.ca_file), **kwargs)


def client_context(pki: CA, cert: str | None = None, **versions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert:
        ctx.load_cert_chain(str(pki.directory / f"{cert}.crt"), str(pki.directory / f"{cert}.key"))
    for k, v in versions.items():
        setattr(ctx, k, v)
    return ctx


def https_get(port: int, path: str, ctx: ssl.SSLContext, headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def grpc_export(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        call = channel.unary_unary(LOGS, request_serializer=None, response_deserializer=None)
        try:
            call(logs_payload(), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()


def sdk_logs(exporter, route: str) -> None:
    lp = LoggerProvider(resource=Resource.create({"service.name": "tls-app"}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    lp.get_logger("app").emit(event_name="app.page_view", attributes={"url.path": route})
    lp.shutdown()


# ---- TLS on every listener ----------------------------------------------------------------

def test_the_sdk_sends_over_https_and_grpc_with_tls(exporter_factory, tmp_path, pki):
    e = start(exporter_factory, web_config(tmp_path, TLS), pki)
    assert e.otlp_url.startswith("https://") and e.metrics_url.startswith("https://")
    ca = str(pki.ca_file)
    sdk_logs(HttpLogs(endpoint=e.otlp_url + "/v1/logs", certificate_file=ca, timeout=10),
             "/https")
    sdk_logs(GrpcLogs(endpoint=f"localhost:{e.grpc_port}", timeout=10,
                      credentials=grpc.ssl_channel_credentials(pki.ca_file.read_bytes())),
             "/grpcs")
    s = e.scrape()
    assert s.value("app_page_views_total", route="/https", service_name="tls-app") == 1
    assert s.value("app_page_views_total", route="/grpcs", service_name="tls-app") == 1
    # plain HTTP and plaintext gRPC on the TLS ports get nowhere, and are counted
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{e.metrics_port}/metrics", timeout=5)
    with grpc.insecure_channel(f"127.0.0.1:{e.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(LOGS)(b"", timeout=5)
    refused = e.scrape().matching("kpi_exporter_tls_connections_refused_total",
                                  reason="handshake")
    assert {dict(k)["listener"] for k, v in refused.items() if v} >= {"metrics", "otlp-grpc"}


def test_clients_filling_the_otlp_listener_keep_no_one_out_of_the_others(exporter_factory,
                                                                         tmp_path, pki):
    e = start(exporter_factory, web_config(tmp_path, TLS), pki)
    assert e.app.tls is not None
    e.app.tls.connection_limit = 4  # 1000 in service; a few make the point
    # clients that finished their handshake and then send nothing
    idle = [client_context(pki).wrap_socket(socket.create_connection(
        ("127.0.0.1", e.otlp_port), timeout=10), server_hostname="localhost")
        for _ in range(4)]
    try:
        # one more on the full listener is dropped before its handshake...
        with pytest.raises((ssl.SSLError, OSError)):
            https_get(e.otlp_port, "/v1/logs", client_context(pki))
        # ...while the metrics and gRPC listeners still take new connections
        status, body = https_get(e.metrics_port, "/metrics", client_context(pki))
        assert status == 200
        assert ('kpi_exporter_tls_connections_refused_total{listener="otlp",'
                'reason="connection_limit"} 1.0') in body.decode()
        assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(
            pki.ca_file.read_bytes())) == grpc.StatusCode.OK
    finally:
        for s in idle:
            s.close()
    # the idle ones gone, the OTLP listener takes connections again
    def otlp_answers() -> bool:
        try:
            return https_get(e.otlp_port, "/v1/logs", client_context(pki))[0] == 405
        except (ssl.SSLError, OSError):
            return False

    assert eventually(otlp_answers, timeout=10)


def test_minimum_tls_version_applies_to_http_and_grpc(exporter_factory, tmp_path, pki):
    e = start(exporter_factory, web_config(tmp_path, TLS + "  min_version: TLS13\n"), pki)
    tls12 = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        https_get(e.metrics_port, "/-/healthy", tls12)
    with pytest.raises(ssl.SSLError):
        https_get(e.otlp_port, "/v1/logs", tls12)
    # a raw TLS 1.2 handshake with the gRPC port fails the same way
    with socket.create_connection(("127.0.0.1", e.grpc_port), timeout=10) as raw:
        ctx = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_alpn_protocols(["h2"])
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")
    status, _ = https_get(e.metrics_port, "/-/healthy", client_context(pki))
    assert status == 200
    assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(
        pki.ca_file.read_bytes())) == grpc.StatusCode.OK


def test_client_certificates_are_required_and_their_sans_checked(exporter_factory, tmp_path,
                                                                  pki):
    web = web_config(tmp_path, MTLS + "  client_allowed_sans: [client.example]\n")
    d = pki.directory
    e = start(exporter_factory, web, pki, cert=(str(d / "client.crt"), str(d / "client.key")))
    ca = pki.ca_file.read_bytes()
    # no client certificate: refused on every listener
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(e.metrics_port, "/-/healthy", client_context(pki))
    assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(ca)) == \
        grpc.StatusCode.UNAVAILABLE
    # a certificate of the CA but without an allowed SAN: refused
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(e.metrics_port, "/-/healthy", client_context(pki, "stranger"))
    assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(
        ca, (d / "stranger.key").read_bytes(), (d / "stranger.crt").read_bytes())) == \
        grpc.StatusCode.UNAVAILABLE
    # the allowed client: in
    status, body = https_get(e.metrics_port, "/metrics", client_context(pki, "client"))
    assert status == 200 and b"kpi_exporter_build_info" in body
    assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(
        ca, (d / "client.key").read_bytes(), (d / "client.crt").read_bytes())) == \
        grpc.StatusCode.OK
    sdk_logs(HttpLogs(endpoint=e.otlp_url + "/v1/logs", certificate_file=str(pki.ca_file),
                      client_certificate_file=str(d / "client.crt"),
                      client_key_file=str(d / "client.key"), timeout=10), "/mtls")
    status, body = https_get(e.metrics_port, "/metrics", client_context(pki, "client"))
    text = body.decode()
    assert 'app_page_views_total{route="/mtls",service_name="tls-app"} 1.0' in text
    assert 'kpi_exporter_tls_connections_refused_total{listener="metrics",' \
           'reason="client_san"} 1.0' in text
    assert 'kpi_exporter_tls_connections_refused_total{listener="otlp-grpc",' \
           'reason="client_san"} 1.0' in text


def test_renewed_certificates_apply_to_new_connections_without_a_restart(
        exporter_factory, tmp_path, pki):
    e = start(exporter_factory, web_config(tmp_path, TLS), pki)
    first = pki.directory / "server.crt"
    old_serial = serial_of(first.read_bytes())
    kept = http.client.HTTPSConnection("localhost", e.metrics_port, context=client_context(pki),
                                       timeout=10)
    kept.request("GET", "/-/healthy")
    assert kept.getresponse().read()

    # a new CA and server certificate replace the files, as a renewal would
    old_ca = tmp_path / "old-ca.crt"
    shutil.copy(pki.ca_file, old_ca)
    renewed = CA(tmp_path / "renewed", name="kpi-renewed-ca")
    renewed.server()
    for name in ("server.crt", "server.key"):
        shutil.copy(renewed.directory / name, pki.directory / (name + ".new"))
        os.replace(pki.directory / (name + ".new"), pki.directory / name)

    def serves_new() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", e.metrics_port), timeout=5) as raw:
                with client_context(renewed).wrap_socket(raw, server_hostname="localhost") as s:
                    return serial_of(ssl.DER_cert_to_PEM_cert(
                        s.getpeercert(binary_form=True)).encode()) != old_serial
        except (ssl.SSLError, OSError):
            return False

    assert eventually(serves_new, timeout=15)
    # the connection opened before keeps working; the old CA no longer fits new ones
    kept.request("GET", "/-/healthy")
    assert kept.getresponse().status == 200
    kept.close()
    with pytest.raises(ssl.SSLError):
        https_get(e.metrics_port, "/-/healthy", ssl.create_default_context(cafile=str(old_ca)))
    assert grpc_export(e.grpc_port, grpc.ssl_channel_credentials(
        renewed.ca_file.read_bytes())) == grpc.StatusCode.OK
    ok = client_context(renewed)
    status, body = https_get(e.metrics_port, "/metrics", ok)
    assert b"kpi_exporter_web_config_last_reload_successful 1.0" in body

    # a broken key: refused with the reason, the running certificate stays
    (pki.directory / "server.key").write_text("not a key\n")

    def refused() -> bool:
        _, body = https_get(e.metrics_port, "/metrics", ok)
        return b"kpi_exporter_web_config_last_reload_successful 0.0" in body

    assert eventually(refused, timeout=15)
    assert https_get(e.metrics_port, "/-/healthy", ok)[0] == 200
    # fixed again: back to 1
    shutil.copy(renewed.directory / "server.key", pki.directory / "server.key")
    assert eventually(lambda: b"kpi_exporter_web_config_last_reload_successful 1.0" in
                      https_get(e.metrics_port, "/metrics", ok)[1], timeout=15)


# ---- basic auth ---------------------------------------------------------------------------

def test_basic_auth_guards_metrics_and_admin_endpoints_not_otlp(exporter_factory, tmp_path,
                                                                 pki):
    users = (f"basic_auth_users:\n  prometheus: '{password_hash()}'\n"
             f"  alice: '{password_hash('a' * 72)}'\n"
             "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
             "    X-Frame-Options: deny\n")
    e = start(exporter_factory, web_config(tmp_path, TLS + users), pki,
              extra="  enable_lifecycle: true\n", auth=("prometheus", PASSWORD))
    url, ca = e.metrics_url, str(pki.ca_file)
    for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
        r = requests.get(url + path, verify=ca, timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), path
        assert r.headers["X-Frame-Options"] == "deny"
    assert requests.post(url + "/-/reload", verify=ca, timeout=10).status_code == 401
    assert requests.get(url + "/metrics", verify=ca, timeout=10,
                        auth=("prometheus", "wrong")).status_code == 401
    assert requests.get(url + "/metrics", verify=ca, timeout=10,
                        auth=("nobody", PASSWORD)).status_code == 401
    # bcrypt reads 72 bytes of a password: a longer one whose first 72 bytes match is
    # refused (never a server error), the 72 bytes themselves get in
    assert requests.get(url + "/metrics", verify=ca, timeout=10,
                        auth=("alice", "a" * 100)).status_code == 401
    assert requests.get(url + "/metrics", verify=ca, timeout=10,
                        auth=("alice", "a" * 72)).status_code == 200
    r = requests.get(url + "/metrics", verify=ca, timeout=10, auth=("prometheus", PASSWORD))
    assert r.status_code == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.post(url + "/-/reload", verify=ca, timeout=10,
                         auth=("prometheus", PASSWORD)).status_code == 200
    # OTLP senders use bearer tokens, not the metrics listener's users; headers apply
    r = e.post("/v1/logs", b"{}")
    assert r.status_code == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
    denied = e.scrape().value("kpi_exporter_http_requests_denied_total", reason="unauthorized")
    assert denied == 8


def test_rate_limit_answers_429(exporter_factory, tmp_path, pki):
    e = start(exporter_factory, web_config(tmp_path, TLS + "rate_limit:\n  interval: 1h\n"
                                                           "  burst: 5\n"), pki)
    # the readiness check of the test's start took one or more of the burst already
    codes = [requests.get(e.metrics_url + "/-/healthy", verify=str(pki.ca_file),
                          timeout=10).status_code for _ in range(6)]
    first_refusal = codes.index(429)
    assert 1 <= first_refusal <= 4 and set(codes[first_refusal:]) == {429}, codes


def test_basic_auth_without_tls(exporter_factory, tmp_path):
    web = web_config(tmp_path, f"basic_auth_users:\n  prom: '{password_hash()}'\n")
    e = exporter_factory(f"server:\n  web_config_file: {web}\n", auth=("prom", PASSWORD))
    assert e.metrics_url.startswith("http://")
    assert requests.get(e.metrics_url + "/metrics", timeout=10).status_code == 401
    assert e.scrape().value("kpi_exporter_web_config_last_reload_successful") == 1


def test_changed_users_apply_without_a_restart(exporter_factory, tmp_path, pki):
    web = web_config(tmp_path, TLS + f"basic_auth_users:\n  prom: '{password_hash()}'\n")
    e = start(exporter_factory, web, pki, auth=("prom", PASSWORD))
    web.write_text(TLS + f"basic_auth_users:\n  prom: '{password_hash('new password')}'\n")
    ca = str(pki.ca_file)
    assert eventually(lambda: requests.get(e.metrics_url + "/metrics", verify=ca, timeout=10,
                                           auth=("prom", "new password")).status_code == 200,
                      timeout=15)
    assert requests.get(e.metrics_url + "/metrics", verify=ca, timeout=10,
                        auth=("prom", PASSWORD)).status_code == 401


# ---- files with errors --------------------------------------------------------------------

BAD = [
    ("tls_server_config:\n  cert_file: pki/server.crt\n", "missing one of key or key_file"),
    (TLS + "  min_version: TLS11\n", "TLS11 is not offered"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n", "Python's ssl module cannot do"),
    (TLS + "  client_ca_file: pki/ca.crt\n", "without a Client Auth Policy"),
    (TLS + "  client_allowed_sans: [x]\n", "needs client_auth_type RequireAndVerifyClientCert"),
    (TLS + "  curve_preferences: [CurveP256, X25519]\n", "one curve only"),
    (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4]\n", "unknown 'TLS_RSA_WITH_RC4'"),
    ("tls_server_config:\n  cert_file: pki/nope.crt\n  key_file: pki/server.key\n",
     "does not load"),
    ("basic_auth_users:\n  john: doe\n", "basic_auth_users.john: not a bcrypt hash"),
    ("http_server_config:\n  headers:\n    Server: x\n", "can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "expected one of deny"),
    ("tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
     "  certfile: x\n", "tls_server_config.certfile: unknown key"),
    ("rate_limit:\n  interval: 1s\n", "a burst of 0 would refuse every request"),
    ("rate_limit:\n  interval: soon\n  burst: 1\n", "expected a duration"),
    ("basic_auth: {}\n", "basic_auth: unknown key"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_check_web_config_refuses_with_the_reason(tmp_path, pki, text, message):
    web = web_config(tmp_path, text)
    r = subprocess.run([sys.executable, "-m", "exporter", "check-web-config", str(web)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    assert message in r.stderr and str(web) in r.stderr, r.stderr


def test_check_web_config_accepts_the_toolkit_formats(tmp_path, pki):
    inline = (f"tls_server_config:\n  cert: |\n"
              + "".join(f"    {line}\n" for line in (pki.directory / "server.crt")
                        .read_text().splitlines())
              + "  key: |\n"
              + "".join(f"    {line}\n" for line in (pki.directory / "server.key")
                        .read_text().splitlines())
              + "  min_version: TLS12\n  max_version: TLS13\n"
              "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
              "  curve_preferences: [CurveP256]\n  prefer_server_cipher_suites: false\n"
              "http_server_config:\n  http2: false\n"
              # an htpasswd hash ($2y$) as the toolkit's docs make them
              f"basic_auth_users:\n  alice: '{password_hash().replace('$2b$', '$2y$')}'\n"
              "rate_limit:\n  interval: 1m30s\n  burst: 10\n")
    web = web_config(tmp_path, inline)
    r = subprocess.run([sys.executable, "-m", "exporter", "check-web-config", str(web)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "TLS: TLS12 to TLS13" in r.stdout and "basic auth users: 1" in r.stdout


def test_serve_refuses_a_broken_web_config_at_start(tmp_path, pki):
    web = web_config(tmp_path, TLS + "  min_version: TLS9\n")
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--web.config.file", str(web),
                        "--otlp-listen", f"127.0.0.1:{free_port()}", "--otlp-grpc-listen", "",
                        "--metrics-listen", f"127.0.0.1:{free_port()}",
                        "--state-dir", str(tmp_path / "state")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert "min_version: expected TLS12 or TLS13, got 'TLS9'" in r.stderr


def test_reload_refuses_a_broken_web_config_and_keeps_the_running_one(process_factory,
                                                                      tmp_path, pki):
    web = web_config(tmp_path, TLS + f"basic_auth_users:\n  prom: '{password_hash()}'\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  web_config_file: {web}\n  enable_lifecycle: true\n")
    e = process_factory("--config", str(config), "--state-dir", str(tmp_path / "state"),
                        scheme="https", verify=str(pki.ca_file), auth=("prom", PASSWORD))
    web.write_text(TLS + "basic_auth_users:\n  prom: plaintext\n")
    r = requests.post(e.metrics_url + "/-/reload", verify=str(pki.ca_file), timeout=10,
                      auth=("prom", PASSWORD))
    assert r.status_code == 400 and "basic_auth_users.prom: not a bcrypt hash" in r.text
    e.signal(signal.SIGHUP)
    assert eventually(lambda: "config reload refused" in e.log(), timeout=10)
    # the file watcher says the same, and the last good users still get in
    assert eventually(lambda: "web config reload refused" in e.log(), timeout=10)
    s = e.scrape()
    assert s.value("kpi_exporter_web_config_last_reload_successful") == 0
    assert s.value("kpi_exporter_web_config_reloads_total", outcome="failure") >= 1
    assert e.close() == 0


def test_basic_auth_header_parsing():
    from exporter.webguard import BasicAuth
    users = {"u": password_hash("p")}
    auth = BasicAuth()

    def header(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    assert auth.check(users, header(b"u:p"))
    assert auth.check(users, header(b"u:p"))  # cached
    assert not auth.check(users, header(b"u:q"))
    assert not auth.check(users, header(b"u"))  # no colon
    assert not auth.check(users, header(b"\xff\xfe:p"))  # not UTF-8
    assert not auth.check(users, "Basic !!!")
    assert not auth.check(users, "Bearer abc")
    assert not auth.check(users, None)
    assert not auth.check(users, header(b"u:" + b"p" * 73))
    # a password with a colon
    users["c"] = password_hash("a:b")
    assert auth.check(users, header(b"c:a:b"))
