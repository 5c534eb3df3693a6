"""One line per problem: :class:`ConfigError`, and pydantic's validation errors as ``<field path>: <what is wrong>``
(``nodes[1].port``, not pydantic's location tuple), with a did-you-mean for a misspelt key or choice."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from mlperf_assets.config.fields import describe
from mlperf_assets.config.models import MlperfConfig
from mlperf_assets.config.nodes import NODE_CLASSES, RUNNER_KINDS


class ConfigError(Exception):
    """Invalid config: ``problems`` holds one line per problem, each naming the file and the field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def validation_problems(exc: ValidationError, raw: dict) -> list[str]:
    """``<field path>: <message>`` for each error of validating ``raw`` (the file's mapping) as :class:`MlperfConfig`,
    each once; a required field that a misspelt key stood for is reported as that key only."""
    errors = exc.errors(include_url=False)
    suggested = {
        _format_loc(tuple(e["loc"])[:-1] + (m.group(1),))
        for e in errors
        if e["type"] == "extra_forbidden"
        for m in [re.search(r"did you mean '([^']+)'", _message(e, raw)[1])]
        if m
    }
    lines: list[str] = []
    for err in errors:
        where, msg = _message(err, raw)
        if err["type"] == "missing" and where in suggested:
            continue  # reported as the misspelt key
        line = f"{where}: {msg}"
        if line not in lines:
            lines.append(line)
    return lines


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Model classes in an annotation, looking through Optional / Union / Annotated (not through list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, dict):
        return []
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _item_annotation(annotation: Any) -> Any:
    """``X`` for ``list[X]`` (or ``list[X] | None``); None otherwise."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    return None


def _model_for(annotation: Any, raw: Any) -> type[BaseModel] | None:
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    kind = raw.get("runner") if isinstance(raw, dict) else None
    return NODE_CLASSES.get(kind) if models else None


def _fields_at(loc: tuple, data: Any) -> list[str]:
    """Field names allowed at ``loc`` (for did-you-mean), walking the models alongside the raw data."""
    annotation: Any = MlperfConfig
    node = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            annotation = _item_annotation(annotation)
            continue
        model = _model_for(annotation, node)
        if model is None:
            return []
        if part in NODE_CLASSES and part not in model.model_fields:
            continue  # the union tag pydantic inserts after nodes[i]
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        node = node.get(part) if isinstance(node, dict) else None
    model = _model_for(annotation, node)
    if model is None:
        return []
    return [f for f in model.model_fields if f not in ("source_path", "dataset_overridden_by")]


def _format_loc(loc: tuple) -> str:
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif isinstance(previous, int) and part in NODE_CLASSES:
            pass  # the union tag pydantic inserts after nodes[i]
        elif part in ("function-after[_nodes(), list[...]]",) or str(part).startswith("function-"):
            pass
        else:
            parts.append(("." if parts else "") + str(part))
        previous = part
    return "".join(parts) or "(top level)"


def _message(err: dict, data: Any) -> tuple[str, str]:
    """(field path, message) for one pydantic error."""
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1], data)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return _format_loc(loc), f"unknown key{hint}"
    if kind == "missing":
        return _format_loc(loc), "is required"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _format_loc(loc), f"must be one of {', '.join(choices)}, got {value!r}{hint}"
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        close = difflib.get_close_matches(str(tag), RUNNER_KINDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _format_loc(loc) + ".runner", f"must be one of {', '.join(RUNNER_KINDS)}, got {tag!r}{hint}"
    if kind == "union_tag_not_found":
        return _format_loc(loc) + ".runner", f"is required (one of {', '.join(RUNNER_KINDS)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _format_loc(loc), f"must be a mapping, got {describe(value)}"
    if kind == "list_type":
        return _format_loc(loc), f"must be a list, got {describe(value)}"
    if kind == "string_type":
        return _format_loc(loc), f"must be a string, got {describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return _format_loc(loc), f"must be true or false, got {value!r}"
    if kind in ("path_type",):
        return _format_loc(loc), f"must be a path (a string), got {describe(value)}"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
        return _format_loc(loc), msg
    return _format_loc(loc), err["msg"]
