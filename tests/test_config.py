"""check-config and config loading: broken configs are refused with messages a person can
act on; the example config documents every option and passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config
from tests.helpers import ROOT

RULE = "rules:\n  - metric: app_x_total\n    type: counter\n    match: {signal: log, name: app.x}\n"

BROKEN = [
    # (config text, text the message must contain)
    ("rules: [\n", ":2: expected the node content"),
    ("server: {}\n---\nlimits: {}\n",
     ":2: expected a single document in the stream, but found another document"),
    ("server: {otlp_listen: 4318}\n", "server.otlp_listen: expected HOST:PORT"),
    ("server: {otlp_listen: 'x:4318:1'}\n", "is not HOST:PORT"),
    ("server: {max_body_size: lots}\n", "is not a size"),
    ("server: {threads: 0}\n", "server.threads: expected an integer from 1 to 1024"),
    ("servr: {}\n", "did you mean 'server'"),
    ("server:\n  cors: {allowed_origins: ['https://a.example.com/path']}\n", "is not an origin"),
    ("limits: {max_series_per_metric: -1}\n", "limits.max_series_per_metric"),
    ("limits: {max_streams_per_metric: 0}\n", "limits.max_streams_per_metric: expected an "
                                              "integer from 1 to 40000000"),
    ("limits: {stream_ttl: 30s}\n", "limits.stream_ttl: '30s' is shorter than a minute"),
    ("limits: {stream_ttl: often}\n", "limits.stream_ttl: 'often' is not a duration"),
    ("limits: {max_series_per_metric: 1" + "0" * 400 + "}\n",
     "limits.max_series_per_metric: expected an integer from 1 to 10000000 (series of one "
     "metric; past that, drop a label), got 1000"),
    (RULE + "    max_series: 10000001\n", ".max_series: expected an integer from 1 to 10000000"),
    ("rules:\n  - metric: app_x\n    type: counter\n    match: {signal: log, name: a}\n",
     "must end in '_total' (rename it to 'app_x_total')"),
    ("rules:\n  - metric: app_x_total\n    type: gauge\n    match: {signal: log, name: a}\n"
     "    value: {attribute: n}\n", "only counters end in '_total'"),
    ("rules:\n  - metric: app_latency_ms\n    type: histogram\n    match: {signal: log, name: a}\n"
     "    value: {attribute: n}\n", "'_seconds' and convert with 'scale: 0.001'"),
    ("rules:\n  - metric: kpi_exporter_mine_total\n    type: counter\n"
     "    match: {signal: log, name: a}\n", "reserved for the exporter's own metrics"),
    ("rules:\n  - metric: process_open_fds\n    type: gauge\n    match: {signal: log, name: a}\n"
     "    value: {attribute: n}\n", ":2: rules[0] (process_open_fds).metric: 'process_open_fds': "
     "process_*, python_gc_* and python_info are the exporter's own process and runtime metrics"),
    ("rules:\n  - metric: python_gc_objects_collected_total\n    type: counter\n"
     "    match: {signal: log, name: a}\n", "are the exporter's own process and runtime metrics"),
    ("rules:\n  - metric: python_info\n    type: gauge\n    match: {signal: log, name: a}\n"
     "    value: {attribute: n}\n", "are the exporter's own process and runtime metrics"),
    ("rules:\n  - metric: span_time\n    type: histogram\n    match: {signal: span}\n"
     "    value: duration\n", "must end in '_seconds'"),
    (RULE + "    labels: {user: user.id}\n", "app_active_users"),
    (RULE + "    labels: {mail: customer.email}\n", "cannot be a label"),
    (RULE + "    labels: {url.path: url.path}\n", "not a valid Prometheus label name"),
    (RULE + "    labels: {r: {attribute: a, value: b}}\n", "exactly one of"),
    (RULE + "    labels: {r: {field: colour}}\n", "is not one of name, signal"),
    (RULE + "    labelz: {}\n", "did you mean 'labels'"),
    ("rules:\n  - metric: app_x_total\n    type: counter\n    match: {name: a}\n",
     "match: 'signal' is required: log, span or metric"),
    ("rules:\n  - metric: app_x_total\n    type: counter\n    match: {signal: logz, name: a}\n",
     "expected one of log, span, metric"),
    ("rules:\n  - metric: app_x_total\n    type: countr\n    match: {signal: log, name: a}\n",
     "expected one of counter, gauge, histogram"),
    ("rules:\n  - metric: app_x_total\n    type: counter\n"
     "    match: {signal: log, name_regex: '(['}\n", "not a valid regular expression"),
    (RULE.replace("name: app.x}", "name: app.x, attributes: {n: {gt: many}}}"),
     "match.attributes.n.gt: expected a finite number, got 'many'"),
    (RULE.replace("name: app.x}", "name: app.x, attributes: {n: {inn: [1]}}}"),
     "did you mean 'in'"),
    ("rules:\n  - metric: h_seconds\n    type: histogram\n    match: {signal: span}\n"
     "    value: duration\n    buckets: [1, 0.5]\n", "strictly increasing"),
    ("rules:\n  - metric: g_ratio\n    type: gauge\n    match: {signal: log, name: a}\n",
     "a gauge set to a constant"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: log, name: a}\n"
     "    value: duration\n", "'duration' is only known for spans"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: log, name: a}\n"
     "    series_ttl: soon\n", "is not a duration"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: log, name: a}\n"
     "  - metric: c_total\n    type: counter\n    match: {signal: log, name: b}\n"
     "    labels: {x: y}\n", "must agree on its type, labels"),
    ("server: {}\nserver: {}\n", "appears twice"),
    (RULE + "    value: -1\n", "not negative for a counter"),
    (RULE + "    labels: {e: {attribute: e, rewrite: [{regex: '(', replacement: x}]}}\n",
     "rules[0] (app_x_total).labels.e.rewrite[0].regex: '(' is not a valid regular expression"),
    (RULE + "    labels: {e: {attribute: e, rewrite: [{regex: 'a(b)', replacement: $2}]}}\n",
     "replacement: $2 names a group the regex does not have (1 numbered groups)"),
    (RULE + "    labels: {e: {attribute: e, rewrite: [{regex: 'a'}]}}\n",
     "rewrite[0]: expected a mapping with 'regex' and 'replacement'"),
    (RULE + "    labels: {e: {attribute: e, rewrite: {regex: a, replacement: b}}}\n",
     "labels.e.rewrite: expected a list of {regex, replacement}"),
    (RULE + "    labels: {e: {attribute: e, allow: []}}\n",
     "labels.e.allow: expected a non-empty list of values, or {regex: R}"),
    (RULE + "    labels: {e: {attribute: e, other: x}}\n", "labels.e.other: only used with 'allow'"),
    (RULE + "    labels: {e: {value: x, allow: [x]}}\n", "not to a constant 'value'"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: log, name: a}\n"
     "    value: {cost: input}\n", "{cost: input} prices a span's token usage"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: span}\n"
     "    value: {cost: data_point}\n", "{cost: data_point} prices token usage metric points"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: span}\n"
     "    value: {cost: tokens}\n", "value.cost: expected one of input, cache_read"),
    ("rules:\n  - metric: c_usd\n    type: gauge\n    match: {signal: span}\n"
     "    value: {cost: input}\n", "a cost feeds a counter"),
    ("rules:\n  - metric: c_total\n    type: counter\n    match: {signal: span}\n"
     "    value: {cost: input}\n    scale: 100\n", "a cost is in USD; 'scale' does not apply"),
]


# Configs that once ended in a traceback (or, accepted, broke the exporter at start) instead
# of being refused, and what the refusal says now.
ONCE_CRASHED = [
    (RULE + "    labels: {foo: {attribute: 5}}\n",
     ":5: rules[0] (app_x_total).labels.foo.attribute: expected an attribute name or a list of "
     "them, got 5"),
    (RULE + "    labels: {foo: {attribute: a, default: [1, {2: 3}]}}\n",
     ":5: rules[0] (app_x_total).labels.foo.default: expected a string, a number or true/false"),
    (RULE + "    labels: {foo: {value: {a: 1, 2: b}}}\n",
     ":5: rules[0] (app_x_total).labels.foo.value: expected a string, a number or true/false"),
    (RULE.replace("name: app.x}", "name: app.x, attributes: {k: {in: [a, [b, {c: 1, 2: d}]]}}}"),
     ":4: rules[0] (app_x_total).match.attributes.k.in: expected a non-empty list of values"),
    (RULE + "    scale: 1" + "0" * 400 + "\n", ":5: rules[0] (app_x_total).scale: expected a "
                                                 "finite, non-zero number, got 1000"),
    (RULE + "    value: 1" + "0" * 400 + "\n", ":5: rules[0] (app_x_total).value: expected a "
                                                 "finite number"),
    ("rules:\n  - metric: h_seconds\n    type: histogram\n    match: {signal: span}\n"
     "    value: duration\n    buckets: [1, 1" + "0" * 400 + "]\n",
     ":6: rules[0] (h_seconds).buckets: expected a non-empty list of finite numbers"),
    ("windows:\n  durations: [.inf]\n", ":2: windows.durations[0]: inf is not a window"),
    ("windows:\n  breakdowns:\n    - attribute: app.plan\n      windows: [.inf]\n",
     ":4: windows.breakdowns[0].windows: inf is not one of windows.durations"),
    ("state:\n  interval: 1.0e+300\n", ":2: state.interval: 1e+300 is not a duration"),
    ("server:\n  threads: 1000000000\n", ":2: server.threads: expected an integer from 1 to 1024"),
    ("server:\n  otlp_listen: 'ü.example:4318'\n", ":2: server.otlp_listen: 'ü.example:4318' is "
                                                  "not HOST:PORT"),
    ("server:\n  auth:\n    bearer_token_file: /dev/zero\n",
     ":3: server.auth.bearer_token_file: cannot read '/dev/zero': it is larger than 1 MiB"),
    ("server:\n  auth:\n    bearer_token_file: \"a\\0b\"\n",
     ":3: server.auth.bearer_token_file: cannot read 'a\\x00b': a path cannot contain a NUL"),
    ("state:\n  dir: \"a\\0b\"\n", ":2: state.dir: a path cannot contain a NUL character"),
    ("server:\n  web_config_file: \"a\\0b\"\n",
     ":2: server.web_config_file: a path cannot contain a NUL character"),
    ("server:\n  threads: " + "9" * 5000 + "\n", ":2: cannot read '99999"),
    ("a: !!float x\n", ":1: 'x' is not a valid !!float"),
    ("a: !!bool maybe\n", ":1: 'maybe' is not a valid !!bool"),
    ("a: !!timestamp x\n", ":1: 'x' is not a valid !!timestamp"),
    ("a: !!seq {b: 1}\n", ":1: a !!seq must be a list"),
    ("a: !!binary aGk=\n", ":1: the tag '!!binary' is not supported in a config"),
    ("? [a, b]\n: 1\n", ":1: a key must be a plain value such as a name"),
    ("rules: " + "[" * 5000 + "]" * 5000 + "\n", ":1: nested more than 64 levels deep"),
    ("rules:\n  - &r [*r]\n", ":2: found unconstructable recursive node"),
    # an alias bomb: a billion strings by reference, refused by type before anything walks it
    ("b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]\n" for i in range(1, 9))
     + RULE + "    labels: {x: {attribute: a, default: *b8}}\n",
     ":14: rules[0] (app_x_total).labels.x.default: expected a string, a number or true/false"),
    ("b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]\n" for i in range(1, 9))
     + RULE.replace("name: app.x}", "name: app.x, attributes: {k: {in: *b8, equals: *b8}}}"),
     ":13: rules[0] (app_x_total).match.attributes.k.in: expected a non-empty list of values"),
]


@pytest.mark.parametrize("text,needle", ONCE_CRASHED,
                         ids=[f"once_crashed{i}" for i in range(len(ONCE_CRASHED))])
def test_configs_that_once_crashed_the_loader_are_refused_with_their_line(tmp_path, text, needle):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    message = "\n".join(err.value.problems)
    assert f"{path}{needle}" in message
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", p) for p in err.value.problems), message


def test_files_a_config_names_never_keep_the_loader_waiting(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: it reads as empty instead of blocking the open
    path = tmp_path / "c.yaml"
    path.write_text(f"server:\n  auth:\n    bearer_token_file: {fifo}\n"
                    f"  web_config_file: {fifo}\n")
    config = load_config(str(path), env={})
    assert config.server.bearer_tokens == () and config.server.web is not None
    assert load_config(str(fifo), env={}).user_rule_count == 0
    path.write_text("server:\n  web_config_file: /dev/zero\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [f"{path}:2: server.web_config_file: /dev/zero: cannot read "
                                  f"the web config file: it is larger than 1 MiB"]


def test_files_that_are_not_utf8_are_refused_with_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"server:\n  otlp_listen: \xff\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [f"{path}:2: the file is not UTF-8 text (byte 23); save it as "
                                  f"UTF-8"]
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"\xfe\xff\n")
    path.write_text(f"server:\n  auth:\n    bearer_token_file: {tokens}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [f"{path}:3: server.auth.bearer_token_file: cannot read "
                                  f"{str(tokens)!r}: not UTF-8 text (byte 0)"]


def test_every_problem_names_the_line_of_its_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  threads: many\n  cors:\n    max_age: -1\nlimits:\n"
                    "  max_series_per_metric: 0\nwindows:\n  precision: 99\n"
                    "  user_attribute: user.email\nstate:\n  enabled: sometimes\n"
                    "default_rules: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert [p.split(": ", 2)[:2] for p in err.value.problems] == [
        [f"{path}:2", "server.threads"], [f"{path}:4", "server.cors.max_age"],
        [f"{path}:6", "limits.max_series_per_metric"], [f"{path}:12", "default_rules"],
        [f"{path}:8", "windows.precision"], [f"{path}:9", "windows.user_attribute"],
        [f"{path}:11", "state.enabled"]]


@pytest.mark.parametrize("text,needle", BROKEN, ids=[f"broken{i}" for i in range(len(BROKEN))])
def test_broken_configs_are_refused_with_an_actionable_message(tmp_path, text, needle):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    message = "\n".join(err.value.problems)
    assert needle in message
    assert all(p.startswith(str(path)) for p in err.value.problems), message


def test_errors_name_the_line_of_the_rule(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# comment\n\nrules:\n  - metric: ok_total\n    type: counter\n"
                    "    match: {signal: log, name: a}\n  - metric: bad\n    type: counter\n"
                    "    match: {signal: log, name: b}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [
        f"{path}:7: rules[1] (bad).metric: 'bad': a counter's name must end in '_total' "
        f"(rename it to 'bad_total')"]


def test_a_rule_missing_its_metric_or_signal_still_has_every_other_problem_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rules:\n  - type: counter\n    match: {signal: log, name: x}\n"
                    "  - metric: b_total\n    type: counter\n"
                    "    match: {nmae: x, span_kind: [bogus], attributes: 5}\n"
                    "  - metric: c_total\n    type: counter\n    match: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [
        f"{path}:2: rules[0]: 'metric' is required: the Prometheus metric name, like "
        f"app_signups_total",
        f"{path}:6: rules[1] (b_total).match: unknown key 'nmae'; did you mean 'name'?",
        f"{path}:6: rules[1] (b_total).match: 'signal' is required: log, span or metric",
        f"{path}:6: rules[1] (b_total).match.attributes: expected a mapping of attribute to "
        f"condition, got 5",
        f"{path}:6: rules[1] (b_total).match.span_kind: 'bogus' is not one of unspecified, "
        f"internal, server, client, producer, consumer",
        f"{path}:9: rules[2] (c_total).match: expected a mapping with at least 'signal' (log, "
        f"span or metric), got 5",
    ]


def test_a_missing_required_key_is_called_required_not_none(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("windows:\n  breakdowns:\n    - {label: x}\ngenai:\n  prices:\n"
                    "    - {input_per_mtok: 1}\nweb_analytics:\n  sources:\n"
                    "    - {host: a.example.com}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [
        f"{path}:3: windows.breakdowns[0]: 'attribute' is required: an attribute name like "
        f"app.platform",
        f"{path}:9: web_analytics.sources[0]: 'source' is required: the source's display name, "
        f"like 'Example News'",
        f"{path}:6: genai.prices[0]: 'model' is required: the model name as the "
        f"instrumentation reports it (gen_ai.request.model or gen_ai.response.model)",
        f"{path}:6: genai.prices[0]: 'output_per_mtok' is required: USD per million tokens (for "
        f"example 2.5)",
    ]


@pytest.mark.parametrize("windows, key", [
    ("windows: {user_attribute: customer_no}\n", "windows.user_attribute"),
    ("windows: {enabled: false, session_attribute: customer_no}\n",
     "windows.session_attribute"),
])
def test_a_configured_identity_is_refused_as_a_label_with_the_rule_and_line(tmp_path, windows,
                                                                            key):
    path = tmp_path / "c.yaml"
    path.write_text(windows + "rules:\n  - metric: app_orders_total\n    type: counter\n"
                    "    match: {signal: log, name: app.order}\n"
                    "    labels: {region: region, customer: {attribute: [account, customer_no]}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert err.value.problems == [
        f"{path}:3: rules[0] (app_orders_total).labels.customer: attribute 'customer_no' is "
        f"{key}, an identity the KPI windows count; it cannot be a label (one series per "
        f"identity floods Prometheus and puts raw ids on /metrics); count distinct users and "
        f"sessions with the KPI windows instead: app_active_users and app_sessions "
        f"(docs/kpis.md)"]
    assert run_cli("check-config", str(path)).returncode == 1


def test_a_configured_identity_as_a_label_is_reported_with_the_other_rules_problems(tmp_path):
    # one pass names every problem: a rule with a problem of its own does not hide the
    # identity label of another
    path = tmp_path / "c.yaml"
    path.write_text("windows: {user_attribute: customer_no}\n"
                    "rules:\n"
                    "  - metric: app_orders_total\n    type: counter\n"
                    "    match: {signal: log, name: app.order}\n"
                    "    labels: {customer: customer_no}\n"
                    "  - metric: app_logins_total\n    type: counter\n"
                    "    match: {signal: log, name: app.login}\n"
                    "    labels: {user: enduser.id}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert [p.split(" is ")[0].split(" identifies ")[0] for p in err.value.problems] == [
        f"{path}:10: rules[1] (app_logins_total).labels.user: attribute 'enduser.id'",
        f"{path}:3: rules[0] (app_orders_total).labels.customer: attribute 'customer_no'"]
    assert "'customer_no' is windows.user_attribute" in err.value.problems[1]


def test_a_configured_identity_is_refused_as_a_label_of_the_builtin_rules(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("windows: {session_attribute: url.path}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(
        f"{path}:1: built-in rules[1] (app_page_views_total).labels.route: attribute 'url.path' "
        f"is windows.session_attribute")
    # a rule of one's own for that metric replaces the built-in one
    path.write_text("windows: {session_attribute: url.path}\nrules:\n"
                    "  - metric: app_page_views_total\n    type: counter\n"
                    "    match: {signal: log, name: app.page_view}\n")
    assert load_config(str(path), env={}).windows.session_attribute == "url.path"


def test_all_problems_are_reported_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server: {otlp_listen: nope}\nrules:\n  - metric: a\n    type: counter\n"
                    "    match: {signal: log}\n  - metric: b_total\n    type: nope\n"
                    "    match: {signal: log}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert len(err.value.problems) == 3


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, input=stdin, cwd=ROOT, timeout=60)


def test_check_config_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULE + "    labels: {user: user.id}\n")
    r = run_cli("check-config", str(bad))
    assert r.returncode == 1
    assert "user.id" in r.stderr and "1 problem(s)" in r.stderr
    r = run_cli("check-config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read the config file" in r.stderr


def _yaml_keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(map(str, node)) | set().union(*(_yaml_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_yaml_keys(v) for v in node)) if node else set()
    return set()


def test_example_config_passes_and_documents_every_option():
    import yaml

    from exporter import config, privacy, rules, state, web_analytics, windows
    from exporter.genai import config as genai_config

    r = run_cli("check-config", "config.example.yaml")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    text = (ROOT / "config.example.yaml").read_text()
    # every key any section of the config accepts: the modules' *_KEYS tuples
    accepted = set()
    for module in (config, rules, windows, state, privacy, genai_config, web_analytics):
        for name, value in vars(module).items():
            if re.fullmatch(r"_[A-Z_]*KEYS", name) and isinstance(value, tuple):
                accepted |= set(value)
    assert {"otlp_listen", "equals", "regex", "lte", "on_error_status"} <= accepted
    # keys set in the file, and keys shown commented out at the start of a line
    documented = _yaml_keys(yaml.safe_load(text))
    documented |= set(re.findall(r"^\s*#\s*-?\s*([a-z_]+):\s", text, re.M))
    assert accepted - documented == set()


def test_environment_and_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server: {otlp_listen: '127.0.0.1:1111', metrics_listen: '127.0.0.1:2222'}\n")
    cfg = load_config(str(path), env={"KPI_EXPORTER_OTLP_LISTEN": "127.0.0.1:3333",
                                      "KPI_EXPORTER_BEARER_TOKEN": "t"},
                      overrides={"metrics_listen": "127.0.0.1:4444"})
    assert cfg.server.otlp_listen == "127.0.0.1:3333"
    assert cfg.server.metrics_listen == "127.0.0.1:4444"
    assert cfg.server.bearer_tokens == ("t",)


def test_user_rule_replaces_the_builtin_rules_for_its_metric(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rules:\n  - metric: app_page_views_total\n    type: counter\n"
                    "    match: {signal: log, name: app.page_view}\n    labels: {route: url.path}\n")
    cfg = load_config(str(path), env={})
    mine = [r for r in cfg.rules if r.metric.name == "app_page_views_total"]
    assert len(mine) == 1 and mine[0].metric.label_names == ("route",)
    assert any(r.metric.name == "app_events_total" for r in cfg.rules)
    path.write_text("default_rules: false\n")
    assert load_config(str(path), env={}).rules == []


def test_builtin_rules_cover_the_event_vocabulary():
    names = {r.metric.name for r in load_config(None, env={}).rules}
    arch = Path(ROOT.parent / "shared" / "ARCHITECTURE.md")
    expected = {"app_events_total", "app_page_views_total", "app_feature_usage_total",
                "app_conversions_total", "ai_recommendations_total",
                "ai_recommendation_confidence", "ai_recommendation_responses_total",
                "ai_recommendation_response_time_seconds", "ai_model_accuracy_ratio",
                "ai_model_latency_seconds", "ai_model_error_rate_ratio",
                "gen_ai_client_operation_duration_seconds", "gen_ai_client_token_usage",
                "gen_ai_evaluation_score"}
    assert expected <= names
    if arch.exists():  # the shared design brief lists the same names
        table = set(re.findall(r"^\| `([a-z_]+)` \| (?:counter|gauge|histogram)", arch.read_text(), re.M))
        window_gauges = {"app_active_users", "app_sessions", "app_conversion_rate_ratio"}
        assert table - window_gauges <= names
