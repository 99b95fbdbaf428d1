"""Config files for property-based tests: drawn from config.example.yaml or from a schema of
every key, then mutated at every level (values swapped for other types, keys dropped,
repeated or renamed, sections replaced by scalars, the text cut short), as YAML text."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


class Pairs(list):  # type: ignore[type-arg]
    """A YAML mapping as (key, value) pairs, so that a key can appear twice."""


class Raw(str):
    """A scalar written into the YAML text as it is: tags, anchors, huge literals, bad syntax."""


def tree(value: Any) -> Any:
    """Plain YAML data (dicts, lists, scalars) as the tree the mutations work on."""
    if isinstance(value, dict):
        return Pairs((k, tree(v)) for k, v in value.items())
    if isinstance(value, list):
        return [tree(v) for v in value]
    return value


@functools.cache
def _example() -> Pairs:
    return tree(yaml.safe_load(EXAMPLE.read_text()))


def example_tree() -> Pairs:
    """config.example.yaml as a tree (a fresh copy each time, for mutations)."""
    return _copy(_example())



def _section(node: Pairs, key: str) -> Pairs:
    return next(v for k, v in node if k == key)


def complete_tree() -> Pairs:
    """config.example.yaml with its commented-out entries filled in, so that every key the
    loader accepts appears at least once with a value it accepts (a fresh copy each time)."""
    node = example_tree()
    server = _section(node, "server")
    _section(server, "auth")[:] = Pairs([("bearer_tokens", ["0123456789abcdef"]),
                                        ("bearer_token_file", "/dev/null")])
    _section(server, "cors")[0] = ("allowed_origins", ["https://app.example.com"])
    windows = _section(node, "windows")
    windows[[k for k, _ in windows].index("breakdowns")] = ("breakdowns", [Pairs([
        ("attribute", "app.platform"), ("label", "platform"), ("max_values", 20),
        ("default", "unknown"), ("windows", ["1d", "7d"])])])
    analytics = _section(node, "web_analytics")
    for i, (key, _v) in enumerate(analytics):
        if key == "internal_hosts":
            analytics[i] = (key, ["www.example.com"])
        elif key == "sources":
            analytics[i] = (key, [
                Pairs([("host", "news.example.org"), ("source", "Example News"),
                       ("medium", "referral")]),
                Pairs([("utm_source", "spring-mailing"), ("source", "Newsletter"),
                       ("medium", "email")])])
    limits = _section(node, "limits")
    limits.insert(0, ("max_streams_per_metric", 8000))
    privacy = _section(node, "privacy")
    privacy.insert(0, ("salt", "0123456789abcdef0123456789abcdef"))
    privacy[[k for k, _ in privacy].index("attribute_denylist")] = (
        "attribute_denylist", ["customer.tax_id", "billing.*"])
    genai = _section(node, "genai")
    genai[[k for k, _ in genai].index("prices")] = ("prices", [Pairs([
        ("model", "ft:gpt-4o-mini:acme:support"), ("provider", "openai"),
        ("input_per_mtok", 0.3), ("output_per_mtok", 1.2), ("cache_read_per_mtok", 0.15),
        ("cache_write_per_mtok", 0.3)])])
    _section(node, "rules").append(Pairs([
        ("metric", "app_feature_uses_total"), ("type", "counter"),
        ("match", Pairs([("signal", "log"), ("name", "app.feature.used")])),
        ("labels", Pairs([
            ("source", Pairs([("value", "app")])),
            ("feature", Pairs([("attribute", "app.feature"), ("allow", ["search", "export"]),
                               ("other", "other")]))]))]))
    return node


def keys_of(node: Any) -> set[str]:
    """Every mapping key in a tree."""
    if isinstance(node, Pairs):
        return {str(k) for k, _v in node} | {k for _k, v in node for k in keys_of(v)}
    if isinstance(node, list) and not isinstance(node, Raw):
        return {k for v in node for k in keys_of(v)}
    return set()

# -- YAML text --------------------------------------------------------------------------------

_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")
# Strings YAML reads back unchanged without quotes (when the resolver keeps them strings).
_PLAIN = re.compile(r"^[A-Za-z0-9_/][A-Za-z0-9_./*()-]*$")
_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"


def _flow(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _PLAIN.match(value) and \
            _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    # quoted on one line when the string holds a line break, so the block layout stays intact
    style = '"' if isinstance(value, str) and _BREAKS.search(value) else None
    text = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=2 ** 31,
                          default_style=style)
    return text.strip()[1:-1]


def _block(node: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    items = node if isinstance(node, Pairs) else [(None, v) for v in node]
    for key, value in items:
        head = f"{pad}{_flow(key)}:" if isinstance(node, Pairs) else f"{pad}-"
        if isinstance(value, (Pairs, list)) and value and not isinstance(value, Raw):
            sub = _block(value, indent + 2)
            if isinstance(node, Pairs):
                out.append(head)
                out += sub
            else:
                out.append(f"{head} {sub[0].lstrip()}")
                out += sub[1:]
        else:
            out.append(f"{head} {_flow(value)}")
    return out


def to_yaml(node: Any) -> str:
    """The tree as block-style YAML (flow style for empty collections and scalars)."""
    if isinstance(node, (Pairs, list)) and node and not isinstance(node, Raw):
        return "\n".join(_block(node, 0)) + "\n"
    return _flow(node) + "\n"


# -- values -----------------------------------------------------------------------------------

# Strings the loader gives a meaning to, right and wrong.
DOMAIN = [
    "5m", "0s", "10s", "90s", "1h", "1d", "7d", "30d", "400d", "401d", "1.5h", "99999999999d",
    "-1s", "5 m", "64MiB", "1GiB", "0", "-1", "10KB", "1e3", "127.0.0.1:0", "0.0.0.0:4318",
    "[::1]:9464", ":4318", "localhost:9464", "host:99999", "ü.example:80", "*",
    "https://app.example.com", "http://a.example.com/path", "user.id", "session.id",
    "customer.email", "app.*", "app.[", "(", "[", "(?P<x", "a{99999999999}", "((((((((((a))))))))))",
    "duration", "data_point", "counter", "gauge", "histogram", "log", "span", "metric", "logs",
    "server", "client", "error", "ok", "unset", "le", "quantile", "__x", "window",
    "otel_metric_overflow", "name", "span_kind", "span_status", "signal", "app_x_total",
    "app_x_seconds", "app_x_ratio", "kpi_exporter_x_total", "x:y", "app.page_view", "a\x00b",
    "/dev/null", "/nonexistent/dir", "ü", "🎉", "\u200b", "a\tb", "line\nbreak", " ",
]

# Scalars only YAML text can hold: tags, anchors and aliases, out-of-range literals.
RAW = [
    "9" * 5000, "-" + "9" * 5000, "1e999", "-1e999", ".NaN", ".inf", "-.inf", "0x1F", "0o17",
    "1_000", "190:20:30", "2001-12-14", "2001-12-14T21:59:43.10-05:00", "!!binary aGVsbG8=",
    "!!set {a, b}", "!!omap [{a: 1}, {b: 2}]", "!!pairs [{a: 1}, {a: 2}]", "!!str 5",
    "!!int '5'", "!!float '1e3'", "!!int 'x'", "!!float 'x'", "!!bool 'x'", "!!null 'x'",
    "!!python/object/apply:os.getcwd []", "!custom x", "&loop [*loop]", "&self {a: *self}",
    "*undefined", "~", "yes", "no", "on", "off", "=", "[" * 3000 + "]" * 3000,
    "{a: " * 1500 + "1" + "}" * 1500, "'unclosed", "\"unclosed", "[a, b", "{a: 1",
    "[x, [y, [z, [1, {k: v}]]]]", "{[a, b]: 1}", "{? {a: 1}: 1}", "{a: 1, a: 2}",
    "{<<: 5}", "{<<: [1]}", "'" + "a" * 3000 + "'",
    # an alias bomb: ten to the eighth strings, by reference
    "[" + ", ".join(f"&bomb{i} [" + ", ".join([f"*bomb{i - 1}" if i else "x"] * 10) + "]"
                    for i in range(9)) + "]",
]

# Mapping keys: the config's own words, near misses, other types.
KEY_WORDS = [
    "server", "limits", "windows", "state", "privacy", "rules", "default_rules", "auth", "cors",
    "match", "labels", "value", "metric", "type", "attributes", "breakdowns", "buckets",
    "signal", "name", "attribute", "field", "default", "equals", "in", "regex", "exists", "gt",
    "servr", "rule", "lables", "Match", "name_regex", "<<", "", " ", "ü", "a" * 300,
]

huge_ints = st.one_of(st.sampled_from([2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30, -(10 ** 30),
                                       10 ** 400, -(10 ** 400)]),
                      st.integers(min_value=-(2 ** 80), max_value=2 ** 80))
long_strings = st.sampled_from(["x" * 5000, "é" * 3000, "a." * 2000, "_" * 1000 + "total"])
scalars = st.one_of(
    st.integers(-5, 5), huge_ints,
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324]),
    st.booleans(), st.none(), st.just(""), st.text(max_size=12), long_strings,
    st.sampled_from(DOMAIN), st.sampled_from(RAW).map(Raw),
)
keys = st.one_of(st.sampled_from(KEY_WORDS), st.text(max_size=10), st.integers(-3, 3),
                 st.booleans(), st.none(), st.floats(allow_nan=False))
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.lists(st.tuples(keys, children), max_size=3).map(Pairs)),
    max_leaves=6,
)


# -- the schema: plausible values for every key -----------------------------------------------

_FIELD_NAMES: set[str] = set()


def _or_weird(strategy: st.SearchStrategy[Any], weird: bool) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``; when ``weird``, one time in eight any value at all."""
    if not weird:
        return strategy
    return st.integers(0, 7).flatmap(lambda i: values if i == 0 else strategy)


def _schema(weird: bool) -> st.SearchStrategy[Pairs]:
    """Configs with any subset of every section's keys, with plausible values (and, when
    ``weird``, now and then a value of the wrong kind at any level)."""

    def maps(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Pairs]:
        names = sorted(fields)
        _FIELD_NAMES.update(names)
        return st.lists(st.sampled_from(names), unique=True, max_size=len(names)).flatmap(
            lambda chosen: st.tuples(*(st.tuples(st.just(n), _or_weird(fields[n], weird))
                                       for n in chosen))
        ).map(Pairs)

    def pairs(k: st.SearchStrategy[Any], v: st.SearchStrategy[Any]) -> st.SearchStrategy[Pairs]:
        return st.lists(st.tuples(k, _or_weird(v, weird)), max_size=3).map(Pairs)

    durations = st.sampled_from(["10s", "30s", "5m", "1h", "1d", "7d", "30d", "400d", 60, 0.5,
                                 "2.5h"])
    listens = st.sampled_from(["0.0.0.0:4318", "127.0.0.1:0", ":9464", "[::1]:9464",
                               "localhost:4318"])
    attr_names = st.sampled_from(["app.plan", "app.platform", "url.path", "service.name",
                                  "http.route", "app.feature", "error.type", "n"])
    label_names = st.sampled_from(["plan", "platform", "route", "service_name", "kind", "x"])
    names = st.lists(attr_names, min_size=1, max_size=3)
    scalar_values = st.one_of(st.text(max_size=8), st.integers(-100, 100), st.booleans(),
                              st.floats(allow_nan=False, allow_infinity=False))
    value_lists = st.lists(scalar_values, min_size=1, max_size=3)
    condition = st.one_of(
        scalar_values,
        maps(equals=scalar_values, not_equals=scalar_values, not_in=value_lists,
             regex=st.sampled_from(["a.*", "[0-9]+", "x|y"]), exists=st.booleans(),
             gt=st.integers(-10, 10), gte=st.floats(-10, 10), lt=st.integers(0, 100),
             lte=st.sampled_from([1, "2.5", 1e9]), **{"in": value_lists}),
    )
    rewrite = maps(regex=st.sampled_from(["(.*)-v[0-9]+", "gpt-(?P<family>[a-z0-9]+).*", "(",
                                          "a"]),
                   replacement=st.sampled_from(["$1", "${family}", "$$", "$2", "x"]))
    # a label may name an attribute the windows are configured to count as an identity
    label_attrs = st.one_of(attr_names, st.sampled_from(["app.user", "app.session"]))
    label_spec = st.one_of(
        label_attrs,
        maps(attribute=st.one_of(label_attrs, names), default=st.text(max_size=8),
             on_error_status=st.sampled_from(["_OTHER", "error"]),
             rewrite=st.lists(rewrite, max_size=2),
             allow=st.one_of(value_lists, maps(regex=st.sampled_from(["[a-z]+", "(["]))),
             other=st.sampled_from(["_OTHER", "other", ""])),
        maps(field=st.sampled_from(["name", "signal", "span_kind", "span_status"])),
        maps(value=scalar_values),
    )
    rule = maps(
        metric=st.sampled_from(["app_x_total", "app_y_seconds", "app_z_ratio", "app_bytes",
                                "checkout_duration_seconds", "app_page_views_total"]),
        type=st.sampled_from(["counter", "gauge", "histogram"]),
        help=st.text(max_size=20),
        match=maps(signal=st.sampled_from(["log", "span", "metric", "events"]),
                   name=st.sampled_from(["app.x", "app.*", "GET /x", "http.server.duration"]),
                   name_regex=st.sampled_from(["app\\..*", "(GET|POST) /.*"]),
                   span_kind=st.one_of(st.sampled_from(["server", "client"]),
                                       st.lists(st.sampled_from(["server", "internal"]),
                                                min_size=1)),
                   span_status=st.lists(st.sampled_from(["ok", "error", "unset"]), min_size=1),
                   attributes=pairs(attr_names, condition)),
        labels=pairs(label_names, label_spec),
        value=st.one_of(st.integers(0, 5), st.sampled_from(["duration", "data_point"]),
                        maps(attribute=attr_names),
                        maps(cost=st.sampled_from(["input", "cache_read", "cache_write",
                                                   "output", "request", "data_point",
                                                   "tokens"]))),
        scale=st.sampled_from([0.001, 1, 60, -1]),
        buckets=st.lists(st.floats(0, 100), min_size=1, max_size=5, unique=True).map(sorted),
        max_series=st.integers(1, 5000),
        series_ttl=durations,
    )
    breakdown = maps(attribute=attr_names, label=label_names, max_values=st.integers(2, 1000),
                     default=st.text(max_size=8), windows=st.lists(durations, max_size=3))
    return maps(
        server=maps(
            otlp_listen=listens, metrics_listen=listens, reuse_port=st.booleans(),
            otlp_grpc_listen=st.one_of(st.just(""), listens), enable_lifecycle=st.booleans(),
            web_config_file=st.sampled_from(["", "/nonexistent/web.yml", "/dev/null"]),
            max_body_size=st.sampled_from(["64MiB", "1KiB", 1048576, "10MB"]),
            max_concurrent_requests=st.integers(1, 64), threads=st.integers(1, 16),
            auth=maps(bearer_tokens=st.lists(st.text("abcdef0123456789", min_size=1,
                                                     max_size=12), max_size=2),
                      bearer_token_file=st.sampled_from(["/dev/null", "/nonexistent/tokens"])),
            cors=maps(allowed_origins=st.lists(st.sampled_from(
                ["*", "https://app.example.com", "http://localhost:3000"])),
                max_age=st.integers(0, 86400)),
        ),
        limits=maps(max_series_per_metric=st.integers(1, 100000),
                    max_label_value_length=st.integers(1, 1024),
                    max_streams_per_metric=st.integers(1, 400000),
                    stream_ttl=st.sampled_from(["1m", "5m", "1h", "1d", "400d", 3600, "59s",
                                                "30s", "0s"])),
        windows=maps(
            enabled=st.booleans(),
            store=st.sampled_from(["memory", "redis://127.0.0.1:1/0", "rediss://h:6380/0",
                                   "redis://:secret@h:6379/1", "redis://h:6379/x",
                                   "http://h:6379", "redis://"]),
            redis_prefix=st.sampled_from(["kpi:", "shop-prod:kpi:", "", "{slot}"]),
            redis_buffer=st.integers(100, 10_000_000),
            durations=st.lists(durations, min_size=1, max_size=5),
            precision=st.integers(8, 18), max_future=durations,
            # url.path is a label of the built-in page view rule: refused as an identity there
            user_attribute=st.sampled_from(["user.id", "enduser.id", "app.user", "url.path"]),
            session_attribute=st.sampled_from(["session.id", "app.session", "url.path"]),
            conversion_events=st.lists(st.sampled_from(["app.conversion", "app.purchase"])),
            breakdowns=st.lists(_or_weird(breakdown, weird), max_size=2),
            session_timeout=st.one_of(durations, st.sampled_from(["2d", "0s"])),
            max_open_sessions=st.integers(100, 1_000_000),
        ),
        web_analytics=maps(
            enabled=st.booleans(),
            page_view_events=st.lists(st.sampled_from(["app.page_view", "app.screen_view"]),
                                      max_size=2),
            session_end_events=st.lists(st.sampled_from(["app.session.end", "session.end",
                                                         "app.page_view"]), max_size=2),
            session_labels=st.lists(st.sampled_from(["source", "device", "country", "browser",
                                                     "medium", "planet"]), max_size=3),
            campaign_label=st.booleans(),
            internal_hosts=st.lists(st.sampled_from(["www.example.com", "shop.example.com",
                                                    "http://x.example.com/", "ü.example"]),
                                    max_size=2),
            sources=st.lists(_or_weird(maps(
                host=st.sampled_from(["news.example.org", "x.example.com:80", "EXAMPLE.ORG"]),
                utm_source=st.sampled_from(["newsletter", " "]),
                source=st.sampled_from(["Example News", ""]),
                medium=st.sampled_from(["referral", "email", "cpc", "Bad Medium"]),
            ), weird), max_size=2),
            bots=st.sampled_from(["exclude", "include", "maybe"]),
            max_values=st.integers(2, 5000), max_routes=st.integers(2, 60000),
        ),
        state=maps(enabled=st.booleans(), dir=st.sampled_from(["./data", "/tmp/x"]),
                   interval=durations),
        privacy=maps(salt=st.text(min_size=16, max_size=40),
                     default_denylist=st.booleans(),
                     attribute_denylist=st.lists(st.sampled_from(
                         ["billing.*", "customer.tax_id", "*secret*"]))),
        default_rules=st.booleans(),
        rules=st.lists(_or_weird(rule, weird), max_size=3),
        genai=maps(
            builtin_prices=st.booleans(),
            prices=st.lists(_or_weird(maps(
                model=st.sampled_from(["gpt-4o", "ft:gpt-4o-mini:acme:support", "m"]),
                provider=st.sampled_from(["openai", "anthropic"]),
                input_per_mtok=st.floats(0, 100), output_per_mtok=st.floats(0, 100),
                cache_read_per_mtok=st.floats(0, 100), cache_write_per_mtok=st.floats(0, 100),
            ), weird), max_size=2),
        ),
    )


schema_tree = _schema(weird=True)
valid_schema_tree = _schema(weird=False)


def schema_keys() -> set[str]:
    """Every key name the schema can produce (to check that it covers the loader's)."""
    return set(_FIELD_NAMES)


# -- mutations --------------------------------------------------------------------------------

def _paths(node: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [path]
    if isinstance(node, Pairs):
        for i, (_k, v) in enumerate(node):
            out += _paths(v, path + (i,))
    elif isinstance(node, list) and not isinstance(node, Raw):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _get(node: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        node = node[i][1] if isinstance(node, Pairs) else node[i]
    return node


def _set(node: Any, path: tuple[int, ...], value: Any) -> Any:
    if not path:
        return value
    parent = _get(node, path[:-1])
    i = path[-1]
    if isinstance(parent, Pairs):
        parent[i] = (parent[i][0], value)
    else:
        parent[i] = value
    return node


def _copy(node: Any) -> Any:
    if isinstance(node, Pairs):
        return Pairs((k, _copy(v)) for k, v in node)
    if isinstance(node, list) and not isinstance(node, Raw):
        return [_copy(v) for v in node]
    return node


def paths(node: Any) -> list[tuple[int, ...]]:
    """The path (indexes from the root) of every node of a tree, the root's first."""
    return _paths(node)


def replaced(node: Any, path: tuple[int, ...], value: Any) -> Any:
    """A copy of the tree with the node at ``path`` replaced by ``value``."""
    return _set(_copy(node), path, value)


MUTATIONS = ("replace", "drop", "repeat", "rename", "add", "scalar_section")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> str:
    """YAML text of a tree from ``base`` with 0 to 4 mutations at any depth, sometimes cut
    short or with a stray character."""
    node = _copy(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(node)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        target = _get(node, path)
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "replace" or not isinstance(target, list) or isinstance(target, Raw):
            node = _set(node, path, draw(values))
        elif kind == "scalar_section":
            node = _set(node, path, draw(scalars))
        elif not target:
            target.append((draw(keys), draw(values)) if isinstance(target, Pairs)
                          else draw(values))
        else:
            i = draw(st.integers(0, len(target) - 1))
            if kind == "drop":
                del target[i]
            elif kind == "repeat":
                item = target[i]
                if isinstance(target, Pairs) and draw(st.booleans()):
                    item = (item[0], draw(values))
                target.insert(draw(st.integers(0, len(target))), _copy(item))
            elif kind == "rename" and isinstance(target, Pairs):
                target[i] = (draw(keys), target[i][1])
            else:  # add
                target.append((draw(keys), draw(values)) if isinstance(target, Pairs)
                              else draw(values))
    text = to_yaml(node)
    edit = draw(st.integers(0, 19))
    if edit == 0 and text:  # cut short
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif edit == 1 and text:  # a stray character
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(list(":-[]{}#&*!|>'\"%@`\t\x00\ufeff"))) + text[at:]
    return text


from_example = mutated(st.builds(example_tree))
from_schema = mutated(schema_tree)
from_valid_schema = st.builds(to_yaml, valid_schema_tree)
