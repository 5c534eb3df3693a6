"""The ``endpoints:`` block: an MLPerf Endpoints curve of one server with MLCommons' reference client.

What runs: the client (the user's installed ``inference-endpoint`` command, in its own Python >= 3.12 venv; its
checkout is recorded), against a server (``external``: a URL someone else runs; ``vllm``: a vLLM OpenAI server the
point starts on the node with one fixed launch recipe for the whole curve; ``echo``: the client's own echo server,
for trying the platform out). Which points: ``points: auto`` (the planner picks them from the regions the checker
computes) or a list of concurrencies. Durations and query counts follow the rules unless ``shortened: true``, which
makes a smoke curve labelled unofficial everywhere. ``system``/``power``: the disclosure the checker requires
(``config/endpoints_disclosure.py``). Pure: validated here, planned in ``endpoints/plan.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlperf_assets.config.fields import ConfigModel, Port, PositiveFloat, PositiveInt, resolve_path

try:  # helper H's models; until they exist, the blocks are kept as plain mappings
    from mlperf_assets.config.endpoints_disclosure import EndpointsPower, EndpointsSystem
except ImportError:  # pragma: no cover - temporary
    EndpointsSystem = EndpointsPower = dict  # type: ignore[misc,assignment]

ENDPOINTS_BENCHMARKS = ("llama3_1-8b",)  # the checker's model_name (not llama3.1-8b: see findings §2.5)
SERVER_LAUNCHES = ("external", "vllm", "echo")
OFFLINE_MODES = ("dedicated", "elected")
DIVISIONS = ("Standardized", "RDI", "Serviced")
ACCURACY_SCORERS = ("rouge", "string_match", "pass_at_1")
COHORT_RE = re.compile(r"\d{4}-\d{2}-C[01]")
ULTRA_LOW_MAX = 32  # the fixed Ultra Low Concurrency range is 1-32 (rules 5.4); C_max must be above it


class EndpointsClientConfig(ConfigModel):
    """The reference client as installed by the user (never copied into the project)."""

    command: str = "inference-endpoint"  # the client's command (a path or a name on the node's PATH)
    python: str | None = None  # its venv's Python (echo server, steady-state detector); default: beside the command
    checkout: Path | None = None  # the user's checkout it was installed from (its commit is recorded)
    commit: str | None = None  # the commit, when there is no checkout to read it from
    num_workers: int = 1  # the client's worker processes (settings.client.num_workers; -1 = auto)
    accuracy_scorer: Literal[ACCURACY_SCORERS] = "rouge"  # the client's scorer of accuracy runs (rouge is MLPerf's)
    # more of the client's own settings.client keys, verbatim (e.g. warmup_connections: 0); its YAML is the only
    # way the rules allow to configure it
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def python_path(self) -> str:
        if self.python:
            return self.python
        command = Path(self.command)
        return str(command.parent / "python") if command.parent != Path(".") else "python3"


class EndpointsServerConfig(ConfigModel):
    """The server under test: one configuration for the whole curve."""

    launch: Literal[SERVER_LAUNCHES] = "external"
    url: str | None = None  # external: its base URL (http://host:port)
    port: Port | None = None  # vllm / echo: the port it listens on (default: a free one)
    model: str = "meta-llama/Llama-3.1-8B-Instruct"  # the model name the client sends
    tokenizer: str | None = None  # the client's tokenizer for token counts (HF name or local folder); default: model
    vllm_python: str | None = None  # vllm: the Python with vLLM installed (default: the node's python)
    vllm_args: list[str] = Field(default_factory=list)  # vllm: extra `vllm serve` arguments, each one argv element
    ready_timeout_s: PositiveFloat = 900.0  # how long a started server may take to listen

    @model_validator(mode="after")
    def _shape(self) -> "EndpointsServerConfig":
        if self.launch == "external":
            if not self.url:
                raise ValueError("url: required when launch is external (the server's base URL, http://host:port)")
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
                raise ValueError(f"url: must be http://host:port or https://host:port, got {self.url!r}")
        elif self.url:
            raise ValueError(f"url: set only for launch external (a {self.launch} server's URL is its port's)")
        if self.launch != "vllm" and self.vllm_args:
            raise ValueError("vllm_args: only for launch vllm")
        if self.launch != "echo" and not self.tokenizer and "/" not in self.model:
            # the client counts tokens (ISL, OSL, TPOT, TPS) with the model's tokenizer; a bare served name such as
            # "llama" loads none, and the curve would have no TPOT (only the echo server gets a stand-in)
            raise ValueError(f"tokenizer: required when model ({self.model!r}) is not a Hugging Face repo id or a "
                             "folder: the client counts tokens (TPOT, TPS) with the model's own tokenizer")
        return self


class EndpointsConfig(ConfigModel):
    """An MLPerf Endpoints curve (``mlperf-dagster endpoints plan|run|status|package|check``)."""

    node: str | None = None  # where the client runs (default: the first node)
    client: EndpointsClientConfig = Field(default_factory=EndpointsClientConfig)
    server: EndpointsServerConfig
    benchmark: Literal[ENDPOINTS_BENCHMARKS] = "llama3_1-8b"
    points: Literal["auto"] | list[PositiveInt] = "auto"  # concurrencies (Offline added by `offline`)
    lowest_concurrency: PositiveInt = 1  # auto: the curve's C_min (1-32)
    highest_concurrency: PositiveInt | None = None  # C_max (> 32); None: found by short probes
    offline: Literal[OFFLINE_MODES] = "dedicated"  # dedicated: its own max-throughput point; elected: the C_max point
    division: Literal[DIVISIONS] = "RDI"
    seed_set: str = "A"  # a published seed set (the checker's registry)
    target_cohort: str | None = None  # YYYY-MM-C0|C1; default: the seed set's newest adoption cohort
    shortened: bool = False  # a smoke curve: few queries, short durations, labelled UNOFFICIAL everywhere
    passes: PositiveInt | None = None  # dataset passes per point; default: sized from a probe (shortened: 1)
    min_duration_s: PositiveFloat | None = None  # shortened only: each point's minimum duration
    probe_s: PositiveFloat = 60.0  # a probe's length (samples/s per concurrency, highest concurrency search)
    max_tokens: PositiveInt = 128  # max_new_tokens (the llama3_8b preset's 128)
    system: EndpointsSystem | None = None  # system_desc.json's facts (helper H's model)
    power: EndpointsPower | None = None  # system_power.json's inventory (Standardized)
    org: str = "MyOrg"  # the submitting organisation (bundle folder)

    @field_validator("points", mode="after")
    @classmethod
    def _points(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(set(value)) != len(value):
                dupes = sorted({c for c in value if value.count(c) > 1})
                raise ValueError(f"concurrency {dupes[0]} is listed twice")
            if not value:
                raise ValueError("empty: write auto or a list of concurrencies")
        return sorted(value) if isinstance(value, list) else value

    @field_validator("lowest_concurrency", mode="after")
    @classmethod
    def _c_min(cls, value: int) -> int:
        if value > ULTRA_LOW_MAX:
            raise ValueError(f"must be between 1 and {ULTRA_LOW_MAX} (the Ultra Low Concurrency range), got {value}")
        return value

    @field_validator("highest_concurrency", mode="after")
    @classmethod
    def _c_max(cls, value: int | None) -> int | None:
        if value is not None and value <= ULTRA_LOW_MAX:
            raise ValueError(f"must be above {ULTRA_LOW_MAX} (rules 5.4: C_max > 32), got {value}")
        return value

    @field_validator("target_cohort", mode="after")
    @classmethod
    def _cohort(cls, value: str | None) -> str | None:
        if value is not None and not COHORT_RE.fullmatch(value):
            raise ValueError(f"must be YYYY-MM-C0 or YYYY-MM-C1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shortened_only(self) -> "EndpointsConfig":
        if self.min_duration_s is not None and not self.shortened:
            raise ValueError("min_duration_s: only with shortened: true (official points keep the rules' 600 s / "
                             "1,200 s)")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.client.checkout = resolve_path(base, self.client.checkout)
        for name in ("command", "python"):  # a bare name stays a name looked up on the node's PATH
            value = getattr(self.client, name)
            if value and ("/" in value or value.startswith("~")):
                setattr(self.client, name, str(resolve_path(base, Path(value))))
        if self.server.tokenizer and self.server.tokenizer.startswith((".", "~")):
            self.server.tokenizer = str(resolve_path(base, Path(self.server.tokenizer)))
