"""What pricing GenAI spans costs the ingest path: the built-in rules map batches of GenAI
spans (decoded OTLP protobuf, as the receiver hands them on) with the price book, and without
one (the cost rules then never apply), in the same run; and one span priced by the price book
against genai-prices' own top-level ``calc_price``. Not a test: nothing here asserts a time.

    python benchmarks/genai_cost.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from genai_prices import Usage, calc_price
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import otlp_protobuf  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.genai import GenAIConfig, PriceBook  # noqa: E402
from exporter.mapper import Mapping  # noqa: E402
from exporter.records import SPAN, Record  # noqa: E402

MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
          ("gcp.gemini", "gemini-2.0-flash"))
BATCH = 512


def spans_body(rng: random.Random) -> bytes:
    """One OTLP request of GenAI chat spans with token usage, cache reads and features."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bench"
    spans = rs.scope_spans.add().spans
    now = time.time_ns()
    for _ in range(BATCH):
        provider, model = rng.choice(MODELS)
        s = spans.add()
        s.name, s.kind = f"chat {model}", 3
        s.trace_id, s.span_id = rng.randbytes(16), rng.randbytes(8)
        s.start_time_unix_nano, s.end_time_unix_nano = now - 800_000_000, now
        tokens = rng.randrange(100, 4000)
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", provider),
                           ("gen_ai.request.model", model),
                           ("app.feature", rng.choice(["search", "chat", "plan"]))):
            a = s.attributes.add()
            a.key, a.value.string_value = key, value
        for key, n in (("gen_ai.usage.input_tokens", tokens),
                       ("gen_ai.usage.cache_read.input_tokens", tokens // 3),
                       ("gen_ai.usage.output_tokens", rng.randrange(20, 800))):
            a = s.attributes.add()
            a.key, a.value.int_value = key, n
    return req.SerializeToString()


def spans_per_second(mapping: Mapping, batches: list, seconds: float) -> float:
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            mapping.map_batch(batch)
            n += len(batch.records)
    return n / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rng = random.Random(7)
    rules = load_config(None, env={}).rules
    bodies = [spans_body(rng) for _ in range(8)]
    plain = Mapping(rules)
    priced = Mapping(rules, PriceBook(GenAIConfig()))
    batches = [otlp_protobuf.decode_traces(b, priced.attribute_keys) for b in bodies]
    spans_per_second(priced, batches[:1], 0.5)  # warm the caches
    without = spans_per_second(plain, batches, args.seconds)
    with_cost = spans_per_second(priced, batches, args.seconds)

    book = PriceBook(GenAIConfig())
    record = Record(SPAN, "chat gpt-4o", time.time_ns(), {
        "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cache_read.input_tokens": 200,
        "gen_ai.usage.output_tokens": 500})
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        book.span_parts(record)
    ours = (time.perf_counter() - started) / n
    usage = Usage(input_tokens=1000, cache_read_tokens=200, output_tokens=500)
    when = datetime.now(timezone.utc)
    started = time.perf_counter()
    for _ in range(n):
        calc_price(usage, "gpt-4o", provider_id="openai", genai_request_timestamp=when)
    theirs = (time.perf_counter() - started) / n

    print(f"GenAI spans mapped by the built-in rules, {BATCH} per batch:")
    print(f"  without pricing (cost rules inert): {without:10.0f} spans/s")
    print(f"  with the price book:                {with_cost:10.0f} spans/s "
          f"({with_cost / without:.0%} of the baseline)")
    print("One span priced (1000 input tokens, 200 cached, 500 output):")
    print(f"  PriceBook.span_parts:               {ours * 1e6:10.1f} us")
    print(f"  genai_prices.calc_price:            {theirs * 1e6:10.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
