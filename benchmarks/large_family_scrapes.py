"""Scrapes of one large metric family against ingest: a real `kpi-exporter serve` (KPI windows
off) holds a histogram rule at the default series cap, 2,000 series of 14 buckets (a 1.5 MB
page), and the same measures as `window_scrapes.py` are taken: scrape time at rest, and the
latency of 100-event export requests without scrapes and while another process scrapes back
to back, in alternating one-second slices. Not a test: nothing here asserts a number.

    python benchmarks/large_family_scrapes.py --tree /path/to/a/checkout --tree ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)

from benchmarks import window_scrapes  # noqa: E402

ITEMS = 2000
CONFIG = """windows: {enabled: false}
rules:
  - metric: app_item_seconds
    type: histogram
    help: A duration by item.
    match: {signal: log, name: app.page_view}
    labels: {item: item}
    value: {attribute: duration}
    buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
"""

_page_views = window_scrapes._body


def _body(indexes: range, users: int, stamp: Any) -> bytes:
    """window_scrapes' page views, each with an item (one of 2,000) and a duration."""
    req = ExportLogsServiceRequest.FromString(_page_views(indexes, users, stamp))
    for i, rec in zip(indexes, req.resource_logs[0].scope_logs[0].log_records):
        item, duration = rec.attributes.add(), rec.attributes.add()
        item.key, item.value.string_value = "item", f"item-{i % ITEMS}"
        duration.key, duration.value.double_value = "duration", (i % 97) / 10
    return req.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout whose exporter to run (repeat to compare; default: "
                             "this one)")
    parser.add_argument("--seconds", type=int, default=10,
                        help="seconds of ingest with scrapes, and as many without (default 10)")
    args = parser.parse_args()
    window_scrapes._body = _body
    run_args = argparse.Namespace(events=10 * ITEMS, users=20_000, batch=2000, scrapes=10,
                                  seconds=args.seconds, request_events=100)
    for tree in args.tree or [ROOT]:
        result = window_scrapes.run(tree.resolve(), "2,000-series histogram", CONFIG, run_args)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
