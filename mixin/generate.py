"""Writes every generated monitoring file: ``python -m mixin.generate`` (``make generate``).

    python -m mixin.generate            # write the files into the repository
    python -m mixin.generate --check    # exit 1 and name the files that differ
    python -m mixin.generate --out DIR  # write into DIR instead
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixin import alerts, configs, dashboards, layout, rule_tests, rules, runbooks
from mixin.config import CONFIG, Config
from mixin.render import GENERATED, to_json, to_yaml

__all__ = ["files", "write", "drift", "main"]

ROOT = Path(__file__).resolve().parent.parent


def files(cfg: Config = CONFIG) -> dict[str, str]:
    """Every generated file's text, by path relative to the repository root."""
    out = {f"{layout.DASHBOARDS_DIR}/{name}": to_json(doc)
           for name, doc in dashboards.build(cfg).items()}
    out[layout.DATASOURCE_PROVISIONING] = to_yaml(
        configs.datasource_provisioning(cfg),
        header=GENERATED + "\nCopy into Grafana's provisioning/datasources/; the dashboards' Data "
        "source variable\ndefaults to this data source (isDefault)."
        + ("\nGrafana expands ${PROMETHEUS_URL} from its environment: set it to where Grafana "
           "reaches Prometheus,\ne.g. http://localhost:9090 (Grafana from a package: "
           "/etc/default/grafana-server) or\nhttp://host.docker.internal:9090 (Grafana in a "
           "container; docker run --add-host=host.docker.internal:host-gateway)."
           if "${PROMETHEUS_URL}" in cfg.datasource_url else ""))
    out[layout.DASHBOARD_PROVISIONING] = to_yaml(
        configs.dashboard_provisioning(cfg),
        header=GENERATED + f"\nCopy into Grafana's provisioning/dashboards/ and mount this "
        f"repository's {layout.DASHBOARDS_DIR}\nat {cfg.grafana_dashboards_path} (docker: -v "
        f"$PWD/{layout.DASHBOARDS_DIR}:{cfg.grafana_dashboards_path}:ro),\nor set "
        "grafana_dashboards_path in mixin/config.py.")
    out[layout.PROMETHEUS_CONFIG] = to_yaml(
        configs.prometheus_config(cfg),
        header=GENERATED + "\nStart Prometheus with --enable-feature=exemplar-storage to keep "
        "the exporter's exemplars\n(trace ids on the latency panels); storage.exemplars sizes "
        "that store. See docs/monitoring.md.")
    out[layout.RECORDING_RULES] = to_yaml(rules.build(cfg))
    out[layout.ALERT_RULES] = to_yaml(alerts.build(cfg))
    out[layout.ALERTMANAGER_CONFIG] = to_yaml(
        configs.alertmanager_config(cfg),
        header=GENERATED + "\nThe webhook URLs are placeholders: point each receiver at your "
        "paging, ticketing\nand chat endpoints.")
    for path, doc in {**rule_tests.recording_rule_test_files(cfg),
                      **rule_tests.alert_test_files(cfg)}.items():
        out[path] = to_yaml(doc)
    out[layout.RUNBOOKS] = runbooks.build(cfg)
    return out


def _stale(root: Path, wanted: dict[str, str]) -> list[str]:
    stale = []
    for d in layout.OWNED_DIRS:
        for f in sorted((root / d).glob("*")) if (root / d).is_dir() else []:
            rel = f.relative_to(root).as_posix()
            if f.is_file() and rel not in wanted:
                stale.append(rel)
    return stale


def drift(root: Path = ROOT, cfg: Config = CONFIG) -> list[str]:
    """Generated files that are missing, differ, or should no longer exist under ``root``."""
    wanted = files(cfg)
    out = [p for p, text in wanted.items()
           if not (root / p).is_file() or (root / p).read_text() != text]
    return out + _stale(root, wanted)


def write(root: Path = ROOT, cfg: Config = CONFIG) -> list[str]:
    """Writes the generated files under ``root``, removes stale ones; returns what changed."""
    wanted = files(cfg)
    changed = []
    for rel, text in wanted.items():
        path = root / rel
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        changed.append(rel)
    for rel in _stale(root, wanted):
        (root / rel).unlink()
        changed.append(rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixin.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a generated file is out of date")
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="directory to write into (default: the repository)")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(args.out)
        for p in stale:
            print(f"out of date: {p} (run `make generate`)", file=sys.stderr)
        return 1 if stale else 0
    for p in write(args.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
