"""The harness run CLI with real LoadGen: every scenario x mode with the extractive and replay backends.

Each LoadGen test runs in its own process (``TestSettings.FromConfig`` may be called once per process), through
``python -m mlperf_assets.harness run``, on the 20 real CNN stories from ../shared prepared with the byte tokenizer.
Durations are tiny, so the results are not expected to be VALID; what is checked is that LoadGen saw what the
backend produced, with the settings given.
"""

from __future__ import annotations

import functools
import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.harness.dataset import prepare_dataset
from mlperf_assets.harness.settings import (
    RunSettings,
    SettingsError,
    build_user_conf,
    generated_lines,
    read_user_conf,
)

PROJECT = Path(__file__).resolve().parents[2]
N_SAMPLES = 20
MIN_DURATION_MS = 300
# scenario -> settings flags: small counts and durations; SingleStream needs a small expected latency for fast SUTs
FLAGS = {
    "Offline": ["--min-query-count", "60", "--target-qps", "100"],
    "Server": ["--min-query-count", "40", "--target-qps", "150"],
    "SingleStream": ["--min-query-count", "40", "--target-latency-ms", "0.05", "--max-duration-ms", "1000"],
}


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", *args], capture_output=True,
                          text=True, cwd=PROJECT, timeout=timeout)


def detail(out: Path) -> dict:
    values = {}
    for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            rec = json.loads(line[len(":::MLLOG "):])
            values.setdefault(rec["key"], rec["value"])
            if rec["metadata"].get("is_error"):
                values.setdefault("_errors", []).append(rec["value"])
    return values


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(stories_dir: Path, tmp_path_factory) -> Path:
    return prepare_dataset("stories", stories_dir, tmp_path_factory.mktemp("ds") / "stories.json", tokenizer="byte")


@pytest.fixture(scope="module")
def samples(dataset: Path) -> list[dict]:
    return json.loads(dataset.read_text())


@functools.lru_cache(maxsize=None)
def _lead3_bytes(article: str) -> tuple[int, ...]:
    from mlperf_assets.harness.sentences import split_sentences

    return tuple(" ".join(split_sentences(article)[:3]).encode("utf-8"))


def expected_tokens(backend: str, sample: dict) -> list[int]:
    """What each backend must answer, computed independently of the backend code."""
    if backend == "replay":
        return sample["tok_output"]
    return list(_lead3_bytes(sample["input"]))


@pytest.mark.parametrize("backend", ["extractive", "replay"])
@pytest.mark.parametrize("mode", ["performance", "accuracy"])
@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_scenario_mode_backend(tmp_path: Path, dataset: Path, samples: list[dict], scenario: str, mode: str,
                               backend: str):
    out = tmp_path / "run"
    r = harness("--scenario", scenario, "--mode", mode, "--backend", backend, "--dataset", str(dataset),
                "--output-dir", str(out), "--min-duration-ms", str(MIN_DURATION_MS), "--run-id", "r-1",
                "--node", "node-a", "--progress-interval-s", "0.1", *FLAGS[scenario])
    assert r.returncode == 0, r.stderr
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json", "user.conf",
                 "progress.jsonl", "samples.jsonl", "run_manifest.json", "harness.log"):
        assert (out / name).is_file(), name
    assert not (out / "mlperf_log_trace.json").exists() and not (out / "audit.config").exists()

    d = detail(out)
    errors = d.get("_errors", [])
    if scenario == "SingleStream" and mode == "performance":
        # LoadGen sizes SingleStream by duration / expected latency; on a shared machine the per-query latency of
        # an instant backend varies, so it may run out of queries or hit the max duration: nothing else is allowed.
        errors = [e for e in errors if "Ran out of generated queries" not in e and "Max test duration" not in e]
    assert not errors, errors
    assert d["effective_scenario"] == scenario
    assert d["effective_test_mode"] == ("AccuracyOnly" if mode == "accuracy" else "PerformanceOnly")
    assert d["effective_min_duration_ms"] == MIN_DURATION_MS  # user.conf honoured
    assert d["effective_performance_sample_count"] == N_SAMPLES  # adapted to the 20-sample dataset
    if scenario == "Server":
        assert d["effective_target_qps"] == 150
    if scenario == "SingleStream":
        assert d["requested_single_stream_expected_latency_ns"] == 50_000
    if scenario == "Offline":  # one query of max(min_query_count, 1.1 x qps x duration), a multiple of 20
        assert d["effective_samples_per_query"] == 60  # (accuracy mode still issues each sample once)
    else:  # (SingleStream's effective count is what it generates from the expected latency)
        assert d["requested_min_query_count"] == int(FLAGS[scenario][1])

    m = json.loads((out / "run_manifest.json").read_text())
    assert (m["exit_status"], m["error"], m["run_id"], m["node"]) == ("completed", None, "r-1", "node-a")
    assert (m["scenario"], m["mode"], m["lg_model_name"], m["benchmark"]) == (scenario, mode, "llama3_1-8b",
                                                                             "llama3.1-8b")
    assert m["backend"]["name"] == backend
    assert m["backend"]["kind"] == {"replay": "harness-ceiling", "extractive": "baseline"}[backend]
    assert m["dataset"]["sha256"] == hashlib.sha256(dataset.read_bytes()).hexdigest()
    assert (m["dataset"]["samples"], m["dataset"]["tokenizer_kind"]) == (N_SAMPLES, "byte")
    assert m["performance_sample_count"] == N_SAMPLES and "20 samples" in m["performance_sample_count_note"]
    assert m["settings"]["min_duration_ms"] == MIN_DURATION_MS and m["finished_at"] >= m["started_at"]
    assert m["loadgen_version"] and m["host"]["cpu_count"] >= 1

    timings = jsonl(out / "samples.jsonl")
    progress = jsonl(out / "progress.jsonl")
    final = progress[-1]
    assert final["final"] is True and all(not p["final"] for p in progress[:-1])
    assert final["issued"] == final["completed"] == len(timings)
    assert final["output_tokens"] == sum(t["output_tokens"] for t in timings)
    for t in timings:
        assert t["output_tokens"] == len(expected_tokens(backend, samples[t["qsl_idx"]]))
        assert 0 <= t["issue_ns"] <= t["complete_ns"]
        if scenario == "Offline":
            assert t["first_token_ns"] is None
        else:
            assert t["issue_ns"] <= t["first_token_ns"] <= t["complete_ns"]

    acc = json.loads((out / "mlperf_log_accuracy.json").read_text())
    if mode == "performance":
        assert acc == []
        # Offline: the SUT counts its one query; Server: LoadGen's generated schedule (all issued); SingleStream:
        # unknown (LoadGen ends it once min_query_count and min_duration are met)
        if scenario == "SingleStream":
            assert final["total"] is None
        else:
            assert final["total"] == len(timings) == d["generated_query_count"] * d["generated_samples_per_query"]
        if scenario != "Offline":  # first-token latencies reached LoadGen
            assert d["result_first_token_99.00_percentile_latency_ns"] > 0
        else:
            assert d["result_tokens_per_second"] > 0
    else:
        assert sorted(e["qsl_idx"] for e in acc) == list(range(N_SAMPLES)) and final["total"] == N_SAMPLES
        for e in acc:
            want = expected_tokens(backend, samples[e["qsl_idx"]])
            got = np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist()
            assert got == want
            assert e["token_count"] == len(want)
            if scenario != "Offline":
                assert np.frombuffer(bytes.fromhex(e["token_data"]), dtype="<i4").tolist() == want[:1]


def test_user_conf_copy_merged_and_flags_win(tmp_path: Path, dataset: Path):
    conf = tmp_path / "mine.conf"
    conf.write_text("# site settings\n*.Server.target_qps = 40\nllama3_1-8b.Server.min_duration = 250\n"
                    "llama3_1-8b.Server.min_query_count = 30\n")
    out = tmp_path / "run"
    r = harness("--scenario", "Server", "--mode", "performance", "--backend", "replay", "--dataset", str(dataset),
                "--output-dir", str(out), "--user-conf", str(conf), "--target-qps", "120")
    assert r.returncode == 0, r.stderr
    d = detail(out)
    assert (d["effective_target_qps"], d["effective_min_duration_ms"], d["effective_min_query_count"]) == (120, 250, 30)
    text = (out / "user.conf").read_text()
    assert "*.Server.target_qps = 40" in text and text.index("40") < text.index("llama3_1-8b.Server.target_qps = 120")


def test_gptj_int64_tokens_without_n_tokens(stories_dir: Path, tmp_path: Path):
    ds = prepare_dataset("stories", stories_dir, tmp_path / "gptj.json", benchmark="gptj", max_samples=5)
    want = {i: s["tok_output"] for i, s in enumerate(json.loads(ds.read_text()))}
    out = tmp_path / "run"
    r = harness("--scenario", "Offline", "--mode", "accuracy", "--backend", "replay", "--dataset", str(ds),
                "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "run_manifest.json").read_text())["lg_model_name"] == "gptj"
    acc = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert len(acc) == 5
    for e in acc:
        assert np.frombuffer(bytes.fromhex(e["data"]), dtype="<i8").tolist() == want[e["qsl_idx"]]
        assert "token_count" not in e  # gpt-j: no token latencies, no n_tokens (as the reference)
    assert detail(out)["effective_performance_sample_count"] == 5


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_marks_run_interrupted(tmp_path: Path, dataset: Path, sig, code: int):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode", "performance",
         "--backend", "replay", "--dataset", str(dataset), "--output-dir", str(out), "--target-qps", "50",
         "--min-duration-ms", "600000", "--progress-interval-s", "0.1"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "progress.jsonl")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["exit_status"] == "interrupted" and m["finished_at"] and m["error"]
    final = jsonl(out / "progress.jsonl")[-1]
    assert final["final"] is True and final["completed"] >= 1


FAILING_BACKEND = textwrap.dedent("""\
    import dataclasses, sys
    from mlperf_assets.harness import backends
    from mlperf_assets.harness.backends.replay import ReplayBackend

    class Failing(ReplayBackend):
        name = "replay"
        calls = 0
        def generate_packed(self, indices):
            Failing.calls += 1
            if Failing.calls > 1:
                raise RuntimeError("GPU fell off the bus")
            return super().generate_packed(indices)

    sys.modules[__name__].Failing = Failing
    backends.BACKENDS["replay"] = dataclasses.replace(backends.BACKENDS["replay"], target=__name__ + ":Failing")
    from mlperf_assets.harness.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def test_backend_failure_mid_run_marks_run_failed(tmp_path: Path, dataset: Path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", FAILING_BACKEND, "run", "--scenario", "Offline", "--mode",
                        "performance", "--backend", "replay", "--dataset", str(dataset), "--output-dir", str(out),
                        "--min-query-count", "200", "--batch-size", "10"],
                       capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert r.returncode == 1, r.stderr
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["exit_status"] == "failed" and "GPU fell off the bus" in m["error"]
    assert "GPU fell off the bus" in (out / "harness.log").read_text()


def test_replay_without_reference_tokens_fails_clearly(tmp_path: Path):
    bare = tmp_path / "cnn_eval.json"
    bare.write_text(json.dumps([{"input": "An article.", "output": "A summary .", "tok_input": [1, 2, 3]}] * 3))
    out = tmp_path / "run"
    r = harness("--scenario", "Offline", "--mode", "accuracy", "--backend", "replay", "--dataset", str(bare),
                "--output-dir", str(out))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "tok_output" in r.stderr
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["exit_status"] == "failed" and "tok_output" in m["error"]


def test_bad_run_input_is_refused_before_writing(tmp_path: Path, dataset: Path):
    base = ["--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset", str(dataset)]
    out = tmp_path / "a"
    out.mkdir()
    (out / "audit.config").write_text("*.*.mode = 2\n")
    r = harness(*base, "--output-dir", str(out))
    assert r.returncode == 2 and "audit.config" in r.stderr and not (out / "user.conf").exists()

    bad = tmp_path / "bad.conf"
    bad.write_text("llama3_1-8b.Offline.min_duration = 100\nllama3_1-8b.Offline.target_qps = fast\n")
    r = harness(*base, "--output-dir", str(tmp_path / "b"), "--user-conf", str(bad))
    assert r.returncode == 2 and f"{bad}:2: value 'fast' is not a number" in r.stderr
    assert not (tmp_path / "b").exists()

    r = harness(*base, "--output-dir", str(tmp_path / "c"), "--benchmark", "gptj")
    assert r.returncode == 2 and "does not match the dataset" in r.stderr

    done = tmp_path / "d"
    done.mkdir()
    (done / "run_manifest.json").write_text("{}")
    r = harness(*base, "--output-dir", str(done))
    assert r.returncode == 2 and "already holds a run" in r.stderr


HELP_WITHOUT_BACKEND_LIBRARIES = textwrap.dedent("""\
    import argparse, sys
    for lib in ("vllm", "openai", "transformers", "torch", "httpx"):
        sys.modules[lib] = None  # makes `import lib` fail, as on a node without it
    from mlperf_assets.harness.backends import add_backend_cli_args
    print("ADDED", *add_backend_cli_args(argparse.ArgumentParser()))
    from mlperf_assets.harness.cli import main
    main(["run", "--help"])
    """)


def test_help_lists_the_contract_flags_without_backend_libraries():
    import importlib.util

    from mlperf_assets.harness.backends import BACKENDS

    r = subprocess.run([sys.executable, "-c", HELP_WITHOUT_BACKEND_LIBRARIES], capture_output=True, text=True,
                       cwd=PROJECT)
    assert r.returncode == 0, r.stderr
    added = r.stdout.splitlines()[0].split()[1:]
    written = [n for n, e in BACKENDS.items() if importlib.util.find_spec(e.target.partition(":")[0]) is not None]
    assert {"extractive", "replay"} <= set(written) and added == written
    for flag in ("--scenario", "--mode", "--backend", "--dataset", "--output-dir", "--user-conf", "--benchmark",
                 "--lg-model-name", "--max-samples", "--target-qps", "--min-duration-ms", "--max-duration-ms",
                 "--min-query-count", "--max-query-count", "--ttft-latency-ms", "--tpot-latency-ms", "--run-id",
                 "--node", "--progress-interval-s", "--engine-arg", "--extractive-sentences", "Examples:"):
        assert flag in r.stdout, flag


# ------------------------------------------------------------------------------------------ settings (pure)
def test_generated_lines_use_config_units():
    s = RunSettings("llama3_1-8b-interactive", "Server", target_qps=12.5, min_duration_ms=1000, ttft_latency_ms=500,
                    tpot_latency_ms=30)
    assert generated_lines(s, 100) == [
        "llama3_1-8b-interactive.Server.target_qps = 12.5",
        "llama3_1-8b-interactive.Server.min_duration = 1000",
        "llama3_1-8b-interactive.Server.ttft_latency = 500",
        "llama3_1-8b-interactive.Server.tpot_latency = 30",
        "llama3_1-8b-interactive.Server.performance_sample_count_override = 100",
    ]


def test_settings_refuse_unknown_names(tmp_path: Path):
    with pytest.raises(SettingsError, match="unknown LoadGen model name 'llama3-8b'"):
        RunSettings("llama3-8b", "Offline")
    with pytest.raises(SettingsError, match="unknown scenario"):
        RunSettings("gptj", "MultiStreamish")
    conf = tmp_path / "u.conf"
    conf.write_text("llama3_1-8b.Offline.target_qpz = 3\n")
    with pytest.raises(SettingsError, match=r"u.conf:1: unknown key 'target_qpz'"):
        read_user_conf(conf)


def test_performance_sample_count_only_lowered_for_small_datasets():
    s = RunSettings("llama3_1-8b-edge", "SingleStream")
    assert build_user_conf(s, 5000).performance_sample_count_note is None
    small = build_user_conf(s, 300)
    assert small.performance_sample_count == 300 and "5000" in small.performance_sample_count_note
    assert "llama3_1-8b-edge.SingleStream.performance_sample_count_override = 300" in small.text


def test_harness_imports_no_dagster_nor_backend_libraries():
    code = ("import sys\nfrom mlperf_assets.harness.cli import build_parser\nbuild_parser()\n"
            "import mlperf_assets.harness.run\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'pandas', 'datasets', 'transformers', "
            "'torch', 'vllm', 'httpx', 'duckdb'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ F7: a full disk
@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 300 KiB tmpfs (mounted as root, unmounted afterwards): ``(folder, "tmpfs", None)``. Where mounting is
    impossible the test falls back to a 300 KiB RLIMIT_FSIZE in the child: ``(folder, "rlimit", preexec_fn)``; the
    write then fails with EFBIG ("File too large") instead of ENOSPC, and the test says so."""
    mnt = tmp_path / "T"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode == 0:
        try:
            yield mnt, "tmpfs", None
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        return
    import resource

    print(f"cannot mount a tmpfs ({r.stderr.strip()}): using RLIMIT_FSIZE = 300 KiB in the child instead")
    yield mnt, "rlimit", lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300 * 1024, 300 * 1024))


def _fill(path: Path) -> None:
    """Append to ``path`` until the file system is full (unbuffered: nothing left to flush at close)."""
    with path.open("ab", buffering=0) as fh:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"x" * chunk)
            except OSError:
                pass


def _full_disk_line(kind: str, path_re: str) -> str:
    return (rf"error: no space left on device writing {path_re}" if kind == "tmpfs"
            else rf"error: cannot write {path_re}: File too large")


def test_full_disk_mid_run_fails_the_run_in_one_line(tmp_path: Path, dataset: Path, small_disk):
    import re

    disk, kind, preexec = small_disk
    out = disk / "df"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode",
                        "performance", "--backend", "extractive", "--dataset", str(dataset), "--target-qps", "2000",
                        "--min-duration-ms", "5000", "--min-query-count", "100", "--output-dir", str(out),
                        "--progress-interval-s", "0.2"],
                       capture_output=True, text=True, cwd=PROJECT, timeout=120, preexec_fn=preexec)
    took = time.monotonic() - t0
    print(f"{kind}: rc {r.returncode} after {took:.1f} s; stderr: {r.stderr.strip()}")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr and "Logging error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(_full_disk_line(kind, re.escape(str(out)) + r"/[\w.]+"), lines[0]), lines
    m = json.loads((out / "run_manifest.json").read_text())  # complete JSON, never "running"
    assert m["exit_status"] == "failed" and m["finished_at"] and m["error"] == lines[0].removeprefix("error: ")
    assert not (out / ".run_manifest.reserve").exists()
    if kind == "tmpfs":
        assert took < 5, "the run went on for its whole 5 s although its files could not be written"


def test_full_disk_at_the_start_leaves_no_run_folder(tmp_path: Path, dataset: Path, small_disk):
    disk, kind, _ = small_disk
    if kind != "tmpfs":
        pytest.skip("needs a tmpfs to fill up (RLIMIT_FSIZE limits one file, not the disk)")
    _fill(disk / "filler")
    out = disk / "run"
    r = harness("--scenario", "Offline", "--mode", "performance", "--backend", "extractive", "--dataset",
                str(dataset), "--output-dir", str(out), "--min-duration-ms", "100")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left on device writing {out}/"), r.stderr
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # the folder it created is gone again


def test_prepare_dataset_on_a_full_disk(tmp_path: Path, stories_dir: Path, small_disk):
    disk, kind, preexec = small_disk
    big = tmp_path / "big.jsonl"
    article = " ".join(p.read_text().split("@highlight")[0] for p in sorted(stories_dir.glob("*.story"))[:5])
    big.write_text("".join(json.dumps({"id": str(i), "article": article, "highlights": "A ."}) + "\n"
                           for i in range(30)))
    out = disk / "prepared.json"
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "jsonl",
                        "--path", str(big), "--out", str(out)], capture_output=True, text=True, cwd=PROJECT,
                       timeout=120, preexec_fn=preexec)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [_full_disk_line(kind, str(out))], r.stderr
    assert list(disk.iterdir()) == []  # no partial file, no temporary file


def test_manifest_final_record_reaches_a_full_disk(tmp_path: Path, small_disk):
    """The manifest's final record is written on a full disk: through the reserve, or else in place."""
    from mlperf_assets.harness.manifest import RunManifest

    disk, kind, _ = small_disk
    if kind != "tmpfs":
        pytest.skip("needs a tmpfs to fill up")
    filler = disk / "filler"
    manifests = []
    for name in ("a", "b"):
        (disk / name).mkdir()
        manifests.append(RunManifest.begin(disk / name, run_id=name, settings={f"k{i}": i for i in range(100)}))
    _fill(filler)
    a, b = manifests
    a.finish("failed", "no space left on device writing x")  # through a's reserve
    assert json.loads(a.path.read_text())["exit_status"] == "failed"
    for m in manifests:  # b's reserve went to a's record; fill what a's reserve left
        m.reserve_path.unlink(missing_ok=True)
    _fill(filler)
    b.finish("interrupted", "terminated (SIGTERM)")  # in place: compact JSON padded with spaces
    data = json.loads(b.path.read_text())
    assert data["exit_status"] == "interrupted" and data["run_id"] == "b" and data["settings"]["k99"] == 99
    assert b.path.read_bytes().endswith(b" \n")  # the in-place form: padded to the old length


def test_loadgen_logs_cut_short_fail_the_run(tmp_path: Path, small_disk):
    """LoadGen's C++ streams fail silently: a log that does not end as LoadGen ends it fails the run."""
    from mlperf_assets.harness.errors import OutputError
    from mlperf_assets.harness.run import check_loadgen_logs

    complete = {"mlperf_log_summary.txt": "...\nNo warnings encountered during test.\n\nNo errors encountered during "
                "test.\n", "mlperf_log_detail.txt": ':::MLLOG {"key": "num_errors", "value": 0}\n',
                "mlperf_log_accuracy.json": "[\n]\n"}
    for name, text in complete.items():
        (tmp_path / name).write_text(text)
    check_loadgen_logs(tmp_path)
    (tmp_path / "mlperf_log_summary.txt").write_text("...\n2 ERRORS encountered. See detailed log.\n")
    check_loadgen_logs(tmp_path)
    (tmp_path / "mlperf_log_detail.txt").write_text(':::MLLOG {"key": "num_errors", "val')
    with pytest.raises(OutputError, match=r"cannot write .*/mlperf_log_detail.txt: LoadGen's log is incomplete "
                       r"\(35 bytes, cut short\)"):
        check_loadgen_logs(tmp_path)
    disk, kind, _ = small_disk
    if kind == "tmpfs":
        (disk / "mlperf_log_summary.txt").write_text("")
        _fill(disk / "filler")
        with pytest.raises(OutputError, match=f"^no space left on device writing {disk}/mlperf_log_summary.txt$"):
            check_loadgen_logs(disk)


def test_help_states_the_exit_codes():
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "--help"], capture_output=True, text=True,
                       cwd=PROJECT)
    assert r.returncode == 0
    for text in ("0    done", "1    failed", "no space left on device writing", "2    bad input", "130  SIGINT",
                 "143 SIGTERM", "-2 / -15", "blocked"):
        assert text in r.stdout, text
