"""The ``kpi-exporter`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from exporter import __version__
from exporter.config import ConfigError, load_config

__all__ = ["main", "build_parser"]

log = logging.getLogger("kpi_exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpi-exporter",
        description="Receives OpenTelemetry events, spans and metrics over OTLP (gRPC and "
                    "HTTP), maps them by YAML rules to Prometheus metrics and serves them on "
                    "/metrics.",
        epilog="Run 'kpi-exporter COMMAND --help' for a command's options. "
               "Docs: docs/mapping.md (rules), docs/troubleshooting.md.",
    )
    parser.add_argument("--version", action="version", version=f"kpi-exporter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve", help="run the OTLP receiver and /metrics",
        description="Runs the OTLP/gRPC receiver (port 4317), the OTLP/HTTP receiver (POST "
                    "/v1/logs, /v1/traces, /v1/metrics on port 4318) and the metrics listener "
                    "(/metrics, /-/healthy, /-/ready, POST /-/reload on port 9464). "
                    "Without --config it runs on the built-in rules for the standard event "
                    "vocabulary. SIGHUP reloads the config; SIGTERM stops gracefully.")
    serve.add_argument("--config", metavar="FILE", help="YAML config file (see config.example.yaml)")
    serve.add_argument("--otlp-listen", metavar="HOST:PORT",
                       help="OTLP/HTTP address (env KPI_EXPORTER_OTLP_LISTEN; default 0.0.0.0:4318)")
    serve.add_argument("--otlp-grpc-listen", metavar="HOST:PORT",
                       help="OTLP/gRPC address, '' for none (env "
                            "KPI_EXPORTER_OTLP_GRPC_LISTEN; default 0.0.0.0:4317)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="metrics address (env KPI_EXPORTER_METRICS_LISTEN; default 0.0.0.0:9464)")
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="TLS for every listener and basic auth for the metrics listener, "
                            "in the exporter-toolkit web config format (env "
                            "KPI_EXPORTER_WEB_CONFIG_FILE, config server.web_config_file; "
                            "see docs/deployment.md)")
    serve.add_argument("--reuse-port", action="store_true", default=None,
                       help="let several processes bind the same OTLP addresses, HTTP and "
                            "gRPC (SO_REUSEPORT; each with its own --metrics-listen and "
                            "--state-dir); config server.reuse_port")
    serve.add_argument("--windows-store", metavar="STORE",
                       help="where the KPI window sketches live: 'memory' (this process) or "
                            "redis[s]://[user:password@]host:port/db, a Redis or Valkey every "
                            "replica shares (env KPI_EXPORTER_WINDOWS_STORE, config "
                            "windows.store; default memory). Other users can read a "
                            "command line: pass a URL with a password in the environment")
    serve.add_argument("--state-dir", metavar="DIR",
                       help="where counts and window sketches are saved and restored (env "
                            "KPI_EXPORTER_STATE_DIR, config state.dir; default ./data)")
    serve.add_argument("--web.enable-lifecycle", action="store_true", dest="enable_lifecycle",
                       help="allow reloading the config with POST /-/reload on the metrics "
                            "listener (env KPI_EXPORTER_WEB_ENABLE_LIFECYCLE, config "
                            "server.enable_lifecycle; default off: it answers 403, and SIGHUP "
                            "reloads)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="log verbosity (default info)")

    check = sub.add_parser(
        "check-config", help="validate config files",
        description="Validates config files and their rules. Prints every problem as "
                    "FILE:LINE: KEY: what is expected, and exits 1 if any file has one.")
    check.add_argument("files", metavar="FILE", nargs="+")

    check_web = sub.add_parser(
        "check-web-config", help="validate a web config file (TLS, basic auth)",
        description="Validates a web config file in the exporter-toolkit format, as "
                    "'promtool check web-config' does, and loads its certificate, key and "
                    "client CA. Prints every problem and exits 1 if there is any.")
    check_web.add_argument("file", metavar="FILE")

    explain = sub.add_parser(
        "explain", help="show what the rules do with one record",
        description="Runs one record through the rules and prints which rules match, why the "
                    "others do not, and the metric updates it would make. FILE holds OTLP JSON "
                    "(an export request, or one log record, span or metric) or the simple form "
                    '{"name": "app.page_view", "attributes": {"url.path": "/home"}}. '
                    "Use - for standard input.")
    explain.add_argument("--config", metavar="FILE", help="config file (default: built-in rules)")
    explain.add_argument("file", metavar="EVENT.json")

    demo = sub.add_parser(
        "demo", help="send realistic synthetic traffic to a running exporter",
        description="Sends synthetic product and AI traffic through the Python SDK to a running "
                    "exporter: users with sessions, page views, feature use, conversions, AI "
                    "recommendations and responses, model performance reports, GenAI spans and "
                    "evaluations. Sends round(RATE x DURATION) items paced at RATE per second "
                    "(the same items for the same --seed), then prints what it sent in the "
                    "terms of the metrics, to compare with /metrics and the dashboards.")
    demo.add_argument("--endpoint", default="http://localhost:4318", metavar="URL",
                      help="the exporter's OTLP/HTTP base URL (default http://localhost:4318)")
    demo.add_argument("--rate", type=float, default=50.0, metavar="N",
                      help="events and spans per second (default 50)")
    demo.add_argument("--duration", default="60s", metavar="TIME",
                      help="how long to send, e.g. 30s, 5m (default 60s)")
    demo.add_argument("--users", type=int, default=200, metavar="N",
                      help="size of the user population (default 200)")
    demo.add_argument("--seed", type=int, metavar="N", help="random seed (default: random, printed)")
    demo.add_argument("--backfill", metavar="TIME",
                      help="spread event times over this much past, e.g. 7d (default: now)")
    demo.add_argument("--service-name", default="kpi-demo", metavar="NAME",
                      help="service.name of the traffic (default kpi-demo)")
    demo.add_argument("--json", metavar="FILE", dest="json_path",
                      help="also write the summary as JSON to FILE (- for standard output)")
    demo.add_argument("--openmetrics", metavar="FILE",
                      help="send nothing: write --backfill (default 14d) of Prometheus history "
                           "of the same population (window gauges, model reports, event "
                           "counters, a sample every 5 minutes) to FILE as OpenMetrics, for "
                           "'promtool tsdb create-blocks-from openmetrics FILE DIR'; the "
                           "week-over-week panels and alerts need it, as Prometheus cannot "
                           "scrape the past")
    demo.add_argument("--job", default="kpi-exporter",
                      help="with --openmetrics: the job label of the series (default "
                           "kpi-exporter, as prometheus/prometheus.yml scrapes)")
    demo.add_argument("--instance", default="localhost:9464",
                      help="with --openmetrics: the instance label (default localhost:9464)")
    return parser


# Each command imports what it runs when it runs: `--help`, `check-config` and `demo` start
# without loading the server, the sketches or the OpenTelemetry SDK they do not use.

def _serve(args: argparse.Namespace) -> int:
    from exporter.app import StateError, WindowStoreError, build
    from exporter.logfmt import setup_logging

    setup_logging(args.log_level)
    overrides = {k: v for k, v in (("otlp_listen", args.otlp_listen),
                                   ("metrics_listen", args.metrics_listen),
                                   ("web_config_file", args.web_config_file),
                                   ("state_dir", args.state_dir),
                                   ("windows_store", args.windows_store),
                                   ("reuse_port", args.reuse_port),
                                   ("enable_lifecycle", args.enable_lifecycle)) if v}
    if args.otlp_grpc_listen is not None:  # '' turns the gRPC listener off
        overrides["otlp_grpc_listen"] = args.otlp_grpc_listen
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("invalid config: %s", problem)
        return 2
    log.info("starting kpi-exporter %s with %s", __version__, config.describe())
    try:
        app = build(config, config_path=args.config, config_overrides=overrides)
    except (StateError, WindowStoreError) as exc:
        log.error("%s", exc)
        return 2
    try:
        app.serve_forever()
    except OSError as exc:
        log.error("cannot listen: %s (is another process using the port? see --otlp-listen, "
                  "--otlp-grpc-listen and --metrics-listen)", exc)
        return 1
    return 0


def _check_config(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            config = load_config(path, env={})
        except ConfigError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{path}: {len(exc.problems)} problem(s); the exporter would refuse this "
                  f"config", file=sys.stderr)
            continue
        print(f"{path}: OK, {config.user_rule_count} rules of your own"
              f"{' plus the built-in rules' if config.default_rules else ''}; "
              f"{config.describe().split(': ', 1)[1]}")
    return 1 if failed else 0


def _check_web_config(args: argparse.Namespace) -> int:
    from exporter.webconfig import WebConfigError, load_web_config

    try:
        web = load_web_config(args.file)
    except WebConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s); the exporter would refuse this web "
              f"config", file=sys.stderr)
        return 1
    tls = web.tls
    print(f"{args.file}: OK; TLS: "
          + (f"{tls.min_version} to {tls.max_version}, client certificates: "
             f"{tls.client_auth_type}" if tls else "off (plain HTTP)")
          + f"; basic auth users: {len(web.users)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from exporter.explain import explain, records_from_json
    from exporter.genai import PriceBook
    from exporter.mapper import Mapping
    from exporter.privacy import scrub_records

    try:
        config = load_config(args.config, env={})
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        records = records_from_json(json.loads(text))
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    mapping = Mapping(config.rules, PriceBook(config.genai))
    scrub_records(records, config.privacy)
    for record in records:
        print("\n".join(explain(mapping, record, config.windows)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from exporter.demo import DemoOptions, check_reachable, parse_duration, run_demo, write_json
    from exporter.sdk import sdk_disabled

    try:
        duration = parse_duration(args.duration)
        backfill = parse_duration(args.backfill) if args.backfill else None
    except ValueError as exc:
        print(f"kpi-exporter demo: {exc}", file=sys.stderr)
        return 2
    if args.openmetrics:
        return _demo_history(args, backfill)
    if args.rate <= 0 or duration <= 0 or args.users < 1:
        print("kpi-exporter demo: --rate, --duration and --users must be positive", file=sys.stderr)
        return 2
    if sdk_disabled():
        print("kpi-exporter demo: OTEL_SDK_DISABLED=true is set, which turns the OpenTelemetry "
              "SDK off, so the demo would send nothing: run 'unset OTEL_SDK_DISABLED' (or set "
              "it to false) and start it again", file=sys.stderr)
        return 2
    problem = check_reachable(args.endpoint)
    if problem:
        print(f"kpi-exporter demo: no exporter at {args.endpoint}: {problem}. Start one with "
              f"'kpi-exporter serve' (or 'make run'), or pass --endpoint.", file=sys.stderr)
        return 1
    summary = run_demo(DemoOptions(endpoint=args.endpoint, rate=args.rate, duration=duration,
                                   users=args.users, seed=args.seed, backfill=backfill,
                                   service_name=args.service_name))
    print(summary.render())
    if args.json_path:
        write_json(summary, args.json_path)
    return 0 if summary.delivered_all else 1


def _demo_history(args: argparse.Namespace, backfill: float | None) -> int:
    from exporter.demohistory import HistoryOptions, write_history

    if args.users < 1:
        print("kpi-exporter demo: --users must be positive", file=sys.stderr)
        return 2
    if backfill is not None and backfill < 3600:
        print("kpi-exporter demo: --backfill with --openmetrics must be at least 1h (14d gives "
              "the week-over-week panels a full week to compare with)", file=sys.stderr)
        return 2
    options = HistoryOptions(backfill=backfill or 14 * 86400, users=args.users, seed=args.seed,
                             service_name=args.service_name, job=args.job,
                             instance=args.instance)
    try:
        with open(args.openmetrics, "w", encoding="utf-8") as out:
            summary = write_history(options, out, args.openmetrics)
    except OSError as exc:
        print(f"kpi-exporter demo: cannot write {args.openmetrics}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(summary.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"serve": _serve, "check-config": _check_config,
               "check-web-config": _check_web_config, "explain": _explain,
               "demo": _demo}[args.command]
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
