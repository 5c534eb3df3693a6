"""What a newcomer does first, done as they would: the standard Dagster commands in the project root with nothing
set, `make dev`, and `make demo`'s settings on this machine, whatever its speed.

1. `dagster definitions validate` (and `dagster dev`) in the project root without DAGSTER_HOME used to fail with a
   DagsterInvalidConfigError traceback (dagster.yaml read `env: DAGSTER_HOME`).
2. The demo's Offline run could be INVALID ("min duration not satisfied": the extractive baseline finished 11,000
   samples in 0.16 s against target_qps 50000). Its settings must give VALID results with a wide margin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlperf_assets.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def bare_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no DAGSTER_HOME, no project variables."""
    return {
        k: v for k, v in os.environ.items()
        if k not in ("DAGSTER_HOME", "MLPERF_DAGSTER_CONFIG", "MLPERF_DAGSTER_DATASET")
    }  # fmt: skip


def leftover_temp_homes() -> set[str]:
    return {p.name for p in PROJECT.glob(".tmp_dagster_home_*")}


# ------------------------------------------------------------------------------------ Dagster with nothing set
@pytest.mark.parametrize("workspace", [[], ["-w", "workspace.yaml"]], ids=["pyproject", "workspace.yaml"])
def test_dagster_definitions_validate_in_the_project_root_with_nothing_set(workspace):
    before = leftover_temp_homes()
    proc = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", *workspace],
        cwd=PROJECT, env=bare_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Validation successful for code location mlperf_dagster" in output
    assert "Traceback" not in output and "DagsterInvalidConfigError" not in output
    assert leftover_temp_homes() <= before  # Dagster's temporary instance is gone again


def test_instance_locations_are_project_local():
    """With nothing set, Dagster's commands keep their (temporary) instance in the project root, configured by the
    project's dagster.yaml (its per-node run limit applies); `mlperf-dagster run|demo` and `make dev` share the
    persistent <project>/.dagster_home, whose SQLite files live inside it."""
    code = """
import json, os
from dagster._cli.utils import get_possibly_temporary_instance_for_cli
with get_possibly_temporary_instance_for_cli("test") as instance:
    temporary = {
        "root": instance.root_directory,
        "runs_db": instance.run_storage._conn_string,
        "limits": instance.run_coordinator.get_run_queue_config().tag_concurrency_limits,
    }
from mlperf_assets.commands._shared import cli_instance, ensure_dagster_home
home = str(ensure_dagster_home())
with cli_instance() as instance:
    persistent = {"home": home, "env": os.environ["DAGSTER_HOME"], "root": instance.root_directory,
                  "runs_db": instance.run_storage._conn_string}
print(json.dumps({"temporary": temporary, "persistent": persistent}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=bare_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    temporary, persistent = seen["temporary"], seen["persistent"]
    assert Path(temporary["root"]).parent == PROJECT and Path(temporary["root"]).name.startswith(".tmp_dagster_home_")
    assert temporary["runs_db"].startswith(f"sqlite:///{temporary['root']}/")
    assert {"key": "dagster/partition/node", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        temporary["limits"]
    )
    home = PROJECT / ".dagster_home"
    assert persistent["home"] == persistent["env"] == persistent["root"] == str(home)
    assert persistent["runs_db"] == f"sqlite:///{home}/history/runs.db"
    assert (home / "dagster.yaml").read_bytes() == (PROJECT / "dagster.yaml").read_bytes()
    config = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    assert "env" not in json.dumps(config)  # nothing the file needs from the environment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["make dev", "dagster dev"])
def test_dev_serves_the_ui_with_nothing_set(how):
    """`make dev` with nothing set: the UI comes up on the project's instance (<project>/.dagster_home). Plain
    `dagster dev` in the project root: it comes up too, on Dagster's temporary instance in the project root."""
    port = _free_port()
    before = leftover_temp_homes()
    if how == "make dev":
        argv = ["make", "-o", ".venv/.installed-dev", "dev", f"DEV_ARGS=-h 127.0.0.1 -p {port}"]
    else:
        argv = [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)]
    make = subprocess.Popen(
        argv, cwd=PROJECT, env=bare_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert make.poll() is None, make.stdout.read().decode(errors="replace")
                assert time.monotonic() < deadline, "the UI did not come up in 300 s"
                time.sleep(1)
        homes = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) != make.pid:
                    continue
                env = dict(
                    item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item
                )
            except (OSError, ValueError):
                continue
            if b"DAGSTER_HOME" in env:
                homes.add(env[b"DAGSTER_HOME"].decode())
        if how == "make dev":
            assert homes == {str(PROJECT / ".dagster_home")}
        else:
            assert homes == set() and len(leftover_temp_homes() - before) == 1
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    output = make.stdout.read().decode(errors="replace")
    assert "DagsterInvalidConfigError" not in output and "Traceback" not in output, output
    assert leftover_temp_homes() <= before  # Dagster's temporary instance is removed on exit


# ------------------------------------------------------------------------------------------- the demo's settings
def _summary(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():  # "Result is : VALID", but also "Samples per second: 86766.1"
        key, sep, value = line.partition(":")
        if sep and value.strip():
            out.setdefault(key.strip(), value.strip())
    return out


def _effective(detail: Path, key: str) -> float:
    for line in detail.read_text().splitlines():
        if f'"key": "{key}"' in line:
            return float(json.loads(line.split(":::MLLOG", 1)[1])["value"])
    raise AssertionError(f"{key} not in {detail}")


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory, stories_dir):
    """config/config.yaml as `make demo` runs it (the local stories instead of the hub), results in a temp folder."""
    folder = tmp_path_factory.mktemp("demo")
    raw = yaml.safe_load((PROJECT / "config" / "config.yaml").read_text())
    raw["storage"] = {"artifact_root": "out/artifacts", "duckdb_path": "out/mlperf.duckdb", "report_dir": "out/report"}
    raw["dataset"] = {**raw["dataset"], "source": "stories", "path": str(stories_dir)}
    raw.pop("schedule", None)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_demo_settings_are_valid_with_a_wide_margin(scenario, demo_config, tmp_path):
    """Each demo scenario's performance run through the local runner is VALID, and would stay VALID on a machine
    ten times faster (and, LoadGen's run being sized by the settings, on any slower one): LoadGen sizes Offline and
    SingleStream runs from the expected speed, so the measured speed must be far below it."""
    from mlperf_assets.harness.dataset import prepare_dataset
    from mlperf_assets.plan import build_spec
    from resources.runners.local import LocalRunner

    config = load_config(demo_config, use_env_dataset=False)
    dataset = prepare_dataset(
        "stories", config.dataset.path, tmp_path / "prepared.json", benchmark=config.benchmark.model, tokenizer="byte",
        max_samples=config.dataset.max_samples,
    )  # fmt: skip
    spec = build_spec(config, run_id=f"demo-{scenario}", node="local", scenario=scenario, mode="performance",
                      dataset=dataset)  # fmt: skip
    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"))
    started = time.monotonic()
    handle = runner.start(spec)
    progress = runner.wait(handle, timeout_s=240)
    wall = time.monotonic() - started
    assert progress.state == "succeeded", runner.log_tail(handle)
    run_dir = Path(handle.run_dir)
    summary = _summary(run_dir / "mlperf_log_summary.txt")
    assert summary["Result is"] == "VALID", summary
    detail = run_dir / "mlperf_log_detail.txt"
    if scenario == "Offline":
        expected = _effective(detail, "effective_target_qps")
        assert float(summary["Samples per second"]) * 10 < expected  # 10x faster would still fill min_duration
    elif scenario == "SingleStream":
        target_ns = _effective(detail, "effective_target_latency_ns")
        assert float(summary["Mean latency (ns)"]) > 10 * target_ns
    else:
        assert summary["Early stopping satisfied"] == "Yes"
        assert float(summary["Completed samples per second"]) >= 0.9 * _effective(detail, "effective_target_qps")
    assert wall < 60, f"{scenario} took {wall:.0f} s: the demo must stay quick"


def test_demo_is_valid_end_to_end(demo_config, stories_dir, tmp_path):
    """`mlperf-dagster demo` on the demo's settings: every partition VALID in DuckDB, within the demo's budget."""
    import duckdb

    env = {**bare_env(), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_bytes((PROJECT / "dagster.yaml").read_bytes())
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "mlperf-dagster"), "demo", "--config", str(demo_config), "--dataset", str(stories_dir),
         "--no-progress"],
        env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3/3 partitions succeeded" in proc.stdout
    assert not re.search(r"\bINVALID\b", proc.stdout), proc.stdout
    db = demo_config.parent / "out" / "mlperf.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT scenario, result_validity FROM run_summary WHERE mode = 'performance' ORDER BY scenario"
        ).fetchall()
        compliance = conn.execute(
            "SELECT scenario, compliance_test, compliance_passed FROM run_summary WHERE mode = 'compliance' "
            "ORDER BY scenario"
        ).fetchall()
    assert rows == [("Offline", "VALID"), ("Server", "VALID"), ("SingleStream", "VALID")]
    # TEST06 with the pinned MLCommons audit.config beside the project: stored as compliance runs, verified.
    assert compliance == [(s, "TEST06", True) for s in ("Offline", "Server", "SingleStream")]
    assert "compliance: TEST06 after each accuracy run" in proc.stderr
    assert wall < 180, f"the demo took {wall:.0f} s"
    _assert_submission_materialized(tmp_path / "home", demo_config.parent / "out", proc.stdout)


def _assert_submission_materialized(home: Path, out: Path, stdout: str) -> None:
    """Issue 22 item 7: the demo's submission tree is the submission_package asset, materialized through Dagster in
    the demo's instance (the one `make dev` shows), with the checker's verdict as its asset check's evaluation."""
    import dagster as dg

    from mlperf_assets.assets.submission import CHECKER_CHECK, SUBMISSION_KEY

    tree = out / "submission" / "local" / "closed" / "MLPerfDagsterDemo"
    assert f"submission tree: {tree} (2 result(s); smoke settings, not submittable)" in stdout, stdout  # Offline, Server
    assert "MLCommons submission checker (SUMMARY: submission has errors)" in stdout, stdout
    assert (tree / "systems" / "demo-local-cpu.json").is_file()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        record = instance.get_latest_materialization_event(SUBMISSION_KEY)
        assert record is not None and record.asset_materialization.partition == "local"
        assert record.asset_materialization.metadata["tree"].value == str(tree)
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(SUBMISSION_KEY, CHECKER_CHECK)])
        execution = checks.get(dg.AssetCheckKey(SUBMISSION_KEY, CHECKER_CHECK))
        assert execution is not None and execution.status.value == "SUCCEEDED", execution
