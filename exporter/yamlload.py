"""YAML loading that remembers where each mapping came from, for errors a person can act on."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["Mapping", "load", "line_of", "YAMLLoadError"]


class Mapping(dict[str, Any]):
    """A YAML mapping that knows its line (1-based) in the source file."""

    line: int = 0


class YAMLLoadError(ValueError):
    """The text is not valid YAML (or repeats a key); the message carries the line."""


class _Loader(yaml.SafeLoader):
    pass


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
        if i < merged:
            from_merge.add(key)
        elif key in from_merge:
            from_merge.discard(key)
        elif key in out:
            raise YAMLLoadError(
                f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in the same "
                f"mapping (the first is on line {out.line}); keep one"
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(text: str) -> Any:
    """Parses YAML text; mappings come back as :class:`Mapping` with their line numbers."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YAMLLoadError(f"{where}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YAMLLoadError(str(exc)) from None


def line_of(obj: Any) -> int:
    """The source line of a mapping from :func:`load`, or 0 when unknown."""
    return getattr(obj, "line", 0)
