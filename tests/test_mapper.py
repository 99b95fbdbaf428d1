"""The mapping engine, table-driven: matching, labels, values, aggregation and the store's
caps. No HTTP here; the receiver tests drive the same code over the wire."""

from __future__ import annotations

import math
import time

import pytest

from exporter.mapper import Mapping
from exporter.records import (
    LOG, METRIC, POINT_HISTOGRAM, POINT_SUM, SPAN, TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA,
    Batch, Histogram, Record,
)
from exporter.rules import parse_rules
from exporter.store import OVERFLOW, Store
from exporter import yamlload


def compile_rules(text: str) -> Mapping:
    return Mapping(parse_rules(yamlload.load(text)["rules"]))


def run(mapping: Mapping, records: list[Record], store: Store | None = None, signal: str = LOG):
    store = store or Store(mapping.metrics)
    batch = Batch(signal)
    batch.records.extend(records)
    result = mapping.map_batch(batch)
    store.apply(result.deltas)
    return store, result


def log(name: str, t: int = 1, **attrs) -> Record:
    return Record(LOG, name, t, {k.replace("__", "."): v for k, v in attrs.items()})


MATCH_RULES = """
rules:
  - metric: exact_total
    type: counter
    match: {signal: log, name: app.page_view}
  - metric: glob_total
    type: counter
    match: {signal: log, name: "app.*"}
  - metric: regex_total
    type: counter
    match: {signal: log, name_regex: "ai\\\\.(model|recommendation)\\\\..*"}
  - metric: any_total
    type: counter
    match: {signal: log}
  - metric: cond_total
    type: counter
    match:
      signal: log
      name: "*"
      attributes:
        tier: {in: [pro, team]}
        score: {gte: 0.5, lt: 1}
        country: {regex: "[A-Z]{2}"}
        beta: {exists: false}
        plan: {not_equals: legacy}
"""

SCENARIOS = [
    # (record, metrics it must feed)
    (log("app.page_view"), {"exact_total", "glob_total", "any_total"}),
    (log("app.feature_used"), {"glob_total", "any_total"}),
    (log("ai.model.performance"), {"regex_total", "any_total"}),
    (log("ai.modelx"), {"any_total"}),
    (log(""), {"any_total"}),  # a log without an event name only meets name-less rules
    (log("x", tier="pro", score=0.5, country="DE"), {"any_total", "cond_total"}),
    (log("x", tier="pro", score="0.7", country="DE"), {"any_total", "cond_total"}),
    (log("x", tier="free", score=0.7, country="DE"), {"any_total"}),
    (log("x", tier="pro", score=1, country="DE"), {"any_total"}),
    (log("x", tier="pro", score="high", country="DE"), {"any_total"}),
    (log("x", tier="pro", score=0.7, country="Germany"), {"any_total"}),
    (log("x", tier="pro", score=0.7, country="DE", beta=True), {"any_total"}),
    (log("x", tier="pro", score=0.7, country="DE", plan="legacy"), {"any_total"}),
]


@pytest.mark.parametrize("record,expected", SCENARIOS)
def test_matching(record, expected):
    store, _ = run(compile_rules(MATCH_RULES), [record])
    fed = {name for name, state in store.metrics.items() if state.series}
    assert fed == expected


def test_labels_defaults_fields_fallbacks_and_constants():
    m = compile_rules("""
rules:
  - metric: l_total
    type: counter
    match: {signal: span}
    labels:
      name: {field: name}
      kind: {field: span_kind}
      status: {field: span_status}
      provider: {attribute: [gen_ai.provider.name, gen_ai.system], default: none}
      const: {value: fixed}
      n: count
      err: {attribute: error.type, on_error_status: _OTHER}
""")
    recs = [Record(SPAN, "chat", 1, {"gen_ai.system": "openai", "count": 3}, duration=1,
                   status=2, kind=3),
            Record(SPAN, "chat", 1, {"gen_ai.provider.name": "anthropic", "gen_ai.system": "x",
                                     "error.type": "timeout", "count": True}, duration=1, kind=2),
            Record(SPAN, "embed", 1, {"count": [1, "a"]}, duration=1)]
    store, _ = run(m, recs, signal=SPAN)
    assert store.get("l_total", ("chat", "client", "error", "openai", "fixed", "3", "_OTHER")) == 1
    assert store.get("l_total", ("chat", "server", "unset", "anthropic", "fixed", "true",
                                 "timeout")) == 1
    assert store.get("l_total", ("embed", "unspecified", "unset", "none", "fixed", '[1,"a"]',
                                 "")) == 1


def test_values_scale_histogram_buckets_and_rejections():
    m = compile_rules("""
rules:
  - metric: lat_seconds
    type: histogram
    match: {signal: log, name: req}
    value: {attribute: ms}
    scale: 0.001
    buckets: [0.1, 0.5, 1]
  - metric: req_total
    type: counter
    match: {signal: log, name: req}
""")
    recs = [log("req", ms=100), log("req", ms=100.5), log("req", ms="750"), log("req", ms=5000),
            log("req"),  # no value: the histogram rule does not apply, the counter does
            log("req", ms="slow"), log("req", ms=float("nan")), log("req", ms=[1])]
    store, result = run(m, recs)
    assert store.get("lat_seconds", ()) == pytest.approx([5.9505, 4, 1, 1, 1, 1])
    assert store.get("req_total", ()) == 5
    assert result.rejected == {"non_numeric_value": 2, "non_finite_value": 1}
    assert result.matched == 5 and result.unmatched == 0


def test_negative_counter_increment_is_rejected_not_applied():
    m = compile_rules("""
rules:
  - metric: v_total
    type: counter
    match: {signal: log, name: pay}
    value: {attribute: amount}
""")
    store, result = run(m, [log("pay", amount=5), log("pay", amount=-2)])
    assert store.get("v_total", ()) == 5
    assert result.rejected == {"negative_counter_increment": 1}


def test_gauge_keeps_the_newest_value_by_event_time():
    m = compile_rules("""
rules:
  - metric: acc_ratio
    type: gauge
    match: {signal: log, name: perf}
    value: {attribute: acc}
""")
    store, _ = run(m, [log("perf", t=20, acc=0.9), log("perf", t=10, acc=0.1)])
    assert store.get("acc_ratio", ())[1] == 0.9
    run(m, [log("perf", t=15, acc=0.5)], store)
    assert store.get("acc_ratio", ())[1] == 0.9
    run(m, [log("perf", t=30, acc=0.7)], store)
    assert store.get("acc_ratio", ())[1] == 0.7


CAP_RULE = """
rules:
  - metric: u_total
    type: counter
    match: {signal: log, name: e}
    labels: {v: v}
    max_series: 10
"""


def test_series_cap_sends_new_label_sets_to_one_overflow_series():
    m = compile_rules(CAP_RULE)
    store, _ = run(m, [log("e", v=str(i)) for i in range(100_000)])
    state = store.metrics["u_total"]
    assert len(state.series) == 10
    assert state.series[OVERFLOW] == 100_000 - 9
    # each label set that found no room counts once per request it appears in
    assert state.overflow_updates == 100_000 - 9
    # existing series keep counting; new ones keep overflowing
    run(m, [log("e", v="0"), log("e", v="new")], store)
    assert store.get("u_total", ("0",)) == 2
    assert state.series[OVERFLOW] == 100_000 - 8


def test_long_label_values_are_cut():
    m = compile_rules(CAP_RULE)
    store = Store(m.metrics, max_label_length=8)
    run(m, [log("e", v="x" * 100), log("e", v="x" * 50)], store)
    assert store.get("u_total", ("x" * 8,)) == 2


def test_idle_series_expire_after_their_ttl():
    now = [1000.0]
    m = compile_rules("""
rules:
  - metric: t_total
    type: counter
    match: {signal: log, name: e}
    labels: {v: v}
    series_ttl: 10m
""")
    store = Store(m.metrics, clock=lambda: now[0])
    run(m, [log("e", v="a"), log("e", v="b")], store)
    now[0] += 300
    run(m, [log("e", v="a")], store)
    now[0] += 301
    assert store.expire() == 1
    assert store.get("t_total", ("a",)) == 2 and store.get("t_total", ("b",)) is None
    assert store.metrics["t_total"].expired == 1


HIST_POINT_RULE = """
rules:
  - metric: d_seconds
    type: histogram
    match: {signal: metric, name: d}
    labels: {op: op}
    value: data_point
    buckets: [0.1, 1]
  - metric: c_total
    type: counter
    match: {signal: metric, name: c}
    value: data_point
  - metric: g_ratio
    type: gauge
    match: {signal: metric, name: c}
    value: data_point
"""


def hist_point(counts, total, count, temporality, start=0, bounds=(0.1, 0.5, 1, 5)):
    return Record(METRIC, "d", 10, {"op": "chat"}, value=Histogram(bounds, counts, total, count),
                  point_kind=POINT_HISTOGRAM, temporality=temporality, monotonic=True,
                  start_ns=start)


def sum_point(value, temporality, start=0, monotonic=True):
    return Record(METRIC, "c", 10, {}, value=value, point_kind=POINT_SUM,
                  temporality=temporality, monotonic=monotonic, start_ns=start)


def test_histogram_points_are_rebucketed_into_a_subset_of_their_bounds():
    m = compile_rules(HIST_POINT_RULE)
    store, _ = run(m, [hist_point((1, 2, 3, 4, 5), 30.0, 15, TEMPORALITY_DELTA)], signal=METRIC)
    # bounds 0.1, 0.5, 1, 5 into 0.1, 1: (1) (2+3) (4+5)
    assert store.get("d_seconds", ("chat",)) == [30.0, 15, 1, 5, 9]
    _, result = run(m, [hist_point((1, 1), 1.0, 2, TEMPORALITY_DELTA, bounds=(0.2,))], store,
                    signal=METRIC)
    assert result.rejected == {"bucket_mismatch": 1}
    assert "do not include the rule's bounds" in result.messages[0]


def test_cumulative_points_become_increases_with_reset_detection():
    m = compile_rules(HIST_POINT_RULE)
    store = Store(m.metrics)
    later = store.started_ns + 1  # streams that started after the store did
    for v in (5.0, 8.0, 8.0):
        run(m, [sum_point(v, TEMPORALITY_CUMULATIVE, start=later)], store, signal=METRIC)
    assert store.get("c_total", ()) == 8
    run(m, [sum_point(3.0, TEMPORALITY_CUMULATIVE, start=later + 1)], store, signal=METRIC)  # restart
    assert store.get("c_total", ()) == 11
    run(m, [sum_point(1.0, TEMPORALITY_CUMULATIVE, start=later + 1)], store, signal=METRIC)  # went down
    assert store.get("c_total", ()) == 12
    run(m, [sum_point(2.0, TEMPORALITY_DELTA)], store, signal=METRIC)
    assert store.get("c_total", ()) == 14
    assert store.get("g_ratio", ())[1] == 2.0
    for counts, total in (((1, 0, 0, 0, 0), 0.05), ((2, 1, 0, 0, 1), 10.4)):
        run(m, [hist_point(counts, total, sum(counts), TEMPORALITY_CUMULATIVE, start=later)],
            store, signal=METRIC)
    assert store.get("d_seconds", ("chat",)) == pytest.approx([10.4, 4, 2, 1, 1])


def test_a_stream_started_ahead_of_the_store_clock_is_held_back_not_counted_in_full():
    # a sender whose clock is 10 min fast: its start time looks later than the store's, but
    # it may have started (and been counted) long before a restart of the exporter
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    fast = time.time_ns() + 600 * 10 ** 9
    slow = store.started_ns - 10 ** 9
    for source, value in [("x", 115), ("y", 75), ("x", 120), ("y", 80)]:
        run(m, [source_point(source, value, fast if source == "x" else slow)], store,
            signal=METRIC)
    assert store.get("jobs_total", ()) == 5  # y 75 is a baseline: +5; x is held back
    assert len(store.metrics["jobs_total"].streams) == 1  # y: nothing of x is kept


def test_a_stream_stamped_ahead_is_counted_once_across_a_crash_whose_restart_its_stamp_passes():
    # x's clock is ahead: its start is stamped after the crashed run and the restart alike.
    # The crashed run must not count x while the stamp is ahead, or the restarted run (whose
    # streams are forgotten), seeing a start after its own, counts x's whole total again.
    m = compile_rules(STREAM_RULE)
    crashed = Store(m.metrics)
    ahead = time.time_ns() + 2 * 10 ** 9
    for value in (100, 130):
        run(m, [source_point("x", value, ahead)], crashed, signal=METRIC)
    restarted = Store(m.metrics)  # started before x's stamp
    assert restarted.started_ns < ahead
    while time.time_ns() <= ahead:
        time.sleep(0.05)
    run(m, [source_point("x", 135, ahead)], restarted, signal=METRIC)
    # all of x is counted once: 0 + 135 (before: 30, then 135 again)
    assert (crashed.get("jobs_total", ()) or 0) + restarted.get("jobs_total", ()) == 135
    # once its stamp has passed, x counts as any stream; a later run takes it as a baseline
    run(m, [source_point("x", 140, ahead)], restarted, signal=METRIC)
    assert restarted.get("jobs_total", ()) == 140
    later = Store(m.metrics)
    run(m, [source_point("x", 141, ahead)], later, signal=METRIC)
    assert later.get("jobs_total", ()) == 0


def test_a_stream_stamped_far_ahead_does_not_stop_new_streams_from_counting():
    # a device whose clock is a day ahead is one of the streams the table forgets: its start
    # time must not become the mark below which every new stream is a baseline
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    store.max_streams_per_metric = 1  # and 1 trace
    t0 = store.started_ns
    run(m, [source_point("device", 5, time.time_ns() + 86400 * 10 ** 9)], store,
        signal=METRIC)
    for i, source in enumerate("abc"):  # each evicts the one before; traces are dropped
        run(m, [source_point(source, 10, t0 + 1 + i)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 30
    assert store.metrics["jobs_total"].streams_untraced_ns < time.time_ns()


def test_streams_older_than_the_store_count_from_their_next_point():
    m = compile_rules(HIST_POINT_RULE)
    store = Store(m.metrics)
    before = store.started_ns - 10 ** 9
    run(m, [sum_point(100.0, TEMPORALITY_CUMULATIVE, start=before)], store, signal=METRIC)
    assert store.get("c_total", ()) == 0
    run(m, [sum_point(104.0, TEMPORALITY_CUMULATIVE, start=before)], store, signal=METRIC)
    assert store.get("c_total", ()) == 4


STREAM_RULE = """
rules:
  - metric: jobs_total
    type: counter
    match: {signal: metric, name: jobs}
    value: data_point
    max_series: 1
"""


def source_point(source, value, start):
    """A cumulative point of app.jobs from one source (its own resource attributes)."""
    return Record(METRIC, "jobs", 10, {"service.instance.id": source}, value=float(value),
                  point_kind=POINT_SUM, temporality=TEMPORALITY_CUMULATIVE, monotonic=True,
                  start_ns=start)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("max_streams, expected", [
    # the table holds 4 streams (4 x max_series): the five others evict a; a's next point is
    # a baseline, so its +1 is missed, never its 111 counted again
    (None, 100 + 10 + 5 + 0),
    (8, 100 + 10 + 5 + 1),  # a table large enough keeps a: exact
])
def test_an_evicted_stream_that_comes_back_is_a_baseline_not_counted_twice(max_streams, expected):
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    store.max_streams_per_metric = max_streams
    started = store.started_ns + 1  # every source started after the exporter
    for source, value in [("a", 100), ("a", 110), ("b", 1), ("c", 1), ("d", 1), ("e", 1),
                          ("f", 1), ("a", 111)]:
        run(m, [source_point(source, value, started)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == expected
    state = store.metrics["jobs_total"]
    assert state.streams_evicted == (3 if max_streams is None else 0)  # e, f, a evict a, b, c


def test_a_new_stream_counts_in_full_unless_it_may_be_a_forgotten_one_without_a_trace():
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    store.max_streams_per_metric = 2  # and at most 2 traces of forgotten streams
    t0 = store.started_ns
    for i, source in enumerate("abc"):  # c evicts a, which leaves a trace
        run(m, [source_point(source, 1, t0 + 10 + i)], store, signal=METRIC)
    state = store.metrics["jobs_total"]
    assert (store.get("jobs_total", ()), state.streams_untraced_ns) == (3, 0)
    run(m, [source_point("d", 1, t0 + 20)], store, signal=METRIC)  # new: in full; b evicted
    run(m, [source_point("e", 1, t0 + 21)], store, signal=METRIC)  # new: in full; c evicted,
    assert store.get("jobs_total", ()) == 5  # and a's trace dropped for c's
    # the table lost track of a, which started at t0 + 10: the newest untraced start time
    assert state.streams_untraced_ns == t0 + 10
    # a stream that started no later may be a, counted before: a baseline (it evicts d, and
    # b's trace, t0 + 11, is dropped)
    run(m, [source_point("f", 50, t0 + 10)], store, signal=METRIC)
    assert (store.get("jobs_total", ()), state.streams_untraced_ns) == (5, t0 + 11)
    # one that started after every untraced stream cannot be one of them (those forgotten
    # later left traces), however long after the traces were dropped
    run(m, [source_point("g", 7, t0 + 12)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 12


def test_short_jobs_that_start_after_the_traces_were_dropped_count_in_full():
    # A fleet of one-point jobs (a batch queue, serverless functions with cumulative
    # temporality): once the trace list overflows, traces are dropped all the time; a job
    # that started after every dropped stream is still new, and is its whole count.
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    store.max_streams_per_metric = 2
    t0 = store.started_ns
    for i in range(10):  # ten older jobs fill the table and overflow the traces
        run(m, [source_point(f"old-{i}", 10, t0 + 1 + i)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 100
    assert store.metrics["jobs_total"].streams_untraced_ns == t0 + 6
    # six jobs started after all of them, each sending its only point: 10 each
    for i in range(6):
        run(m, [source_point(f"new-{i}", 10, t0 + 100 + i)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 160


def test_a_forgotten_stream_that_restarted_since_counts_in_full():
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    store.max_streams_per_metric = 1
    t0 = store.started_ns
    run(m, [source_point("a", 100, t0 + 1)], store, signal=METRIC)
    run(m, [source_point("b", 5, t0 + 2)], store, signal=METRIC)  # evicts a: a trace
    run(m, [source_point("a", 120, t0 + 1)], store, signal=METRIC)  # a again: baseline
    assert store.get("jobs_total", ()) == 105
    # b again, forgotten since its 5: a baseline (its +1 is missed); evicts a again
    run(m, [source_point("b", 6, t0 + 2)], store, signal=METRIC)
    # a restarted (a new start time after the one its trace holds): its 3 are all new
    run(m, [source_point("a", 3, t0 + 50)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 108


def test_a_stream_without_a_start_time_counts_from_its_next_point():
    m = compile_rules(STREAM_RULE)
    store = Store(m.metrics)
    run(m, [source_point("a", 40, start=0)], store, signal=METRIC)
    run(m, [source_point("a", 43, start=0)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 3


def test_idle_streams_expire_after_the_stream_ttl_and_come_back_as_baselines():
    m = compile_rules(STREAM_RULE)
    clock = Ticks()
    store = Store(m.metrics, clock=clock)
    store.stream_ttl = 3600
    started = store.started_ns + 1
    run(m, [source_point("a", 100, started)], store, signal=METRIC)
    run(m, [source_point("b", 10, started)], store, signal=METRIC)
    clock.now += 3000
    run(m, [source_point("b", 12, started)], store, signal=METRIC)
    clock.now += 601  # a has sent nothing for 3601 s, b for 601 s
    run(m, [source_point("b", 13, started)], store, signal=METRIC)
    state = store.metrics["jobs_total"]
    assert (list(state.streams), state.streams_expired) == (
        [("jobs_total", "jobs", (("service.instance.id", "b"),))], 1)
    run(m, [source_point("a", 130, started)], store, signal=METRIC)  # back: a baseline
    run(m, [source_point("a", 131, started)], store, signal=METRIC)
    assert store.get("jobs_total", ()) == 100 + 10 + 2 + 1 + 0 + 1
    clock.now += 3601
    assert store.expire() == 0 and not state.streams and state.streams_expired == 3


def test_histogram_points_are_scaled_before_rebucketing():
    m = compile_rules("""
rules:
  - metric: ms_seconds
    type: histogram
    match: {signal: metric, name: d}
    labels: {op: op}
    value: data_point
    scale: 0.001
    buckets: [0.1, 1]
""")
    store, result = run(m, [hist_point((1, 2, 3, 4, 5), 3000.0, 15, TEMPORALITY_DELTA,
                                       bounds=(100, 500, 1000, 5000))], signal=METRIC)
    assert result.rejected == {}
    assert store.get("ms_seconds", ("chat",)) == pytest.approx([3.0, 15, 1, 5, 9])


def test_cumulative_sum_into_a_histogram_is_observed_not_crashing():
    m = compile_rules("""
rules:
  - metric: h_seconds
    type: histogram
    match: {signal: metric, name: c}
    value: data_point
    buckets: [1, 10]
""")
    store = Store(m.metrics)
    run(m, [sum_point(5.0, TEMPORALITY_CUMULATIVE, start=store.started_ns + 1)], store,
        signal=METRIC)
    assert store.get("h_seconds", ()) == [5.0, 1, 0, 1, 0]
    _, result = run(m, [sum_point(5.0, TEMPORALITY_CUMULATIVE, monotonic=False)], store,
                    signal=METRIC)
    assert result.rejected == {"non_monotonic_sum": 1}


def test_updates_mapped_before_a_reshaping_reload_are_dropped_not_misapplied():
    old = compile_rules(HIST_POINT_RULE)
    store = Store(old.metrics)
    batch = Batch(METRIC)
    batch.records.append(hist_point((1, 2, 3, 4, 5), 30.0, 15, TEMPORALITY_DELTA))
    batch.records.append(sum_point(2.0, TEMPORALITY_DELTA))
    in_flight = old.map_batch(batch)
    new = compile_rules(HIST_POINT_RULE.replace("buckets: [0.1, 1]", "buckets: [0.5]"))
    store.reconfigure(new.metrics)
    store.apply(in_flight.deltas)
    assert store.get("d_seconds", ("chat",)) is None  # its buckets changed: not applied
    assert store.get("c_total", ()) == 2  # unchanged metric: applied


ACC_GAUGE_RULE = """
rules:
  - metric: acc_ratio
    type: gauge
    match: {signal: log, name: perf}
    value: {attribute: acc}
"""


def test_a_gauge_stamped_far_in_the_future_does_not_pin_its_value():
    m = compile_rules(ACC_GAUGE_RULE)
    far = time.time_ns() + 10 ** 18
    store, _ = run(m, [log("perf", t=far, acc=0.1)])
    run(m, [log("perf", t=time.time_ns(), acc=0.9)], store)
    assert store.get("acc_ratio", ())[1] == 0.9


def test_a_gauge_stamped_minutes_ahead_counts_as_arriving_then():
    m = compile_rules(ACC_GAUGE_RULE)
    now = 1_700_000_000 * 10 ** 9
    store = Store(m.metrics)
    for t, acc, arrival in ((now + 300 * 10 ** 9, 0.1, now),  # a clock five minutes fast
                            (now + 10 ** 9, 0.9, now + 2 * 10 ** 9)):  # a correct one after it
        batch = Batch(LOG)
        batch.records.append(log("perf", t=t, acc=acc))
        store.apply(m.map_batch(batch, now_ns=arrival).deltas)
    assert store.get("acc_ratio", ()) == [now + 10 ** 9, 0.9]


def test_label_values_cannot_pose_as_the_overflow_series():
    m = compile_rules(CAP_RULE)
    store, _ = run(m, [log("e", v="\x00overflow")])
    assert OVERFLOW not in store.metrics["u_total"].series
    assert store.get("u_total", ("\ufffdoverflow",)) == 1


def test_non_monotonic_sum_cannot_feed_a_counter():
    m = compile_rules(HIST_POINT_RULE)
    _, result = run(m, [sum_point(-3.0, TEMPORALITY_CUMULATIVE, monotonic=False)], signal=METRIC)
    assert result.rejected == {"non_monotonic_sum": 1}


def test_cache_resolves_each_name_once():
    m = compile_rules(MATCH_RULES)
    run(m, [log("app.page_view") for _ in range(50)] + [log("nope") for _ in range(50)])
    assert m.cache_misses == 2 and m.cache_hits == 98


def test_histogram_sum_nan_counts_as_zero():
    m = compile_rules(HIST_POINT_RULE)
    store, _ = run(m, [hist_point((1, 0, 0, 0, 0), math.nan, 1, TEMPORALITY_DELTA)],
                   signal=METRIC)
    assert store.get("d_seconds", ("chat",)) == [0.0, 1, 1, 0, 0]


def test_label_rewrites_and_allow_lists_bound_what_senders_send():
    mapping = compile_rules("""
rules:
  - metric: ops_total
    type: counter
    match: {signal: span}
    labels:
      error_type:
        attribute: error.type
        on_error_status: _OTHER
        rewrite:
          - {regex: "<class '(?:\\\\w+\\\\.)*(\\\\w+)'>", replacement: "$1"}
          - {regex: "HTTP (?P<code>\\\\d+)", replacement: "http_${code}$$"}
        allow: {regex: "[A-Za-z0-9_.$-]{1,20}"}
      reason:
        attribute: gen_ai.response.finish_reasons
        default: none
        rewrite: [{regex: '\\["([^"]*)".*\\]', replacement: $1}]
        allow: [stop, length]
        other: other
""")
    def span(status: int = 0, **attrs) -> Record:
        return Record(SPAN, "chat", 1, {k.replace("__", "."): v for k, v in attrs.items()},
                      status=status)
    store, result = run(mapping, [
        span(error__type="<class 'openai.InternalServerError'>"),
        span(error__type="InternalServerError"),
        span(error__type="<class 'TimeoutError'>"),
        span(error__type="HTTP 429"),
        span(error__type="connection reset by peer while reading the response body"),
        span(error__type="x" * 21),
        span(status=2),
        span(gen_ai__response__finish_reasons=["length", "stop"]),
        span(gen_ai__response__finish_reasons=["content_filter"]),
        span(gen_ai__response__finish_reasons=[]),
    ], signal=SPAN)
    assert result.matched == 10
    assert store.metrics["ops_total"].series == {
        ("InternalServerError", "none"): 2.0, ("TimeoutError", "none"): 1.0,
        ("http_429$", "none"): 1.0, ("_OTHER", "none"): 3.0, ("", "length"): 1.0,
        ("", "other"): 2.0}


def test_label_rewrites_keep_no_oversized_value_in_their_cache():
    mapping = compile_rules("""
rules:
  - metric: ops_total
    type: counter
    match: {signal: span}
    labels:
      error_type: {attribute: error.type, allow: {regex: "[A-Za-z]{1,20}"}}
""")
    transform = mapping.rules[0].labels[0].transform
    assert transform is not None
    long_values = [f"E{i}" + "y" * 10_000 for i in range(50)]
    store, _ = run(mapping, [Record(SPAN, "chat", 1, {"error.type": v})
                             for v in [*long_values, "Timeout", "Timeout"]], signal=SPAN)
    assert store.metrics["ops_total"].series == {("_OTHER",): 50.0, ("Timeout",): 2.0}
    assert list(transform._cache) == ["Timeout"]


def test_cost_rules_ask_the_mappings_pricer():
    class Flat:
        attributes = frozenset({"tokens"})

        def span_cost(self, record: Record, part: str) -> float | None:
            n = record.attributes.get("tokens")
            return None if n is None or part != "input" else n * 0.5

        def point_price(self, record: Record):
            from exporter.mapper import Priced
            return Priced(record.value, 0.25)

    rules = parse_rules(yamlload.load("""
rules:
  - metric: span_usd_total
    type: counter
    match: {signal: span}
    value: {cost: input}
  - metric: span_out_usd_total
    type: counter
    match: {signal: span}
    value: {cost: output}
  - metric: point_usd_total
    type: counter
    match: {signal: metric}
    value: {cost: data_point}
""")["rules"])
    mapping = Mapping(rules, Flat())
    assert "tokens" in mapping.attribute_keys
    store, _ = run(mapping, [Record(SPAN, "s", 1, {"tokens": 4}), Record(SPAN, "s", 1, {})],
                   signal=SPAN)
    assert store.metrics["span_usd_total"].series == {(): 2.0}
    assert store.metrics["span_out_usd_total"].series == {}
    # cumulative points: the increase of the tokens, priced
    start = time.time_ns()
    for total in (10.0, 30.0):
        run(mapping, [Record(METRIC, "m", 1, {}, value=total, point_kind=POINT_SUM,
                             temporality=TEMPORALITY_CUMULATIVE, monotonic=True,
                             start_ns=start)], store, signal=METRIC)
    assert store.metrics["point_usd_total"].series == {(): 7.5}
    # without a pricer, cost rules never apply
    store, result = run(Mapping(rules), [Record(SPAN, "s", 1, {"tokens": 4})], signal=SPAN)
    assert store.metrics["span_usd_total"].series == {} and result.unmatched == 1
