"""The config's ``submission:`` block at validate-config (issue 24, G6 and G7): names that become folders of the tree
(``submitter``, ``system_name``) may not be blank, '.', '..', hidden or hold a path separator, and the submitter must
be a folder name the checker accepts as is; ``system:`` values are JSON scalars (a YAML date, a list, NaN and
infinity are refused); and no storage path may lie where the submission trees go. One line each, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlperf_assets import cli
from mlperf_assets.config import ConfigError, parse_config

BASE = "nodes: [{name: local, runner: local}]\nbenchmark: {backend: extractive}\n"
FIELDS = ("host_storage_type: a, host_storage_capacity: a, host_memory_configuration: a, host_networking: a, "
          "host_networking_topology: a, host_network_card_count: '0', accelerator_host_interconnect: a, "
          "accelerator_interconnect: a, accelerator_memory_configuration: a, cooling: a")


def _text(submitter: str = "Org", system_name: str = "sys", system: str = "{}") -> str:
    return BASE + f"submission: {{submitter: {submitter}, system_name: {system_name}, {FIELDS}, system: {system}}}\n"


def _problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, tmp_path / "c.yaml")
    return [p.split("c.yaml: ", 1)[1] for p in exc.value.problems]


def test_good_names_and_values_pass(tmp_path):
    config = parse_config(_text("My-Org_1.0", "'My System (8x H100)'", "{x: 1, y: 2.5, z: true, w: 'text', v: null}"),
                          tmp_path / "c.yaml")
    assert config.submission.submitter == "My-Org_1.0"


@pytest.mark.parametrize("field, value, message", [
    ("submitter", "'..'", "submission.submitter: '..' starts with '.'"),
    ("submitter", "'.'", "submission.submitter: '.' starts with '.'"),
    ("submitter", "'   '", "submission.submitter: is blank"),
    ("submitter", "'a/b'", "submission.submitter: 'a/b' holds a path separator"),
    ("submitter", "'My Org'", "submission.submitter: 'My Org' must be letters, digits, '.', '_' or '-' only"),
    ("system_name", "'..'", "submission.system_name: '..' starts with '.'"),
    ("system_name", "'  '", "submission.system_name: is blank"),
    ("system_name", "'a/../../b'", "submission.system_name: 'a/../../b' holds a path separator"),
    ("system_name", "'a\\b'", "submission.system_name: 'a\\\\b' holds a path separator"),
])  # fmt: skip
def test_names_that_break_the_tree_are_refused(tmp_path, field, value, message):
    kwargs = {field: value}
    problems = _problems(_text(**kwargs), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(message), problems


@pytest.mark.parametrize("system, message", [
    ("{date_of_install: 2024-01-01}", "submission.system: date_of_install: 2024-01-01 is a date, not a string, "
                                      "number or boolean (the systems JSON holds only those); quote it: '2024-01-01'"),
    ("{accelerators_per_node: .nan}", "submission.system: accelerators_per_node: nan is not a finite number"),
    ("{x: .inf}", "submission.system: x: inf is not a finite number"),
    ("{x: [1, 2]}", "submission.system: x: [1, 2] is a list"),
    ("{x: {a: 1}}", "submission.system: x: {'a': 1} is a dict"),
])  # fmt: skip
def test_system_values_are_json_scalars(tmp_path, system, message):
    problems = _problems(_text(system=system), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_storage_inside_the_submission_folder_is_refused(tmp_path):
    """artifact_root named `submission`: the demo's and submission_package's trees would replace the run folders."""
    text = _text() + "storage: {artifact_root: r/submission, duckdb_path: r/db.duckdb, report_dir: r/report}\n"
    problems = _problems(text, tmp_path)
    assert problems == [f"storage.artifact_root: {tmp_path / 'r' / 'submission'} is or lies inside "
                        f"{tmp_path / 'r' / 'submission'}, where submission trees are written (the folder "
                        "submission/ beside the artifact root); move it elsewhere"]
    assert parse_config(_text() + "storage: {artifact_root: r/artifacts, duckdb_path: r/db.duckdb, "
                        "report_dir: r/report}\n", tmp_path / "c.yaml")


def test_validate_config_says_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(_text(submitter="'..'", system="{date_of_install: 2024-01-01}"))
    assert cli.main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in "".join(err)
    assert any("submission.submitter" in line for line in err) and any("date_of_install" in line for line in err)
