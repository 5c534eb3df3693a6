"""Reading a config file's YAML: what ``yaml.safe_load`` accepts silently or crashes on is refused in one line (a key
given twice, nesting past :data:`MAX_NESTING`, an alias that loops or expands past :data:`MAX_VALUES` values)."""

from __future__ import annotations

from typing import Any

import yaml

MAX_NESTING = 64  # the deepest real config (pod_spec_overrides) nests ~12 levels; PyYAML recurses ~3 frames a level
MAX_VALUES = 100_000  # values after expanding aliases (a "billion laughs" file stops here)


class YAMLRefused(Exception):
    """A YAML document PyYAML would load (or crash on), refused: ``problems`` are ``<field path or line N>: <why>``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems[0])


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with a nesting limit checked while composing (PyYAML recurses once per level, so a
    file of 5,000 ``[`` is a RecursionError otherwise)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                line = self.peek_event().start_mark.line + 1
                raise YAMLRefused([f"line {line}: nested more than {MAX_NESTING} levels deep"])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _check_yaml_tree(root: yaml.Node) -> list[str]:
    """Duplicate keys in any mapping (``field path: key given twice (lines A and B)``), and alias trees that loop
    or expand past :data:`MAX_VALUES` values or :data:`MAX_NESTING` levels. Walks the composed node graph,
    where every key keeps its line; each distinct node once."""
    problems: list[tuple[int, str]] = []  # (line, problem)
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once done
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        if done:
            on_path.discard(id(node))
            children = _children(node, path)
            values = 1 + sum(sizes[id(c)][0] for c, _ in children)
            depth = 1 + max((sizes[id(c)][1] for c, _ in children), default=0)
            sizes[id(node)] = (values, depth)
            where = path or f"line {node.start_mark.line + 1}"
            if values > MAX_VALUES:
                raise YAMLRefused([f"{where}: expands to more than {MAX_VALUES:,} values (YAML aliases)"])
            if depth > MAX_NESTING:
                raise YAMLRefused([f"{where}: nested more than {MAX_NESTING} levels deep (YAML aliases)"])
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            where = path or f"line {node.start_mark.line + 1}"
            raise YAMLRefused([f"{where}: refers to itself (a recursive YAML alias)"])
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                text = _key_text(key)
                if text is None or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                if (key.tag, text) in first:
                    where = f"{path}.{text}" if path else text
                    earlier = first[key.tag, text]
                    lines = f"lines {earlier} and {line}" if earlier != line else f"both on line {line}"
                    problems.append((line, f"{where}: key given twice ({lines}); YAML would keep only the last, "
                                           "so remove one"))  # fmt: skip
                else:
                    first[key.tag, text] = line
        stack.append((node, path, True))
        for child, child_path in _children(node, path):
            stack.append((child, child_path, False))
    return [problem for _, problem in sorted(problems)]


def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.SequenceNode):
        return [(c, f"{path}[{i}]") for i, c in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out = []
        for key, value in node.value:
            text = _key_text(key)
            out.append((key, path))
            out.append((value, f"{path}.{text}" if path and text is not None else (text or path)))
        return out
    return []


def load_yaml(text: str) -> Any:
    """The document in ``text`` (None if empty). Raises ``yaml.YAMLError``, or :class:`YAMLRefused` listing every
    duplicate key (or the nesting / alias problem)."""
    loader = _ConfigLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        duplicates = _check_yaml_tree(root)
        if duplicates:
            raise YAMLRefused(duplicates)
        return loader.construct_document(root)
    finally:
        loader.dispose()
