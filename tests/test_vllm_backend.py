"""The ``vllm`` backend with the real vLLM engine on CPU (``vllm-cpu``) and a tiny random-weight Llama built here.

Random weights make meaningless text, so the tests check what must hold for any model: token counts, streaming
order, greedy determinism, that the offline and streaming engines agree token for token, and that LoadGen's accuracy
log holds exactly the tokens the engine generated. Run with ``make test-vllm``; skipped where vllm is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tiny_llama import prepare_tiny_dataset

RECIPE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
}
for _k, _v in RECIPE_ENV.items():
    os.environ.setdefault(_k, _v)

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (run `make test-vllm`, which installs vllm-cpu)")
engine_test = [pytest.mark.vllm, needs_vllm]

PROJECT = Path(__file__).resolve().parents[1]
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


# ----------------------------------------------------------------------------------------- full LoadGen runs
def _run_harness(out: Path, dataset_file: Path, tiny_model: Path, scenario: str, mode: str, *extra: str):
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
    return manifest


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
    _run_harness(tmp_path, dataset_file, tiny_model, scenario, "accuracy", *extra)
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
