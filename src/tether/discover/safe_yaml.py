"""The one YAML loader of discovery: every scanner that reads YAML (Kubernetes manifests,
secrets in YAML files, GitHub Actions workflows, Continue's MCP configuration) reads it
with :func:`load_yaml`.

Untrusted input, so:

* **safe types only** (libyaml's ``CSafeLoader`` when it is there, else ``SafeLoader``):
  no Python objects, ``!!python/...`` tags are an error;
* at most :data:`MAX_DOCUMENTS` documents (``max_documents=1`` for formats that hold one:
  a second document is an error, as ``get_single_node`` made it);
* **no alias bombs**: a document graph that expands to more than :data:`MAX_NODES` nodes
  (every alias counted each time it is used, over the whole stream), or an alias that
  refers to itself, is rejected before anything walks it;
* **no nesting deeper than** :data:`MAX_DEPTH` (counted through aliases too), the same
  cap as the JSONC reader's;
* at most :data:`MAX_CHARS` characters (the walker's file size cap,
  :data:`tether.discover.walk.MAX_BYTES`, so a text from elsewhere is held to it too);
* any failure of the reader, parser or constructor (a bad tag, an unhashable key, a date
  out of range, ...) is a :class:`YamlRejected` (a ``ValueError``) whose message says what
  and where without quoting the text; the documents read before the problem are in its
  ``partial`` attribute. Nothing else is raised.

Duplicate keys are not an error (the last one wins, as in PyYAML and Kubernetes); the lines
the loader gives (:meth:`YamlDocuments.line_of`, :func:`key_lines`) are those of the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from tether.discover.walk import MAX_BYTES

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_DOCUMENTS",
    "MAX_NODES",
    "KeyPath",
    "YamlDocuments",
    "YamlRejected",
    "key_lines",
    "load_yaml",
]

MAX_DOCUMENTS = 1000  # documents read from one file
MAX_NODES = 200_000  # nodes one file may expand to, counting every alias expansion
MAX_DEPTH = 200  # nesting, counted through aliases
MAX_CHARS = MAX_BYTES  # the text of one file

KeyPath = tuple[str | int, ...]


@dataclass
class YamlDocuments:
    """The documents of a YAML stream, the line where each starts, their composed nodes
    (for :func:`key_lines`), and where any mapping in them starts (:meth:`line_of`)."""

    documents: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    nodes: list[Any] = field(default_factory=list)
    _mapping_lines: dict[int, int] = field(default_factory=dict)

    def line_of(self, value: Any) -> int | None:
        return self._mapping_lines.get(id(value))


class YamlRejected(ValueError):
    """The YAML is not read: malformed, too many documents, too deep, or an alias bomb."""

    def __init__(self, message: str, partial: YamlDocuments | None = None) -> None:
        super().__init__(message)
        self.partial = partial if partial is not None else YamlDocuments()


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: twice as fast


class _Loader(_BaseLoader):  # type: ignore[misc]
    """A safe loader that notes the line where each mapping starts."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[int, int] = {}


def _construct_map(loader: _Loader, node: Any) -> Iterator[dict[Any, Any]]:
    data: dict[Any, Any] = {}
    loader.lines[id(data)] = node.start_mark.line + 1
    yield data
    data.update(loader.construct_mapping(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def load_yaml(
    text: str,
    *,
    max_documents: int = MAX_DOCUMENTS,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> YamlDocuments:
    """Every document of ``text``, read safely (see the module documentation). Raises
    :class:`YamlRejected` when the text is malformed, holds more than ``max_documents``
    documents, nests deeper than ``max_depth``, is longer than :data:`MAX_CHARS`, or its
    aliases expand past ``max_nodes`` nodes or loop."""
    found = YamlDocuments()
    if len(text) > MAX_CHARS:
        raise YamlRejected(f"YAML larger than {MAX_CHARS} characters", found)
    loader = None
    budget = max_nodes
    try:
        loader = _Loader(text)
        while loader.check_node():
            if len(found.documents) >= max_documents:
                noun = "document" if max_documents == 1 else "documents"
                raise YamlRejected(f"more than {max_documents} YAML {noun}", found)
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            budget -= _check_graph(node, budget, max_depth, found)
            found.lines.append(node.start_mark.line + 1)
            found.nodes.append(node)
            found.documents.append(loader.construct_document(node))
    except YamlRejected:
        raise
    except Exception as exc:  # untrusted YAML: any reader, parser or constructor failure
        raise YamlRejected(_reason(exc), found) from None
    finally:
        if loader is not None:
            found._mapping_lines = loader.lines
            loader.dispose()
    return found


def key_lines(node: Any, *, depth: int, limit: int = 20_000) -> dict[KeyPath, int]:
    """The 1-based line of each key / list item of a composed ``node`` (by its path), down
    to ``depth`` levels, visiting at most ``limit`` nodes; the first of duplicate keys."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[Any, KeyPath]] = [(node, ())]
    seen = 0
    while stack and seen < limit:
        current, path = stack.pop()
        seen += 1
        if len(path) >= depth:
            continue
        children: list[tuple[Any, KeyPath]] = []
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = str(key_node.value)
                    lines.setdefault((*path, key), key_node.start_mark.line + 1)
                    children.append((value_node, (*path, key)))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines.setdefault((*path, index), item.start_mark.line + 1)
                children.append((item, (*path, index)))
        stack.extend(reversed(children))  # in document order
    return lines


def _check_graph(root: Any, budget: int, max_depth: int, found: YamlDocuments) -> int:
    """The number of nodes ``root`` expands to (aliases counted each time they are used);
    raises :class:`YamlRejected` past ``budget`` or ``max_depth``, or on a node that
    contains itself."""
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        ident = id(node)
        if children_done:
            open_nodes.discard(ident)
            children = list(_children(node))
            size = 1 + sum(sizes[id(child)] for child in children)
            height = 1 + max((heights[id(child)] for child in children), default=0)
            if size > budget:
                raise YamlRejected("YAML aliases expand too far (an alias bomb?)", found)
            if height > max_depth:
                raise YamlRejected(f"YAML nested deeper than {max_depth}", found)
            sizes[ident] = size
            heights[ident] = height
            continue
        if ident in sizes:
            continue
        if ident in open_nodes:
            raise YamlRejected("YAML alias refers to itself", found)
        open_nodes.add(ident)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlRejected("YAML alias refers to itself", found)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _reason(exc: BaseException) -> str:
    """Why the text did not load, without quoting it (YAML errors quote the line)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return f"YAML: {exc.problem or type(exc).__name__}{where}"[:200]
    if isinstance(exc, yaml.YAMLError | RecursionError | MemoryError):
        return f"YAML: {type(exc).__name__}"
    first = str(exc).strip().splitlines()
    return f"YAML: {type(exc).__name__}: {first[0] if first else ''}"[:160]
