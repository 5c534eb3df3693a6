"""Config files that used to crash the loader or pass validation and fail later (adversarial findings F5, F12, F13,
F14, F15): each is refused with one line naming the file and the field (or line), before anything runs.

Reproductions are real: real files, a symlink loop, a file the process may not read (capabilities dropped with
``setpriv`` when the tests run as root), a read-only tmpfs, the installed ``mlperf-dagster`` command, and Dagster's
own schedule definition and ``dagster definitions validate`` as the judge of a cron expression.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import (
    MAX_CONFIG_BYTES,
    MAX_NESTING,
    ConfigError,
    load_config,
    parse_config,
)

PROJECT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mlperf-dagster")
NODE = "nodes: [{name: a, runner: local}]\n"
BASE = "benchmark: {backend: extractive, checkpoint: null}\n" + NODE


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MLPERF_DAGSTER_DATASET", raising=False)
    monkeypatch.delenv("MLPERF_DAGSTER_CONFIG", raising=False)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert all("\n" not in p for p in problems)
    return problems


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, prefix: tuple[str, ...] = ()):
    base = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    return subprocess.run([*prefix, CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**base, **(env or {})})  # fmt: skip


def assert_one_line_refusal(out: subprocess.CompletedProcess, line: str) -> None:
    """Exit code 2, no traceback, and exactly ``line`` on stderr (after the command's ``error:`` prefix if any)."""
    assert out.returncode == 2, (out.returncode, out.stdout[-1000:], out.stderr[-3000:])
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].endswith(line), (lines[0], line)


def nothing_ran(folder: Path) -> None:
    """`run` refused before any benchmark: no artifacts, work folders, datasets or DuckDB file were made."""
    made = sorted(p.name for p in folder.iterdir())
    assert made == ["c.yaml"], made


# ------------------------------------------------------------------------------------------------- F5: cron
DAGSTER_REFUSES = {
    "99 2 * * *": "the minute field '99' is not valid (allowed: 0-59)",
    "a b c d e": "the minute field 'a' is not valid (allowed: 0-59)",
    "0 25 * * *": "the hour field '25' is not valid (allowed: 0-23)",
    "0 2 32 * *": "the day-of-month field '32' is not valid (allowed: 1-31)",
    "0 2 * 13 *": "the month field '13' is not valid (allowed: 1-12 or JAN-DEC)",
    "0 2 * * 8": "the day-of-week field '8' is not valid (allowed: 0-7 or SUN-SAT)",
    "0 2 30 2 *": "Dagster refuses it (a date that never occurs, such as February 30)",
    "0,,1 2 * * *": "the minute field '0,,1' is not valid (allowed: 0-59)",
}
DAGSTER_ACCEPTS = ("0 2 * * *", "*/15 * * * *", "0 2 * * MON-FRI", "30 1 1,15 * *", "0 2 * jan *", "0 2 * * 7",
                   "@daily", "0 2 * * 1#2", "0 2 L * *")  # fmt: skip


def dagster_accepts(cron: str, timezone: str = "UTC") -> bool:
    """The judge: does Dagster build a schedule with this cron and timezone?"""
    import dagster as dg

    @dg.job
    def nothing():
        pass

    try:
        dg.ScheduleDefinition(name="s", cron_schedule=cron, job=nothing, execution_timezone=timezone)
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


@pytest.mark.parametrize("cron", sorted(DAGSTER_REFUSES))
def test_a_cron_dagster_refuses_is_refused_in_one_line(tmp_path, cron):
    assert not dagster_accepts(cron)
    path = tmp_path / "c.yaml"
    path.write_text(f"{BASE}schedule: {{cron: '{cron}'}}\n")
    expected = f"{path}: schedule.cron: must be a 5-field cron expression such as '0 2 * * *', got {cron!r}: "
    assert problems_of(path) == [expected + DAGSTER_REFUSES[cron]]


def test_validation_agrees_with_dagster_on_every_cron(tmp_path):
    fields = ("0", "59", "60", "*", "*/5", "1-5", "5-1", "MON", "jan", "?", "L", "1#2", "x", "", "1,2", "-1")
    crons = [*DAGSTER_REFUSES, *DAGSTER_ACCEPTS, "0 0 * * * *", "0 2 * *", "@hourly", "@reboot", "@weekly"]
    crons += [" ".join([f, "2", "*", "*", "*"]) for f in fields] + [" ".join(["0", "2", "*", "*", f]) for f in fields]
    agreed = 0
    for cron in crons:
        try:
            parse_config(f"{BASE}schedule: {{cron: {cron!r}}}\n", tmp_path / "c.yaml")
            ours = True
        except ConfigError:
            ours = False
        assert ours == dagster_accepts(cron), cron
        agreed += 1
    print(f"{agreed} cron expressions: validate-config and Dagster agree on each")


def test_timezones_as_dagster_loads_them(tmp_path):
    for tz, ok in (("UTC", True), ("utc", True), ("Europe/Paris", True), ("Mars/Olympus", False),
                   ("europe/paris", False), ("/etc/passwd", False), ("a" * 300, False), ("Europe/", False)):  # fmt: skip
        assert dagster_accepts("0 2 * * *", tz) == ok, tz
        path = tmp_path / "tz.yaml"
        path.write_text(f"{BASE}schedule: {{cron: '0 2 * * *', timezone: {tz!r}}}\n")
        if ok:
            assert load_config(path).schedule.timezone == tz
        else:  # 300 characters was an OSError (file name too long) escaping as a traceback
            assert problems_of(path) == [
                f"{path}: schedule.timezone: must be an IANA time zone such as UTC or Europe/Paris, got {tz[:80]!r}"
            ]


def test_cron_refused_by_validate_config_run_and_demo(tmp_path):
    """The finding's file: validate-config said OK, run and demo ended in a DagsterInvalidDefinitionError traceback."""
    path = tmp_path / "c.yaml"
    path.write_text(f'{BASE}schedule: {{cron: "99 2 * * *"}}\n')
    line = (f"{path}: schedule.cron: must be a 5-field cron expression such as '0 2 * * *', got '99 2 * * *': "
            "the minute field '99' is not valid (allowed: 0-59)")  # fmt: skip
    home = {"DAGSTER_HOME": str(tmp_path / "home")}
    for args in (("validate-config", str(path)), ("run", "--config", str(path)), ("demo", "--config", str(path))):
        out = cli(*args, env=home)
        assert_one_line_refusal(out, line)
        assert "DagsterInvalidDefinitionError" not in out.stderr
    nothing_ran(tmp_path)


@pytest.mark.slow
def test_code_location_reports_the_cron_field(tmp_path):
    """`dagster definitions validate` on the project's workspace names the file and the field, not Dagster's
    schedule error."""
    path = tmp_path / "c.yaml"
    path.write_text(f'{BASE}schedule: {{cron: "99 2 * * *"}}\n')
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLPERF_DAGSTER_DATASET"}
    env.update(MLPERF_DAGSTER_CONFIG=str(path), DAGSTER_HOME=str(tmp_path / "home"))
    dagster = str(Path(sys.executable).parent / "dagster")
    out = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"], cwd=PROJECT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{path}: schedule.cron: must be a 5-field cron expression" in text, text[-3000:]
    assert "DagsterInvalidDefinitionError" not in text


# ---------------------------------------------------------------------------- F12: files that crashed the loader
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("nodes: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems_of(deep) == [f"{deep}: line 1: nested more than {MAX_NESTING} levels deep"]
    ok = tmp_path / "ok.yaml"  # real configs nest far less than the limit, and engine mappings may nest
    nested = "{a: " * 40 + "1" + "}" * 40
    ok.write_text(f"benchmark: {{backend: vllm, checkpoint: m, engine: {{x: {nested}}}}}\n{NODE}")
    assert load_config(ok).benchmark.engine["x"]["a"]["a"]["a"]


def test_symlink_loop_folder_unreadable_binary_huge(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to("loop.yaml")
    assert problems_of(loop) == [f"{loop}: cannot read: a symbolic link loop"]
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert problems_of(folder) == [f"{folder}: is a folder, not a config file"]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert problems_of(binary) == [f"{binary}: is not a UTF-8 text file (offset 0); a config file is YAML text"]
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"nodes: [{name: a,\x00 runner: local}]\n")
    assert problems_of(nul) == [
        f"{nul}: invalid YAML: unacceptable character #x0000: special characters are not allowed"
    ]
    huge = tmp_path / "huge.yaml"
    huge.write_text(NODE + ("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)))
    assert problems_of(huge) == [
        f"{huge}: is larger than 1 MiB; a config file is a few KB: is this the right file?"
    ]
    assert problems_of(Path("/dev/zero")) == [
        "/dev/zero: is larger than 1 MiB; a config file is a few KB: is this the right file?"
    ]
    bom = tmp_path / "bom.yaml"  # a byte-order mark, as some editors write, is fine
    bom.write_bytes(b"\xef\xbb\xbf" + NODE.encode())
    assert load_config(bom).node_names == ["a"]


def _without_root_powers() -> tuple[str, ...]:
    """A command prefix that makes file permissions apply (root reads any file otherwise)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def test_unreadable_config_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    path.chmod(0)
    out = cli("validate-config", str(path), prefix=_without_root_powers())
    assert_one_line_refusal(out, f"{path}: cannot read: permission denied")


def test_loop_and_deep_refused_by_run_and_demo(tmp_path):
    loop = tmp_path / "c.yaml"
    loop.symlink_to("c.yaml")
    for args in (("validate-config",), ("run", "--config"), ("demo", "--config")):
        assert_one_line_refusal(cli(*args, str(loop), env={"DAGSTER_HOME": str(tmp_path / "h")}),
                                f"{loop}: cannot read: a symbolic link loop")  # fmt: skip
    loop.unlink()
    loop.write_text("nodes: " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (("validate-config",), ("run", "--config")):
        assert_one_line_refusal(cli(*args, str(loop), env={"DAGSTER_HOME": str(tmp_path / "h")}),
                                f"{loop}: line 1: nested more than {MAX_NESTING} levels deep")  # fmt: skip
    nothing_ran(tmp_path)


def test_alias_bombs_and_recursive_aliases(tmp_path):
    laughs = tmp_path / "laughs.yaml"
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, prev in zip("bcdef", "abcde"):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    laughs.write_text("\n".join(rows) + "\n" + NODE)
    (problem,) = problems_of(laughs)
    assert problem.startswith(f"{laughs}: ") and problem.endswith("expands to more than 100,000 values (YAML aliases)")
    recursive = tmp_path / "rec.yaml"
    recursive.write_text("nodes: &n [{name: a, runner: local}, *n]\n")
    assert problems_of(recursive) == [f"{recursive}: nodes[1]: refers to itself (a recursive YAML alias)"]
    shared = tmp_path / "anchors.yaml"  # ordinary anchors and merge keys still work
    shared.write_text("nodes:\n  - &n {name: a, runner: local}\n  - {<<: *n, name: b}\n")
    assert load_config(shared).node_names == ["a", "b"]


# ---------------------------------------------------------------------- F13: settings and engine arguments
@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), ("0", "0")])
def test_non_finite_qps_refused_before_anything_runs(tmp_path, value, shown):
    path = tmp_path / "c.yaml"
    path.write_text(f"benchmark: {{backend: extractive, checkpoint: null, scenarios: {{Server: {{target_qps: {value}}}}}}}\n"
                    + NODE)  # fmt: skip
    line = f"{path}: benchmark.scenarios.Server.target_qps: must be a number > 0, got {shown}"
    assert_one_line_refusal(cli("validate-config", str(path)), line)
    assert_one_line_refusal(cli("run", "--config", str(path), env={"DAGSTER_HOME": str(tmp_path / "h")}), line)
    nothing_ran(tmp_path)


def test_engine_arguments_the_backend_refuses_are_found_at_validation(tmp_path):
    cases = {
        "extractive": ("{sentences: 3, temperature: 0.7}",
                       "extractive backend: unknown --engine-arg key(s) ['temperature'] (known: sentences, max_tokens)"),
        "replay": ("{tensor_parallel_size: 2}", "replay backend takes no --engine-arg (got ['tensor_parallel_size'])"),
    }  # fmt: skip
    for backend, (engine, message) in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(f"benchmark: {{backend: {backend}, checkpoint: null, engine: {engine}}}\n{NODE}")
        assert_one_line_refusal(cli("validate-config", str(path)), f"{path}: benchmark.engine: {message}")
    path.write_text(f"benchmark: {{backend: extractive, checkpoint: null, engine: {{sentences: 0}}}}\n{NODE}")
    assert problems_of(path) == [f"{path}: benchmark.engine: --extractive-sentences must be >= 1 (got 0)"]
    path.write_text(f"benchmark: {{backend: extractive, checkpoint: null, engine: {{sentences: 2}}}}\n{NODE}")
    assert load_config(path).benchmark.engine == {"sentences": 2}
    # vLLM's engine arguments are known only where vLLM is installed (the node): the harness refuses an unknown one
    # when the run starts, so the config passes here
    path.write_text(f"benchmark: {{backend: vllm, checkpoint: m, engine: {{max_num_seqs: 8, no_such_arg: 1}}}}\n{NODE}")
    assert load_config(path).benchmark.engine == {"max_num_seqs": 8, "no_such_arg": 1}


# -------------------------------------------------------------------------------------- F14: storage paths
def test_unusable_storage_paths_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "loop.duckdb").symlink_to("loop.duckdb")
    cases = {
        "duckdb_path: ''": f"storage.duckdb_path: {tmp_path} is a folder; give a DuckDB file such as "
                           "results/mlperf.duckdb",
        "duckdb_path: adir": f"storage.duckdb_path: {tmp_path}/adir is a folder; give a DuckDB file such as "
                             "results/mlperf.duckdb",
        "duckdb_path: /dev/null": "storage.duckdb_path: /dev/null is not a regular file (a device, pipe or socket); "
                                  "give a DuckDB file such as results/mlperf.duckdb",
        "duckdb_path: afile/sub/m.duckdb": f"storage.duckdb_path: {tmp_path}/afile/sub/m.duckdb cannot be created: "
                                           f"{tmp_path}/afile is a file, not a folder",
        "duckdb_path: loop.duckdb": f"storage.duckdb_path: {tmp_path}/loop.duckdb cannot be used: a symbolic link loop",
        "artifact_root: afile": f"storage.artifact_root: {tmp_path}/afile is a file, not a folder",
        "report_dir: afile": f"storage.report_dir: {tmp_path}/afile is a file, not a folder",
        "dataset_dir: afile": f"storage.dataset_dir: {tmp_path}/afile is a file, not a folder",
    }  # fmt: skip
    (tmp_path / "empty.duckdb").touch()
    cases["duckdb_path: c.yaml"] = (f"storage.duckdb_path: {tmp_path}/c.yaml is not a DuckDB database; give a new "
                                    "file name or an existing results store")  # the config itself, clobbered later
    cases["duckdb_path: empty.duckdb"] = (f"storage.duckdb_path: {tmp_path}/empty.duckdb is not a DuckDB database; "
                                          "give a new file name or an existing results store")  # fmt: skip
    path = tmp_path / "c.yaml"
    for storage, message in cases.items():
        path.write_text(f"storage: {{{storage}}}\n{BASE}")
        assert problems_of(path) == [f"{path}: {message}"], storage
    path.write_text(f"storage: {{duckdb_path: new/deeper/m.duckdb, artifact_root: a/b/c}}\n{BASE}")
    assert load_config(path).storage.duckdb_path == tmp_path / "new" / "deeper" / "m.duckdb"  # created when used
    import duckdb

    duckdb.connect(str(tmp_path / "store.duckdb")).close()  # an existing results store is fine
    path.write_text(f"storage: {{duckdb_path: store.duckdb}}\n{BASE}")
    assert load_config(path).storage.duckdb_path == tmp_path / "store.duckdb"


def test_empty_duckdb_path_refused_by_run_before_the_benchmark(tmp_path):
    """The finding: `duckdb_path: ''` ran LoadGen, then failed to ingest ("Is a directory")."""
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{duckdb_path: ''}}\n{BASE}")
    line = f"{path}: storage.duckdb_path: {tmp_path} is a folder; give a DuckDB file such as results/mlperf.duckdb"
    assert_one_line_refusal(cli("validate-config", str(path)), line)
    assert_one_line_refusal(cli("run", "--config", str(path), env={"DAGSTER_HOME": str(tmp_path / "h")}), line)
    nothing_ran(tmp_path)


def test_storage_in_a_folder_this_user_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{duckdb_path: locked/m.duckdb}}\n{BASE}")
    out = cli("validate-config", str(path), prefix=_without_root_powers())
    assert_one_line_refusal(out, f"{path}: storage.duckdb_path: {locked}/m.duckdb cannot be created: {locked} is not "
                                 "writable by this user")  # fmt: skip
    path.write_text(f"storage: {{artifact_root: locked}}\n{BASE}")  # an existing folder this user cannot write in
    out = cli("validate-config", str(path), prefix=_without_root_powers())
    assert_one_line_refusal(out, f"{path}: storage.artifact_root: {locked} is not writable by this user")
    import duckdb

    db = tmp_path / "ro.duckdb"  # an existing results store this user may only read
    duckdb.connect(str(db)).close()
    db.chmod(0o444)
    path.write_text(f"storage: {{duckdb_path: ro.duckdb}}\n{BASE}")
    out = cli("validate-config", str(path), prefix=_without_root_powers())
    assert_one_line_refusal(out, f"{path}: storage.duckdb_path: {db} is not writable by this user")


def test_storage_on_a_read_only_file_system(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = tmp_path / "c.yaml"
        path.write_text(f"storage: {{duckdb_path: ro/m.duckdb, report_dir: ro/report}}\n{BASE}")
        assert problems_of(path) == [
            f"{path}: storage.duckdb_path: {mnt}/m.duckdb cannot be created: {mnt} is not writable by this user",
            f"{path}: storage.report_dir: {mnt}/report cannot be created: {mnt} is not writable by this user",
        ]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ----------------------------------------------------------------------------------- F15: silent config drops
def test_duplicate_keys_refused_with_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("nodes: [{name: a, runner: local}]\nbenchmark: {backend: extractive, checkpoint: null}\n"
                    "nodes: [{name: b, runner: local}]\n")  # fmt: skip
    assert problems_of(path) == [
        f"{path}: nodes: key given twice (lines 1 and 3); YAML would keep only the last, so remove one"
    ]
    path.write_text(
        "benchmark:\n"
        "  backend: extractive\n"
        "  checkpoint: null\n"
        "  scenarios:\n"
        "    Offline: {min_duration_ms: 100}\n"
        "    Offline: {min_duration_ms: 200}\n"
        "nodes:\n"
        "  - {name: a, runner: local, name: b}\n"
    )
    assert problems_of(path) == [
        f"{path}: benchmark.scenarios.Offline: key given twice (lines 5 and 6); YAML would keep only the last, "
        "so remove one",
        f"{path}: nodes[0].name: key given twice (both on line 8); YAML would keep only the last, so remove one",
    ]


def test_a_scenario_with_no_value_is_refused_false_disables(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("benchmark:\n  backend: extractive\n  checkpoint: null\n  scenarios:\n    Offline:\n"
                    "    Server: {target_qps: 10}\n" + NODE)  # fmt: skip
    assert problems_of(path) == [
        f"{path}: benchmark.scenarios.Offline: empty; write {{}} to enable it with defaults or false to disable it"
    ]
    path.write_text(path.read_text().replace("    Offline:\n", "    Offline: false\n"))
    assert load_config(path).scenario_names == ["Server"]
    path.write_text(path.read_text().replace("    Offline: false\n", "    Offline: {}\n"))
    assert load_config(path).scenario_names == ["Offline", "Server"]


def test_shipped_configs_still_load():
    for path in [PROJECT / "config" / "config.yaml", *sorted((PROJECT / "config" / "examples").glob("*.yaml"))]:
        assert load_config(path).node_names, path
