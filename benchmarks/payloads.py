"""Realistic OTLP log batches for the benchmarks: 512 events of the standard vocabulary, about
six attributes each, from several services, pre-serialized to protobuf."""

from __future__ import annotations

import random
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

SERVICES = ["web", "ios", "android", "api", "worker"]
ROUTES = ["/", "/workouts", "/workouts/:id", "/nutrition", "/profile", "/social/feed"]
FEATURES = ["workout", "nutrition", "profile", "social"]
ACTIONS = ["view", "create", "edit", "delete", "share"]


def _set(rec, key, value):
    kv = rec.attributes.add()
    kv.key = key
    if isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def make_batch(rng: random.Random, size: int = 512, distinct_routes: int | None = None,
               users: int = 50_000) -> bytes:
    """One ExportLogsServiceRequest of ``size`` events spread over the services, from
    ``users`` users with five sessions each.

    ``distinct_routes`` replaces the route template with that many distinct values (for the
    cardinality run)."""
    req = ExportLogsServiceRequest()
    per_service = size // len(SERVICES)
    t0 = time.time_ns() - 60_000_000_000  # a minute ago: inside every KPI window
    for s, service in enumerate(SERVICES):
        rl = req.resource_logs.add()
        for key, value in (("service.name", service), ("service.version", "1.4.2"),
                           ("deployment.environment.name", "prod")):
            kv = rl.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        scope = rl.scope_logs.add()
        scope.scope.name = "kpi.sdk"
        n = per_service + (size - per_service * len(SERVICES) if s == 0 else 0)
        for i in range(n):
            rec = scope.log_records.add()
            rec.time_unix_nano = t0 + i
            user = f"user-{rng.randrange(users)}"
            _set(rec, "user.id", user)
            _set(rec, "session.id", f"{user}-s{rng.randrange(5)}")
            _set(rec, "app.platform", service)
            kind = rng.random()
            if kind < 0.55:
                rec.event_name = "app.page_view"
                route = (f"/item/{rng.randrange(distinct_routes)}" if distinct_routes
                         else rng.choice(ROUTES))
                _set(rec, "url.path", route)
                _set(rec, "http.referrer", "/")
                _set(rec, "app.locale", "en-GB")
            elif kind < 0.85:
                rec.event_name = "app.feature_used"
                _set(rec, "app.feature", rng.choice(FEATURES))
                _set(rec, "app.action", rng.choice(ACTIONS))
                _set(rec, "app.locale", "en-GB")
            elif kind < 0.9:
                rec.event_name = "app.conversion"
                _set(rec, "app.conversion.type", rng.choice(["purchase", "subscribe"]))
                _set(rec, "app.conversion.value", round(rng.uniform(1, 50), 2))
                _set(rec, "app.conversion.currency", "EUR")
            else:
                rec.event_name = "ai.recommendation.generated"
                _set(rec, "gen_ai.request.model", rng.choice(["rec-v1", "rec-v2"]))
                _set(rec, "ai.recommendation.type", rng.choice(FEATURES))
                _set(rec, "ai.recommendation.confidence", rng.random())
    return req.SerializeToString()


def make_batches(count: int = 16, size: int = 512, seed: int = 7,
                 distinct_routes: int | None = None, users: int = 50_000) -> list[bytes]:
    rng = random.Random(seed)
    return [make_batch(rng, size, distinct_routes, users) for _ in range(count)]
