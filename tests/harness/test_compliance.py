"""MLPerf compliance tests (harness/compliance.py) with real LoadGen: TEST06 runs with the official audit.config, our
verification and MLCommons' own ``run_verification.py`` (the pinned, unmodified copy in ../shared, run in place),
and no audit.config ever left behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.harness.compliance import (
    COMPLIANCE_TESTS,
    ComplianceError,
    required_tests,
    consistency_checks,
    verify,
    VerifyContext,
)
from mlperf_assets.harness.dataset import prepare_dataset

PROJECT = Path(__file__).resolve().parents[2]
MLCOMMONS = PROJECT.parent / "shared" / "reference" / "mlcommons_inference"
AUDIT_CONFIG = MLCOMMONS / "compliance" / "TEST06" / "audit.config"
SCRIPT = MLCOMMONS / "compliance" / "TEST06" / "run_verification.py"
FLAGS = {
    "Offline": ["--target-qps", "100"],
    "Server": ["--target-qps", "200"],
    "SingleStream": ["--target-latency-ms", "0.05"],
}


def need_mlcommons() -> None:
    if not SCRIPT.is_file():
        pytest.skip(f"{MLCOMMONS} is absent: the pinned MLCommons files sit beside the project in ../shared")


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.harness", *args], capture_output=True, text=True,
                          cwd=PROJECT, timeout=timeout)


def detail(out: Path) -> dict:
    values: dict = {}
    for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            rec = json.loads(line[len(":::MLLOG "):])
            values.setdefault(rec["key"], rec["value"])
            if rec["key"] == "warning_generic_message":
                values.setdefault("_warnings", []).append(rec["value"])
    return values


def audit_configs(root: Path) -> list[Path]:
    return sorted(root.rglob("audit.config"))


def mlcommons_verify(folder: Path, out: Path, scenario: str, eos: int | None = None) -> str:
    """MLCommons' run_verification.py as its README says to run it; returns its verify_accuracy.txt."""
    argv = [sys.executable, str(SCRIPT), "-c", str(folder), "-o", str(out), "-s", scenario, "-d", "int32"]
    if eos is not None:
        argv += ["-e", str(eos)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=SCRIPT.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return (out / "TEST06" / "verify_accuracy.txt").read_text()


@pytest.fixture(scope="module")
def dataset(stories_dir: Path, tmp_path_factory) -> Path:
    return prepare_dataset("stories", stories_dir, tmp_path_factory.mktemp("ds") / "stories.json", tokenizer="byte")


def run_test06(dataset: Path, out: Path, scenario: str, backend: str, *extra: str) -> subprocess.CompletedProcess:
    return harness("run", "--scenario", scenario, "--mode", "performance", "--backend", backend, "--dataset",
                   str(dataset), "--output-dir", str(out), "--compliance", "TEST06", "--audit-config",
                   str(AUDIT_CONFIG), *FLAGS[scenario], *extra)


@pytest.mark.parametrize("backend", ["extractive", "replay"])
@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_test06_run_is_audited_verified_and_leaves_no_audit_config(dataset: Path, tmp_path: Path, scenario: str,
                                                                    backend: str):
    need_mlcommons()
    out = tmp_path / "run" / "compliance" / "TEST06"
    proc = run_test06(dataset, out, scenario, backend)
    assert proc.returncode == 0, proc.stderr
    assert audit_configs(tmp_path) == []
    d = detail(out)
    assert any("Found Audit Config file (audit.config)" in w for w in d["_warnings"])
    assert (d["effective_test_mode"], d["effective_accuracy_log_sampling_target"]) == ("PerformanceOnly", 100)
    assert (d["requested_min_query_count"], d["effective_min_duration_ms"]) == (100, 0)
    assert d["effective_sample_concatenate_permutation"] is False
    records = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert len(records) >= 50  # sampled: about accuracy_log_sampling_target of them
    manifest = json.loads((out / "run_manifest.json").read_text())
    comp = manifest["compliance"]
    assert (manifest["exit_status"], comp["test"], comp["eos_token_id"]) == ("completed", "TEST06", 257)
    assert comp["audit_config"] == AUDIT_CONFIG.read_text() and comp["verification"]["passed"] is True

    # Ours (written by the run itself, and again through the CLI) and MLCommons' say the same lines.
    ours = (out / "verify_accuracy.txt").read_text()
    first = "Skipped" if scenario == "Offline" else "True"
    assert ours.splitlines() == [f"First token check pass: {first}", "EOS check pass: True",
                                 "Sample length check pass: True", "TEST06 verification complete"]
    assert (out / "accuracy" / "mlperf_log_accuracy.json").read_bytes() == (out / "mlperf_log_accuracy.json").read_bytes()
    theirs = mlcommons_verify(out, tmp_path / "mlc", scenario, eos=257)
    assert theirs == ours
    cli = harness("verify-compliance", str(out), "--out", str(tmp_path / "cli"))
    assert cli.returncode == 0 and (tmp_path / "cli" / "verify_accuracy.txt").read_text() == ours, cli.stderr

    # Through the verify function with the user's checkout: their file, verbatim.
    res = verify(out, mlcommons_inference=MLCOMMONS, out=tmp_path / "viamlc")
    assert res.passed and res.verifier == str(SCRIPT.resolve()) and res.notes == []
    assert res.text == theirs and (tmp_path / "viamlc" / "verify_accuracy.txt").read_text() == theirs
    assert "TEST06 verification complete" in res.stdout
    assert (tmp_path / "viamlc" / "accuracy" / "mlperf_log_accuracy.json").is_file()


def test_normal_run_after_a_test06_run_is_not_audited(dataset: Path, tmp_path: Path):
    audited = tmp_path / "r1" / "compliance" / "TEST06"
    assert run_test06(dataset, audited, "Offline", "replay").returncode == 0
    normal = tmp_path / "r2"
    proc = harness("run", "--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset",
                   str(dataset), "--output-dir", str(normal), "--target-qps", "100", "--min-query-count", "40",
                   "--min-duration-ms", "100")
    assert proc.returncode == 0, proc.stderr
    d = detail(normal)
    assert not any("Audit Config" in w for w in d.get("_warnings", []))
    assert (d["effective_accuracy_log_sampling_target"], d["requested_min_query_count"]) == (0, 40)
    assert json.loads((normal / "mlperf_log_accuracy.json").read_text()) == []
    assert json.loads((normal / "run_manifest.json").read_text())["compliance"] is None
    assert audit_configs(tmp_path) == []


def test_interrupted_test06_run_leaves_no_audit_config(dataset: Path, tmp_path: Path):
    out = tmp_path / "run" / "compliance" / "TEST06"
    # 100 queries at 4 QPS: about 25 s, interrupted after LoadGen started
    proc = subprocess.Popen([sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode",
                             "performance", "--backend", "extractive", "--dataset", str(dataset), "--output-dir",
                             str(out), "--compliance", "TEST06", "--audit-config-text", AUDIT_CONFIG.read_text(),
                             "--target-qps", "4"], cwd=PROJECT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "samples.jsonl").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert audit_configs(tmp_path) == []
    assert json.loads((out / "run_manifest.json").read_text())["exit_status"] == "interrupted"


@pytest.mark.parametrize(("args", "message"), [
    (["--compliance", "TEST06"], "--compliance TEST06 needs --audit-config FILE"),
    (["--audit-config", str(AUDIT_CONFIG)], "need --compliance TEST"),
    (["--compliance", "TEST06", "--audit-config", "/nonexistent/audit.config"], "does not exist"),
    (["--compliance", "TEST06", "--audit-config-text", "mode 2"], "not an audit.config line"),
    (["--compliance", "TEST06", "--audit-config", str(AUDIT_CONFIG), "--mode", "accuracy"],
     "runs in --mode performance"),
])
def test_bad_compliance_input_is_one_line_and_writes_nothing(dataset: Path, tmp_path: Path, args, message):
    out = tmp_path / "out"
    mode = [] if "--mode" in args else ["--mode", "performance"]
    proc = harness("run", "--scenario", "Offline", *mode, "--backend", "replay", "--dataset", str(dataset),
                   "--output-dir", str(out), *args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_test06_refused_for_a_benchmark_without_token_counts(stories_dir: Path, tmp_path: Path):
    ds = prepare_dataset("stories", stories_dir, tmp_path / "gptj.json", benchmark="gptj", max_samples=3)
    proc = harness("run", "--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset",
                   str(ds), "--output-dir", str(tmp_path / "out"), "--compliance", "TEST06", "--audit-config",
                   str(AUDIT_CONFIG))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: --compliance TEST06 cannot run for gptj: gptj-99 responses carry no "
                                   "token counts (n_tokens) or first tokens, which TEST06 checks")


def _hex(ids) -> str:
    return np.asarray(ids, dtype=np.int32).tobytes().hex().upper()


def _broken_folder(tmp_path: Path, records: list[dict], scenario: str = "Server") -> Path:
    folder = tmp_path / "broken"
    folder.mkdir(parents=True)
    (folder / "mlperf_log_accuracy.json").write_text(json.dumps(records))
    (folder / "run_manifest.json").write_text(json.dumps({"scenario": scenario, "benchmark": "llama3.1-8b"}))
    return folder


@pytest.mark.parametrize(("kind", "bad_line"), [("two_eos", "EOS check pass: False"),
                                                ("token_count", "Sample length check pass: False"),
                                                ("first_token", "First token check pass: False")])
def test_broken_accuracy_logs_fail_ours_and_mlcommons(tmp_path: Path, kind: str, bad_line: str):
    need_mlcommons()
    eos = 2  # MLCommons' default EOS id: its -e flag is read as a string, which disables its EOS check
    good = [{"seq_id": i, "qsl_idx": i, "data": _hex([5, 6, 7, eos]), "token_data": _hex([5]), "token_count": 4}
            for i in range(3)]
    bad = dict(good[1])
    if kind == "two_eos":
        bad.update(data=_hex([5, 6, eos, eos]))
    elif kind == "token_count":
        bad.update(token_count=3)
    else:
        bad.update(token_data=_hex([9]))
    folder = _broken_folder(tmp_path, [good[0], bad, good[2]])
    ours = verify(folder, eos_token_id=eos, out=tmp_path / "ours")
    theirs = verify(folder, eos_token_id=eos, mlcommons_inference=MLCOMMONS, out=tmp_path / "theirs")
    assert not ours.passed and not theirs.passed
    assert bad_line in ours.text.splitlines() and bad_line in theirs.text.splitlines()
    assert ours.text == theirs.text and ours.text.endswith("TEST06 verification failed\n")
    assert theirs.notes == []
    # the CLI: exit 1 on a failed verification
    assert harness("verify-compliance", str(folder), "--eos-token-id", "2", "--out", str(tmp_path / "c")).returncode == 1
    # the good log passes both
    ok = _broken_folder(tmp_path / "ok", good)
    assert verify(ok, eos_token_id=eos).passed and verify(ok, eos_token_id=eos, mlcommons_inference=MLCOMMONS).passed


def test_checks_are_mlcommons_semantics():
    ctx = VerifyContext("Offline", "int32", 9)
    rec = {"data": _hex([1, 2, 9]), "token_count": 3}
    assert consistency_checks([rec], ctx) == {"first_token": None, "eos": True, "sample_length": True}
    assert consistency_checks([{"data": _hex([1, 9, 9]), "token_count": 3}], ctx)["eos"] is False
    assert consistency_checks([{"data": _hex([9, 1, 2])}], ctx)["sample_length"] is False  # no token_count
    server = VerifyContext("Server", "int32", 9)
    assert consistency_checks([{**rec, "token_data": _hex([1, 2])}], server)["first_token"] is True
    assert consistency_checks([rec], server)["first_token"] is False  # no first-token data


def test_table_and_bad_verify_input(tmp_path: Path):
    assert required_tests("llama3.1-8b") == ["TEST06"] and required_tests("llama3_1-8b-interactive") == ["TEST06"]
    assert required_tests("gptj-99") == [] and required_tests("llama3.1-8b-edge") == []
    t = COMPLIANCE_TESTS["TEST06"]
    assert (t.mode, t.audit_config_path, t.verification_script) == (
        "performance", "compliance/TEST06/audit.config", "compliance/TEST06/run_verification.py")
    with pytest.raises(ComplianceError, match="does not exist: not a compliance run folder"):
        verify(tmp_path, "Offline")
    folder = _broken_folder(tmp_path, [])
    with pytest.raises(ComplianceError, match="run_verification.py not found"):
        verify(folder, mlcommons_inference=tmp_path / "nowhere")
    res = verify(folder)
    assert not res.passed and "holds no samples" in res.notes[0]


def test_runspec_renders_compliance_argv():
    from mlperf_assets.harness.args import RunSpec

    spec = RunSpec(run_id="r1", node="n", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                   backend="replay", dataset_path="/d.json", compliance="TEST06", audit_config="*.*.mode = 2\n")
    argv = spec.harness_args("/out")
    i = argv.index("--compliance")
    assert argv[i:i + 4] == ["--compliance", "TEST06", "--audit-config-text", "*.*.mode = 2\n"]
    assert RunSpec.from_json(spec.to_json()) == spec
    plain = RunSpec(run_id="r1", node="n", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                    backend="replay", dataset_path="/d.json")
    assert "--compliance" not in plain.harness_args("/out") and "--audit-config-text" not in plain.harness_args("/o")


def test_test06_through_the_local_runner_from_a_runspec(dataset: Path, tmp_path: Path):
    """The orchestrator's path: RunSpec(compliance=, audit_config=TEXT) through an unchanged runner; the collected
    folder verifies with MLCommons' script."""
    need_mlcommons()
    from mlperf_assets.harness.args import RunSpec
    from mlperf_assets.harness.run_folder import SUCCEEDED
    from resources.runners import LocalRunner

    spec = RunSpec(run_id="t06", node="local", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                   backend="replay", dataset_path=str(dataset), settings={"target_qps": 200},
                   progress_interval_s=0.2, compliance="TEST06", audit_config=AUDIT_CONFIG.read_text())
    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"), poll_interval_s=0.1)
    handle = runner.start(spec)
    final = runner.wait(handle, timeout_s=120)
    assert final.state == SUCCEEDED, runner.log_tail(handle)
    dest = runner.collect(handle, tmp_path / "run" / "compliance" / "TEST06")
    assert audit_configs(tmp_path) == []
    assert json.loads((dest / "run_manifest.json").read_text())["compliance"]["test"] == "TEST06"
    res = verify(dest, mlcommons_inference=MLCOMMONS)
    assert res.passed and res.text.splitlines()[0] == "First token check pass: True"
    assert (dest / "verify_accuracy.txt").read_text() == res.text


def test_stale_audit_config_refused_for_normal_runs_replaced_by_a_compliance_overwrite(dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "audit.config").write_text("*.*.mode = 2\n")  # left by a compliance run killed with SIGKILL
    normal = harness("run", "--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset",
                     str(dataset), "--output-dir", str(out), "--overwrite", *FLAGS["Offline"])
    assert normal.returncode == 2 and "LoadGen would silently apply it" in normal.stderr
    proc = run_test06(dataset, out, "Offline", "replay")
    assert proc.returncode == 2 and "LoadGen would silently apply it" in proc.stderr
    proc = run_test06(dataset, out, "Offline", "replay", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert audit_configs(tmp_path) == [] and (out / "verify_accuracy.txt").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# EOS ids other than MLCommons' default (2): its script reads -e as a string; the project hands it an integer
@pytest.mark.parametrize("eos", [257, 128009])  # the byte tokenizer's, Llama 3.1 Instruct's <|eot_id|>
def test_two_trailing_eos_of_the_runs_own_id_fail_both_verifiers(tmp_path: Path, eos: int):
    need_mlcommons()
    good = [{"seq_id": i, "qsl_idx": i, "data": _hex([5, 6, 7, eos]), "token_data": _hex([5]), "token_count": 4}
            for i in range(3)]
    bad = dict(good[1], data=_hex([5, 6, eos, eos]))
    folder = _broken_folder(tmp_path, [good[0], bad, good[2]])
    ours = verify(folder, eos_token_id=eos, out=tmp_path / "ours")
    theirs = verify(folder, eos_token_id=eos, mlcommons_inference=MLCOMMONS, out=tmp_path / "theirs")
    assert not ours.passed and not theirs.passed
    assert "EOS check pass: False" in theirs.text.splitlines() and theirs.text == ours.text
    assert theirs.notes == []
    ok = _broken_folder(tmp_path / "ok", good)
    assert verify(ok, eos_token_id=eos, mlcommons_inference=MLCOMMONS).passed


def test_when_the_verifiers_disagree_the_verification_fails(tmp_path: Path):
    """An output of exactly two EOS tokens: MLCommons' eos_check never looks at index 0, so it passes; ours does
    not. Its file is kept verbatim, but the verification fails and says why."""
    need_mlcommons()
    eos = 257
    records = [{"seq_id": 0, "qsl_idx": 0, "data": _hex([eos, eos]), "token_data": _hex([eos]), "token_count": 2}]
    folder = _broken_folder(tmp_path, records)
    res = verify(folder, eos_token_id=eos, mlcommons_inference=MLCOMMONS, out=tmp_path / "v")
    assert res.text.endswith("TEST06 verification complete\n")  # MLCommons' file, verbatim
    assert not res.passed
    assert len(res.notes) == 1 and "'eos': False" in res.notes[0] and res.notes[0].endswith("the verification fails")
    assert not verify(folder, eos_token_id=eos).passed


def _good_run(tmp_path: Path) -> Path:
    eos = 257
    records = [{"seq_id": i, "qsl_idx": i, "data": _hex([5, 6, eos]), "token_data": _hex([5]), "token_count": 3}
               for i in range(3)]
    folder = _broken_folder(tmp_path, records)
    manifest = {"scenario": "Server", "benchmark": "llama3.1-8b", "compliance": {"test": "TEST06", "eos_token_id": eos}}
    (folder / "run_manifest.json").write_text(json.dumps(manifest))
    return folder


def _damage(folder: Path, what: str) -> list[str]:
    """Damage a good compliance run folder; returns extra verify-compliance arguments."""
    manifest = json.loads((folder / "run_manifest.json").read_text())
    log = folder / "mlperf_log_accuracy.json"
    if what == "token_count_1e400":
        log.write_text(log.read_text().replace('"token_count": 3', '"token_count": 1e400', 1))
    elif what in ("eos_abc", "eos_list"):
        manifest["compliance"]["eos_token_id"] = "abc" if what == "eos_abc" else [1]
    elif what == "compliance_string":
        manifest["compliance"] = "TEST06"
    elif what == "out_in_proc":
        return ["--out", "/proc/mlperf-verify"]
    elif what == "out_is_a_file":
        (folder.parent / "a-file").write_text("x")
        return ["--out", str(folder.parent / "a-file")]
    (folder / "run_manifest.json").write_text(json.dumps(manifest))
    return []


DAMAGES = {
    "token_count_1e400": "mlperf_log_accuracy.json: record 0: token_count inf is not a number of tokens",
    "eos_abc": "run_manifest.json: compliance.eos_token_id: 'abc' is not a token id",
    "eos_list": "run_manifest.json: compliance.eos_token_id: [1] is not a token id",
    "compliance_string": "run_manifest.json: compliance: 'TEST06' is not a compliance record",
    "out_in_proc": "--out /proc/mlperf-verify: cannot write the verification there",
    "out_is_a_file": "a-file: is a file, not a folder",  # the output-folder guard's line
}


@pytest.mark.parametrize("what", list(DAMAGES))
def test_verify_compliance_damaged_input_is_one_line_exit_2(tmp_path: Path, what: str):
    folder = _good_run(tmp_path)
    assert harness("verify-compliance", str(folder), "--out", str(tmp_path / "first")).returncode == 0
    extra = _damage(folder, what)
    out = [] if extra else ["--out", str(tmp_path / "v")]
    proc = harness("verify-compliance", str(folder), *out, *extra)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and DAMAGES[what] in proc.stderr, proc.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("*.*.mode = two\n", ":1: value 'two' is not a number"),
    ("*.*.no_such_key = 1\n", "unknown key 'no_such_key' (LoadGen would ignore it)"),
    ("*.*.mode = 1\n*.*.accuracy_log_sampling_target = 100\n",
     ":1: mode 1 is not TEST06's (it runs in performance mode: mode = 2)"),
    ("gpt5.*.mode = 2\n", "unknown LoadGen model name 'gpt5'"),
])
def test_audit_config_contents_are_checked_like_a_user_conf(dataset: Path, tmp_path: Path, text: str, message: str):
    out = tmp_path / "out"
    proc = harness("run", "--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset",
                   str(dataset), "--output-dir", str(out), "--compliance", "TEST06", "--audit-config-text", text)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    audit = tmp_path / "audit.config"
    audit.write_text(text)
    proc = harness("run", "--scenario", "Offline", "--mode", "performance", "--backend", "replay", "--dataset",
                   str(dataset), "--output-dir", str(out), "--compliance", "TEST06", "--audit-config", str(audit))
    assert proc.returncode == 2 and f"{audit}:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_the_official_audit_configs_pass_the_check():
    need_mlcommons()
    from mlperf_assets.harness.compliance import parse_audit_config, read_audit_config

    assert read_audit_config(AUDIT_CONFIG, COMPLIANCE_TESTS["TEST06"])
    for other in sorted(MLCOMMONS.glob("compliance/TEST0*/audit.config")):  # TEST01's probability, TEST04's issue
        parse_audit_config(other.read_text(), str(other))
