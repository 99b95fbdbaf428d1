"""Evaluate the generated recording rules over what a real exporter serves, with Prometheus'
own rule engine (``promtool test rules``).

The counters and histograms of a scrape are replayed as series that grow linearly from 0 to
their scraped value over one hour (then hold), so every rate and increase over that hour is
exact: ``rate5m * 3600`` and ``increase1h`` at minute 60 give back the scraped totals. The
checks are promtool ``promql_expr_test`` entries; promtool evaluates the real rule file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from mixin import layout
from mixin.config import CONFIG
from mixin.rule_tests import Values
from tests.helpers import ROOT, Scrape
from tests.test_mixin_promtool import tool

__all__ = ["evaluate", "sample", "EVAL_MINUTE"]

EVAL_MINUTE = 60
INSTANCE = "exporter-1:9464"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(value: float, **labels: str) -> dict[str, Any]:
    """An expected promtool sample; ``job`` is the mixin's."""
    labels = {"job": CONFIG.selector_labels()["job"], **labels}
    body = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return {"labels": f"{{{body}}}", "value": value}


def input_series(scrape: Scrape, prefixes: tuple[str, ...]) -> list[dict[str, str]]:
    """The scrape's samples whose names start with ``prefixes``, as linear ramps."""
    job = CONFIG.selector_labels()
    out = []
    for (name, labels), value in sorted(scrape.samples.items(), key=lambda kv: str(kv[0])):
        if not name.startswith(prefixes):
            continue
        all_labels = {**dict(labels), **job, "instance": INSTANCE}
        body = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(all_labels.items()))
        values = Values().ramp(value / EVAL_MINUTE, EVAL_MINUTE + 1).hold(value, 20)
        out.append({"series": f"{name}{{{body}}}", "values": str(values)})
    return out


def evaluate(scrape: Scrape, checks: list[dict[str, Any]], tmp: Path,
             prefixes: tuple[str, ...] = ("gen_ai_",)) -> str:
    """Runs promtool over the generated recording rules with the scrape as input and
    ``checks`` ({"expr", "exp_samples"}) evaluated at minute 60; returns promtool's output,
    and fails with it when a check does not hold."""
    rules = ROOT / layout.RECORDING_RULES
    doc = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(scrape, prefixes),
            "promql_expr_test": [{**c, "eval_time": f"{EVAL_MINUTE}m"} for c in checks],
        }],
    }
    path = tmp / "recorded.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = subprocess.run([tool("promtool"), "test", "rules", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    return r.stdout
