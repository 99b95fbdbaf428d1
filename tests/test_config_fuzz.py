"""No config file can crash the exporter: thousands of generated configs (config.example.yaml
and a schema of every key, mutated at every level) are each accepted or refused with a
ConfigError whose problems name the file and line; check-config answers each in plain text;
a running exporter refuses each broken one on POST /-/reload and on SIGHUP and keeps serving
with the config it has; every accepted one builds an exporter that ingests and is scraped."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from exporter import config as config_module, privacy, rules, state, web_analytics
from exporter.app import build
from exporter.config import Config, ConfigError, load_config
from exporter.genai import config as genai_config
from exporter.windows import config as windows_config
from tests import configgen
from tests.helpers import ROOT, Scrape, eventually

# Fixed examples (derandomize), no example database: every run, here and in CI, tries the
# same configs. Every key at every level gets every kind of value in the sweep below; the
# random configs add what a sweep does not: several mutations at once, duplicated and
# renamed keys, text cut short. The numbers keep the file near two minutes on two cores.
LOADER_EXAMPLES = 1000
BUILD_EXAMPLES = 100
RELOAD_EXAMPLES = 60
SIGHUP_CONFIGS = 6
CLI_SHARE = 8  # one loader example in 8 is also checked with the real check-config command
# A config that takes longer than this to load is a hang (a normal one takes milliseconds).
HANG_SECONDS = 20
# Each config has its own hang limit above; the whole test may take longer than the suite's
# default limit on a machine busy with other work (it needs about a minute of CPU).
slow = pytest.mark.timeout(1200)


def fixed(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


configs = st.one_of(configgen.from_example, configgen.from_schema)
# Where a problem has no line, it is about the whole file.
WHOLE_FILE = ("the config file must be a YAML mapping", "cannot read the config file")


@contextmanager
def no_hang(what: str) -> Iterator[None]:
    """Fails when the block runs longer than HANG_SECONDS. pytest-timeout's own alarm (the
    same timer) is put back afterwards with what was left of it."""
    def expire(_signum: int, _frame: Any) -> None:
        raise AssertionError(f"{what} took more than {HANG_SECONDS}s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _interval = signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.01))


def verdict(path: Path, **kwargs: Any) -> Config | ConfigError:
    """The loader's answer on a file: a Config, or the ConfigError (any other exception fails
    the test that asked); every problem names the file and, unless it is about the whole
    file, the line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re's FutureWarning on patterns like '[['
        try:
            with no_hang(f"loading {path}"):
                return load_config(str(path), env={}, **kwargs)
        except ConfigError as exc:
            assert exc.problems, "a ConfigError without problems"
            for p in exc.problems:
                assert re.match(rf"{re.escape(str(path))}:\d+: \S", p) or any(
                    p.startswith(f"{path}: {w}") for w in WHOLE_FILE), p
            return exc


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


def loader_keys() -> set[str]:
    """Every key the loader accepts, from its sections' key lists."""
    accepted = set()
    for module in (config_module, rules, windows_config, state, privacy, web_analytics,
                   genai_config):
        for name, value in vars(module).items():
            if re.fullmatch(r"_[A-Z_]*KEYS", name) and isinstance(value, tuple):
                accepted |= set(value)
    assert {"otlp_listen", "equals", "regex", "breakdowns", "interval", "salt", "sources",
            "page_view_events", "input_per_mtok", "builtin_prices", "attribute"} <= accepted
    return accepted


def test_the_schema_covers_every_key_the_loader_accepts():
    assert loader_keys() - configgen.schema_keys() == set()


def test_the_complete_config_holds_every_key_the_loader_accepts_and_is_accepted(tmp_path):
    tree = configgen.complete_tree()
    assert loader_keys() - configgen.keys_of(tree) == set()
    write(tmp_path / "c.yaml", configgen.to_yaml(tree))
    assert isinstance(verdict(tmp_path / "c.yaml"), Config)


# A value of each kind, each wrong somewhere: every value of the complete config is swapped
# for each in turn.
WRONG_KINDS = [5, configgen.Raw(".nan"), True, None, "", "x", [5], configgen.Pairs([("x", [5])])]
# A number no float holds: where it is accepted, the exporter must still serve with it.
HUGE = 10 ** 400


def _near(text: str, path: tuple[int, ...]) -> set[int]:
    """The lines a problem with the node at ``path`` of YAML ``text`` may cite: those of the
    keys and list items leading to it, and those of the mapping or list that holds it (a
    value left out can make a sibling key wrong)."""
    node, lines = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), set()
    for i in path:
        parent = node
        if isinstance(node, yaml.MappingNode):
            key, node = node.value[i]
            lines.add(key.start_mark.line + 1)
        else:
            node = node.value[i]
        lines.add(node.start_mark.line + 1)
    if path:
        lines.update(range(parent.start_mark.line + 1, parent.end_mark.line + 2))
    return lines


@slow
def test_every_value_of_every_section_swapped_for_each_wrong_kind(tmp_path):
    """Not left to chance: each value at every level of a config that holds every key, in
    turn replaced by a value of each kind, is accepted or refused with a problem on its own
    line, the line of a key that holds it, or within the mapping or list that holds it; where
    a number too large for a float is accepted, the exporter serves with it."""
    base = configgen.complete_tree()
    path = tmp_path / "c.yaml"
    seen: Counter[str] = Counter()
    for at in configgen.paths(base):
        for wrong in [*WRONG_KINDS, HUGE]:
            text = configgen.to_yaml(configgen.replaced(base, at, wrong))
            write(path, text)
            answer = verdict(path, overrides={"state_dir": str(tmp_path / "data")})
            if isinstance(answer, Config):
                seen["accepted"] += 1
                if wrong is HUGE:
                    serves(answer)
                continue
            seen["refused"] += 1
            lines = _near(text, at)
            cited = {int(m.group(1)) for p in answer.problems
                     if (m := re.match(rf"{re.escape(str(path))}:(\d+): ", p))}
            assert cited & lines or not at, (at, wrong, answer.problems, text)
    print(f"\n{sum(seen.values())} swapped values: {seen['accepted']} accepted, "
          f"{seen['refused']} refused with their line")
    assert seen["refused"] > seen["accepted"]


def test_generated_yaml_reads_back_as_generated():
    tree = configgen.example_tree()
    assert json.dumps(configgen.tree(yaml.safe_load(configgen.to_yaml(tree)))) == json.dumps(tree)


@slow
def test_every_generated_config_is_accepted_or_refused_with_its_line(tmp_path, record_property):
    """The loader and `kpi-exporter check-config` on thousands of generated configs."""
    seen: Counter[str] = Counter()
    corpus: dict[Path, bool] = {}

    @fixed(LOADER_EXAMPLES)
    @given(configs)
    def check(text: str) -> None:
        path = tmp_path / "config.yaml"
        write(path, text)
        answer = verdict(path)
        seen["accepted" if isinstance(answer, Config) else "refused"] += 1
        if sum(seen.values()) % CLI_SHARE == 0:
            kept = tmp_path / f"c{len(corpus)}.yaml"
            write(kept, text)
            corpus[kept] = isinstance(answer, Config)

    check()
    tried = sum(seen.values())
    record_property("configs_tried", tried)
    print(f"\n{tried} generated configs: {seen['accepted']} accepted, {seen['refused']} refused "
          f"with a ConfigError, none crashed; {len(corpus)} also through check-config")
    assert tried >= LOADER_EXAMPLES
    # both outcomes are exercised, or the generators have gone wrong
    assert seen["accepted"] > tried // 20 and seen["refused"] > tried // 20

    r = subprocess.run([sys.executable, "-m", "exporter", "check-config", *map(str, corpus)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == (0 if all(corpus.values()) else 1), r.stderr[-2000:]
    for path, accepted in corpus.items():
        if accepted:
            assert f"{path}: OK" in r.stdout
        else:
            assert re.search(rf"^{re.escape(str(path))}: \d+ problem\(s\)", r.stderr, re.M)


BATCH = json.dumps({"resourceLogs": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
    "scopeLogs": [{"logRecords": [
        {"eventName": name, "timeUnixNano": "0", "attributes": [
            {"key": k, "value": v} for k, v in (
                ("app.plan", {"stringValue": "pro"}), ("app.platform", {"stringValue": "ios"}),
                ("url.path", {"stringValue": "/x"}), ("n", {"doubleValue": 2.5}),
                ("user.id", {"stringValue": "u1"}), ("session.id", {"stringValue": "s1"}),
                ("app.user", {"stringValue": "u2"}))]}
        for name in ("app.x", "app.page_view", "app.conversion", "app.purchase")]}]}],
}).encode()


def serves(config: Config) -> None:
    """An exporter built on ``config`` ingests a batch, is scraped and saves its state."""
    app = build(config, process_metrics=False)
    try:
        app.pipeline.ingest("log", BATCH, "json")
        scrape = Scrape(generate_latest(app.registry).decode())
        errors = scrape.matching("kpi_exporter_observer_errors_total")
        assert not any(errors.values()), errors
        if app.state is not None:
            assert app.state.save()
    finally:
        app.stop()


@slow
def test_every_accepted_config_builds_an_exporter_that_ingests_and_is_scraped(tmp_path):
    """Accepted is usable: no value that passes the checks fails later, at start, on a batch,
    at a scrape or at a state save."""
    built = Counter[str]()

    @fixed(BUILD_EXAMPLES)
    @given(configgen.from_valid_schema)
    def check(text: str) -> None:
        home = Path(tempfile.mkdtemp(dir=tmp_path))
        write(home / "c.yaml", text)
        answer = verdict(home / "c.yaml", overrides={"state_dir": str(home / "data")})
        # accepted, and on the embedded window store (a shared one is tested on a real Redis
        # in test_windows_redis.py)
        assume(isinstance(answer, Config) and not answer.windows.shared)
        assert isinstance(answer, Config)
        serves(answer)
        built["built"] += 1

    check()
    assert built["built"] >= BUILD_EXAMPLES // 2


CUSTOM = """default_rules: false
rules:
  - metric: app_signups_total
    type: counter
    match: {signal: log, name: app.signup}
"""
SIGNUP = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"eventName": "app.signup"}]}]}]}).encode()


def signups(e: Any) -> float:
    return e.scrape().value("app_signups_total") or 0.0


@slow
def test_reload_endpoint_refuses_every_broken_config_and_keeps_serving(exporter_factory):
    e = exporter_factory(CUSTOM, lifecycle=True)
    path = Path(e.config_path)
    count = Counter[str]()

    @fixed(RELOAD_EXAMPLES)
    @given(configs)
    def check(text: str) -> None:
        write(path, text)
        answer = verdict(path, overrides=e.app.config_overrides)
        r = requests.post(e.metrics_url + "/-/reload", timeout=30)
        assert r.headers["Content-Type"].startswith("text/plain"), r.text
        if isinstance(answer, ConfigError):
            count["refused"] += 1
            assert r.status_code == 400, r.text
            assert r.text.startswith("config reload refused, the running config stays:\n")
            assert r.text.rstrip("\n").split("\n")[1:] == answer.problems
            before = signups(e)
            assert e.post("/v1/logs", SIGNUP).status_code == 200
            assert signups(e) == before + 1  # the old rules still map
        else:
            count["accepted"] += 1
            assert r.status_code == 200, r.text
            write(path, CUSTOM)
            assert requests.post(e.metrics_url + "/-/reload", timeout=30).status_code == 200

    check()
    assert count["refused"] >= RELOAD_EXAMPLES // 2
    s = e.scrape()
    assert s.value("kpi_exporter_config_reloads_total", outcome="failure") == count["refused"]


def test_sighup_refuses_broken_configs_with_a_log_line_and_keeps_serving(process_factory,
                                                                          tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CUSTOM)
    e = process_factory("--config", str(path), "--state-dir", str(tmp_path / "data"))
    broken: list[str] = []

    @fixed(SIGHUP_CONFIGS * 4)
    @given(configs)
    def pick(text: str) -> None:
        probe = tmp_path / "probe.yaml"
        write(probe, text)
        if isinstance(verdict(probe), ConfigError) and len(broken) < SIGHUP_CONFIGS:
            broken.append(text)

    pick()
    assert len(broken) == SIGHUP_CONFIGS
    for i, text in enumerate(broken, 1):
        write(path, text)
        answer = verdict(path)
        assert isinstance(answer, ConfigError)
        e.signal(signal.SIGHUP)
        assert eventually(lambda: e.scrape().value("kpi_exporter_config_reloads_total",
                                                   outcome="failure") == i, timeout=30), e.log()
        before = signups(e)
        assert e.post("/v1/logs", SIGNUP).status_code == 200
        assert signups(e) == before + 1  # the old rules still map
        # the reasons, as logfmt quotes them
        reasons = "; ".join(answer.problems)
        quoted = reasons.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        assert f"config reload refused, keeping the running config: {quoted}" in e.log()
    log = e.log()
    assert log.count("config reload refused") == SIGHUP_CONFIGS
    assert "Traceback" not in log
    assert e.scrape().value("kpi_exporter_config_last_reload_successful") == 0
    assert e.close() == 0
