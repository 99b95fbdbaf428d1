"""YAML loading that remembers where each mapping, key and list item came from, for errors a
person can act on. Whatever the text, :func:`load` returns data or raises
:class:`YAMLLoadError` with the line."""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any, Iterator

import yaml
from yaml.constructor import ConstructorError

__all__ = ["Mapping", "Sequence", "load", "line_of", "YAMLLoadError", "MAX_DEPTH"]

# A config is a few levels deep; far deeper nesting is a mistake (or an attack on the parser,
# whose recursion would otherwise end the process's stack).
MAX_DEPTH = 64


class Mapping(dict[Any, Any]):
    """A YAML mapping that knows its line (1-based) in the source file, and each key's."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.key_lines: dict[Any, int] = {}


class Sequence(list[Any]):
    """A YAML sequence that knows its line in the source file, and each item's."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.item_lines: list[int] = []


class YAMLLoadError(ValueError):
    """The text is not valid YAML (or repeats a key); the message carries the line."""


class _Loader(yaml.SafeLoader):
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        kind = _NODE_KINDS.get(node.tag)
        if kind is None:
            raise ConstructorError(None, None, f"the tag {node.tag.replace(_CORE, '!!')!r} is "
                                   f"not supported in a config; write the value without it",
                                   node.start_mark)
        if not isinstance(node, kind):
            raise ConstructorError(None, None, f"a {node.tag.replace(_CORE, '!!')} must be "
                                   f"{_KIND_NAMES[kind]}", node.start_mark)
        patterns = _SCALAR_FORMS.get(node.tag)
        if patterns and not any(p.match(node.value) for p in patterns):
            raise ConstructorError(None, None, f"{_short(node.value)} is not a valid "
                                   f"{node.tag.replace(_CORE, '!!')}", node.start_mark)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            # Well-formed but out of range: an integer of 5000 digits, the 30th of February.
            raise ConstructorError(None, None, f"cannot read {_short(node.value)}: {exc}",
                                   node.start_mark) from None


_CORE = "tag:yaml.org,2002:"
# The tags a config may hold (a tag outside this list, like !!binary or !!set, is refused
# rather than handed to a constructor that expects well-formed input) and their node kind.
_NODE_KINDS: dict[str, type[yaml.Node]] = {
    **{_CORE + t: yaml.ScalarNode for t in ("str", "int", "float", "bool", "null", "timestamp")},
    _CORE + "map": yaml.MappingNode, _CORE + "seq": yaml.SequenceNode,
}
_KIND_NAMES = {yaml.ScalarNode: "a plain value", yaml.MappingNode: "a mapping",
               yaml.SequenceNode: "a list"}
# What an explicitly tagged scalar must look like: what YAML resolves to that tag unprompted.
_SCALAR_FORMS: dict[str, list[re.Pattern[str]]] = {}
for _resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.values():
    for _tag, _pattern in _resolvers:
        if _tag in _NODE_KINDS and _pattern not in _SCALAR_FORMS.setdefault(_tag, []):
            _SCALAR_FORMS[_tag].append(_pattern)
_SCALAR_FORMS[_CORE + "float"] += _SCALAR_FORMS[_CORE + "int"]  # !!float 1 is 1.0


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, bool, float)) or value is None else \
        f"{value!r}" if isinstance(value, int) and value.bit_length() < 128 else "this value"
    return text if len(text) <= 42 else text[:38] + "...'"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    own = sum(1 for k, _v in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    # flatten_mapping puts the keys of merged mappings (`<<: *anchor`) first; the mapping's
    # own keys follow and override them, as YAML merge keys do
    merged = len(node.value) - own
    out = Mapping()
    out.line = node.start_mark.line + 1
    from_merge: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise ConstructorError(None, None, "a key must be a plain value such as a name, "
                                   "not a list or mapping", key_node.start_mark)
        if i < merged:
            from_merge.add(key)
        elif key in from_merge:
            from_merge.discard(key)
        elif key in out:
            raise ConstructorError(None, None, f"key {_short(key)} appears twice in the same "
                                   f"mapping (first on line {out.key_lines[key]}); keep one",
                                   key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Iterator[Sequence]:
    out = Sequence()
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    yield out  # first, so that a sequence may (through an alias) contain itself
    out.extend(loader.construct_sequence(node, deep=True))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load(text: str) -> Any:
    """Parses YAML text; mappings and sequences come back as :class:`Mapping` and
    :class:`Sequence` with their line numbers."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or str(exc)
        if exc.problem and exc.context and exc.problem.startswith("but "):
            # "expected a single document in the stream" + "but found another document"
            what = f"{exc.context}, {exc.problem}"
        raise YAMLLoadError(f"{where}{what}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YAMLLoadError(f"line {line}: the character U+{code:04X} is not allowed in YAML; "
                            f"remove it") from None
    except yaml.YAMLError as exc:
        raise YAMLLoadError(str(exc)) from None


_WHOLE = object()


def line_of(obj: Any, key: Any = _WHOLE) -> int:
    """The source line of ``key`` in a mapping (or of item ``key`` of a sequence) from
    :func:`load`; of the mapping or sequence itself without ``key``; 0 when unknown."""
    if key is not _WHOLE:
        if isinstance(obj, Mapping):
            line = obj.key_lines.get(key, 0) if _hashable(key) else 0
            return line or obj.line
        if isinstance(obj, Sequence) and isinstance(key, int) and 0 <= key < len(obj.item_lines):
            return obj.item_lines[key]
    return getattr(obj, "line", 0)


def _hashable(key: Any) -> bool:
    return isinstance(key, Hashable)
