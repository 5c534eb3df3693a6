"""What the config models share: constrained scalar types whose messages read well on one line, environment
variable names, the model base (unknown keys refused), and how a path field resolves against the file's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from mlperf_assets.harness.settings import positive_number


def _int_in(lo: int | None, hi: int | None):
    if lo is not None and hi is not None:
        what = f"an integer between {lo} and {hi}"
    elif lo == 0:
        what = "an integer >= 0"
    elif lo == 1:
        what = "a positive integer"
    else:
        what = "an integer"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"must be {what}, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"must be {what}, got {value!r}")
        return value

    return BeforeValidator(check)


Port = Annotated[int, _int_in(1, 65535)]
PositiveInt = Annotated[int, _int_in(1, None)]
NonNegativeInt = Annotated[int, _int_in(0, None)]
PositiveFloat = Annotated[float, BeforeValidator(positive_number)]  # finite and > 0, as LoadGen rates are checked

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: Any) -> str:
    """One entry of ``forward_env``: a variable NAME. A ``NAME=VALUE`` entry is refused without echoing the value."""
    if not isinstance(value, str):
        raise ValueError(f"must be an environment variable name (a string), got {describe(value)}")
    if "=" in value:
        raise ValueError(
            f"must be an environment variable NAME such as {value.split('=', 1)[0].strip() or 'HF_TOKEN'!r}, "
            "not NAME=VALUE: the value stays in the orchestrator's environment (value not shown)"
        )
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"must be an environment variable NAME (letters, digits and '_'), got {value!r}")
    return value


EnvName = Annotated[str, BeforeValidator(_env_name)]


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=False)


def describe(value: Any) -> str:
    """What kind of YAML value ``value`` is, for a message: ``a mapping``, ``a list``, ``null``, ..."""
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def absolute_path(path: Path) -> Path:
    """``path.resolve()``, or the plain absolute path where resolving fails (a symlink loop raises RuntimeError in
    Python 3.11, a vanished working folder OSError): the file's own read then reports the problem in one line."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def resolve_path(base: Path, path: Path | None) -> Path | None:
    """``path`` with ``~`` expanded, relative to ``base`` (the config file's folder); None stays None."""
    if path is None:
        return None
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else absolute_path(base / path)

