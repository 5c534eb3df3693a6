"""Data parallelism (issue 12): ``--data-parallel-size N`` runs N replicas of a backend behind one SUT.

Real LoadGen, real worker processes, through ``python -m mlperf_assets.harness run``: 2 replicas of ``sim`` and of
``extractive`` in Offline and Server are VALID, both replicas work, each sees its own ``CUDA_VISIBLE_DEVICES``, the
accuracy log holds exactly a single replica's outputs; too few devices is one line and exit 2; a replica killed
mid-run fails the run at once naming it; SIGINT/SIGTERM interrupt with no process left behind, and so does a SIGKILL
of the harness itself. ``-m vllm``: 2 replicas of the tiny model on CPU give a single engine's token ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.harness.backends import build_backend
from mlperf_assets.harness.backends.base import BackendArgs
from mlperf_assets.harness.backends.replicas import (
    ReplicatedBackend,
    replica_devices,
    split_by_load,
    tensor_parallel_size,
)
from mlperf_assets.harness.backends.sim import CapacityModel
from mlperf_assets.harness.errors import HarnessError

from support.simruns import SIM_ENGINE, engine_flags

PROJECT = Path(__file__).resolve().parents[2]
SIM = {**SIM_ENGINE, "max_num_seqs": 256}


@pytest.fixture(scope="module")
def dataset(sim_dataset) -> Path:
    return sim_dataset


def _env(cuda: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if cuda is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlperf_assets.harness", "run", *args]


def harness(*args: str, cuda: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(*args), capture_output=True, text=True, cwd=PROJECT, timeout=timeout, env=_env(cuda))


def manifest(out: Path) -> dict:
    return json.loads((out / "run_manifest.json").read_text())


def summary_value(out: Path, prefix: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in (out / "mlperf_log_summary.txt").read_text().splitlines()
                if line.startswith(prefix))


def accuracy_outputs(out: Path) -> dict[int, str]:
    return {e["qsl_idx"]: e["data"] for e in json.loads((out / "mlperf_log_accuracy.json").read_text())}


# --------------------------------------------------------------------------------------------- processes
def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    children, out, todo = _ppid_map(), set(), [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float = 15) -> set[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = {p for p in pids if alive(p)}
        if not left:
            return set()
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def start_run(out: Path, *args: str, cuda: str | None = None) -> tuple[subprocess.Popen, list[int], set[int]]:
    """A long run in the background; once its replicas are up: (process, replica pids, all its descendants)."""
    proc = subprocess.Popen(_argv(*args, "--output-dir", str(out), "--progress-interval-s", "0.1"), cwd=PROJECT,
                            env=_env(cuda), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        try:
            replicas = manifest(out)["backend"].get("replicas")
        except (OSError, ValueError, KeyError):
            replicas = None
        progress = out / "progress.jsonl"
        if replicas and progress.exists() and progress.stat().st_size > 0:
            return proc, [r["pid"] for r in replicas], descendants(proc.pid)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the run never got going: {proc.communicate()[1][-3000:]}")


# ------------------------------------------------------------------------------------------------- pure parts
def test_split_by_load_evens_out_outstanding_work():
    assert split_by_load([0, 0], 10) == [5, 5]
    assert split_by_load([0, 0], 7) == [4, 3]
    assert split_by_load([6, 0], 10) == [2, 8]  # both end at 8
    assert split_by_load([20, 0], 10) == [0, 10]  # the busy one gets nothing
    assert split_by_load([3, 1, 0], 5) == [0, 2, 3]
    for loads, n in (([5, 9, 1, 0], 17), ([0], 3), ([2, 2, 2], 1), ([7, 7], 0)):
        shares = split_by_load(loads, n)
        assert sum(shares) == n and min(shares) >= 0
        final = [a + b for a, b in zip(loads, shares)]
        fed = [f for f, s in zip(final, shares) if s > 0]
        assert not fed or max(fed) - min(final) <= 1  # no replica was fed above the least loaded one's level


def test_replica_devices_from_cuda_visible_devices():
    assert replica_devices(2, 1, None) == [["0"], ["1"]]
    assert replica_devices(2, 2, None) == [["0", "1"], ["2", "3"]]
    assert replica_devices(2, 1, "3,5,7") == [["3"], ["5"]]  # in order; extra devices unused
    assert replica_devices(2, 2, "GPU-a, GPU-b,GPU-c,GPU-d") == [["GPU-a", "GPU-b"], ["GPU-c", "GPU-d"]]
    with pytest.raises(HarnessError, match=r"--data-parallel-size 2 x tensor_parallel_size 2 needs 4 GPUs, but "
                                           r"CUDA_VISIBLE_DEVICES='0,1,2' lists 3"):
        replica_devices(2, 2, "0,1,2")
    assert tensor_parallel_size(BackendArgs({"tensor_parallel_size": "2"})) == 2
    assert tensor_parallel_size(BackendArgs({})) == 1
    with pytest.raises(HarnessError, match="positive integer"):
        tensor_parallel_size(BackendArgs({"tensor_parallel_size": 0}))


def test_build_backend_wraps_any_backend_and_keeps_its_name(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    b = build_backend("extractive", BackendArgs(), 3)
    assert isinstance(b, ReplicatedBackend) and (b.name, b.kind) == ("extractive", "baseline")
    assert b.preferred_batch_size() == 3 * 256
    prov = b.provenance()  # before start: the inner backend's, plus the layout
    assert (prov["backend"], prov["kind"], prov["data_parallel_size"]) == ("extractive", "baseline", 3)
    assert prov["replica_devices"] == [["0"], ["1"], ["2"]] and prov["engine_args"]["sentences"] == 3
    with pytest.raises(HarnessError, match="unknown --engine-arg"):  # the inner backend's checks, before any start
        build_backend("sim", BackendArgs({"nope": 1}), 2)
    assert type(build_backend("sim", BackendArgs(), 1)).__name__ == "SimBackend"


def test_engine_stats_sum_the_replicas_and_average_the_kv_cache(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    b = build_backend("sim", BackendArgs(), 2)
    assert b.engine_stats() is None  # nothing pushed yet: never waits
    b.replicas[0].stats = {"kv_cache_usage_pct": 40.0, "requests_running": 3, "requests_waiting": 1,
                           "generation_tokens_total": 100}
    b.replicas[1].stats = {"kv_cache_usage_pct": 60.0, "requests_running": 5, "requests_waiting": 0,
                           "generation_tokens_total": 50, "prompt_tokens_total": 7}
    assert b.engine_stats() == {"kv_cache_usage_pct": 50.0, "requests_running": 8, "requests_waiting": 1,
                                "generation_tokens_total": 150, "prompt_tokens_total": 7}


# ------------------------------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_offline_two_sim_replicas_double_the_throughput_each_on_its_own_gpu(dataset, tmp_path):
    out = tmp_path / "offline"
    r = harness("--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--target-qps", "1", "--min-duration-ms", "100", "--min-query-count",
                "4096", "--data-parallel-size", "2", *engine_flags(SIM), cuda="GPU-aaaa,GPU-bbbb,GPU-cccc")
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary_value(out, "Result is") == "VALID"
    m = manifest(out)
    backend = m["backend"]
    assert m["exit_status"] == "completed"
    assert (backend["name"], backend["kind"], backend["data_parallel_size"]) == ("sim", "simulation", 2)
    assert backend["replica_devices"] == [["GPU-aaaa"], ["GPU-bbbb"]]
    # what each worker process saw in its own environment
    assert [x["cuda_visible_devices"] for x in backend["replicas"]] == ["GPU-aaaa", "GPU-bbbb"]
    samples = backend["replica_samples"]
    assert min(samples) > 1000 and sum(samples) == m["completed_samples"] >= 4096
    assert all(x["sim_timing"]["steps"] > 0 for x in backend["replicas"])  # each replica's own provenance
    rate = float(summary_value(out, "Samples per second"))
    one = CapacityModel(**SIM).offline_samples_per_s(16, 3977)  # one replica's modelled rate (3977: mean prompt)
    assert 1.5 * one < rate < 2.1 * one, (rate, one)


def test_server_two_sim_replicas_valid_and_both_serve(dataset, tmp_path):
    out = tmp_path / "server"
    r = harness("--scenario", "Server", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--lg-model-name", "llama3_1-8b-interactive", "--target-qps", "300",
                "--min-duration-ms", "2000", "--min-query-count", "600", "--data-parallel-size", "2",
                *engine_flags({**SIM, "max_num_seqs": 512}))
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary_value(out, "Result is") == "VALID"
    backend = manifest(out)["backend"]
    assert [x["cuda_visible_devices"] for x in backend["replicas"]] == ["0", "1"]  # unset: 0..N-1
    first, second = backend["replica_samples"]
    assert first > 200 and second > 200 and abs(first - second) <= 0.2 * (first + second)  # shortest queue
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == first + second and {s["output_tokens"] for s in samples} == {16}
    assert all(s["issue_ns"] <= s["first_token_ns"] <= s["complete_ns"] for s in samples)


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_accuracy_log_is_a_single_replicas_byte_for_byte(dataset, tmp_path, scenario):
    flags = ["--batch-size", "7"] if scenario == "Offline" else ["--target-qps", "100"]  # 7: chunks of 4 and 3
    outputs = {}
    for replicas in (1, 2):
        out = tmp_path / f"dp{replicas}"
        r = harness("--scenario", scenario, "--mode", "accuracy", "--backend", "extractive", "--dataset",
                    str(dataset), "--output-dir", str(out), "--data-parallel-size", str(replicas), *flags)
        assert r.returncode == 0, r.stderr[-3000:]
        outputs[replicas] = accuracy_outputs(out)
    assert sorted(outputs[2]) == list(range(20))
    assert outputs[2] == outputs[1]
    backend = manifest(tmp_path / "dp2")["backend"]
    assert backend["name"] == "extractive" and backend["token_ids"] == "exact"
    assert min(backend["replica_samples"]) >= 1 and sum(backend["replica_samples"]) == 20


def test_too_few_devices_is_one_line_and_exit_2(dataset, tmp_path):
    out = tmp_path / "run"
    r = harness("--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--data-parallel-size", "2", cuda="0")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs 2 GPUs, but CUDA_VISIBLE_DEVICES='0' lists 1" in lines[0], r.stderr
    assert not out.exists()  # refused before anything was written


def test_a_replica_that_cannot_start_is_named_and_the_others_stopped(dataset, tmp_path):
    doc = json.loads(dataset.read_text())
    samples = doc["samples"] if isinstance(doc, dict) else doc
    for s in samples:
        s.pop("tok_output", None)  # sim needs the reference tokens: its start fails
    broken = tmp_path / "no_reference.json"
    broken.write_text(json.dumps(doc))
    out = tmp_path / "run"
    proc = subprocess.Popen(_argv("--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--dataset",
                                  str(broken), "--output-dir", str(out), "--data-parallel-size", "2"),
                            cwd=PROJECT, env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    while proc.poll() is None:
        seen |= descendants(proc.pid)
        time.sleep(0.05)
    err = proc.communicate()[1]
    assert proc.returncode == 2, err
    m = manifest(out)
    assert m["exit_status"] == "failed"
    assert "sim replica " in m["error"] and "failed to start" in m["error"] and "tok_output" in m["error"]
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not wait_gone(seen)


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_a_replica_killed_mid_run_fails_the_run_at_once(dataset, tmp_path, scenario):
    out = tmp_path / "run"
    load = (["--target-qps", "1", "--min-query-count", "400000"] if scenario == "Offline"
            else ["--target-qps", "50", "--min-duration-ms", "600000"])
    proc, pids, family = start_run(out, "--scenario", scenario, "--mode", "performance", "--backend", "sim",
                                   "--dataset", str(dataset), "--data-parallel-size", "2", *load,
                                   *engine_flags({**SIM, "decode_step_ms": 50}))
    try:
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert took < 10, took
    m = manifest(out)
    assert m["exit_status"] == "failed"
    assert f"replica 1 (pid {pids[1]}, CUDA_VISIBLE_DEVICES=1) died mid-run: killed by SIGKILL" in m["error"]
    assert not wait_gone(family | set(pids))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_interrupts_and_leaves_no_process(dataset, tmp_path, sig, code):
    out = tmp_path / "run"
    proc, pids, family = start_run(out, "--scenario", "Server", "--mode", "performance", "--backend", "sim",
                                   "--dataset", str(dataset), "--data-parallel-size", "2", "--target-qps", "50",
                                   "--min-duration-ms", "600000", *engine_flags(SIM))
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    m = manifest(out)
    assert m["exit_status"] == "interrupted"
    assert not wait_gone(family | set(pids))


def test_killing_the_harness_leaves_no_orphan_replica(dataset, tmp_path):
    out = tmp_path / "run"
    proc, pids, family = start_run(out, "--scenario", "Offline", "--mode", "performance", "--backend", "sim",
                                   "--dataset", str(dataset), "--data-parallel-size", "2", "--target-qps", "1",
                                   "--min-query-count", "400000", *engine_flags({**SIM, "decode_step_ms": 50}))
    assert set(pids) <= family
    proc.kill()  # SIGKILL: no stop(), no atexit; the workers must notice on their own
    proc.communicate(timeout=30)
    assert not wait_gone(family | set(pids), timeout=10)


# ----------------------------------------------------------------------------------------------- vLLM on CPU
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1"}


@pytest.mark.vllm
def test_two_vllm_replicas_give_a_single_engines_token_ids(tiny_model, stories_dir, tmp_path):
    pytest.importorskip("vllm")
    from support.tiny_llama import prepare_tiny_dataset

    data = prepare_tiny_dataset(tiny_model, stories_dir, tmp_path, 4)
    logged = {}
    for replicas in (1, 2):
        out = tmp_path / f"dp{replicas}"
        argv = _argv("--scenario", "Offline", "--mode", "accuracy", "--backend", "vllm", "--dataset", str(data),
                     "--output-dir", str(out), "--model", str(tiny_model), "--dtype", "float32",
                     "--max-model-len", "8192", "--engine-arg", "enforce_eager=true", "--sampling-arg",
                     "ignore_eos=true", "--sampling-arg", "max_tokens=8", "--batch-size", "4",
                     "--data-parallel-size", str(replicas))
        r = subprocess.run(argv, cwd=PROJECT, env={**_env(None), **VLLM_ENV}, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
        logged[replicas] = {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist()
                            for e in entries}
    assert sorted(logged[2]) == [0, 1, 2, 3] and all(len(t) == 8 for t in logged[2].values())
    assert logged[2] == logged[1]
    backend = manifest(tmp_path / "dp2")["backend"]
    assert (backend["name"], backend["kind"], backend["token_ids"]) == ("vllm", "model", "exact")
    assert backend["data_parallel_size"] == 2 and backend["replica_samples"] == [2, 2]
    assert [x["cuda_visible_devices"] for x in backend["replicas"]] == ["0", "1"]
