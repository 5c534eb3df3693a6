"""``runner.render(spec)`` and ``mlperf-dagster render``: what a runner prints is what it launches.

The Kubernetes and Docker renders are checked in test_kubernetes_runner.py / test_docker_runner.py; here the local
and SSH command lines are compared with what ``start`` really runs or sends, and the base runner's refusal."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mlperf_assets.harness.args import RunSpec
from resources.runners import LocalRunner
from resources.runners.base import BenchmarkRunner, RunnerError

pytestmark = pytest.mark.timeout(300)


def _spec(dataset: Path, run_id: str, node: str = "local", **kw) -> RunSpec:
    fields = dict(
        run_id=run_id, node=node, scenario="Offline", mode="performance", benchmark="llama3.1-8b",
        backend="extractive", dataset_path=str(dataset), settings={"min_duration_ms": 200, "min_query_count": 5},
        progress_interval_s=0.2,
    )  # fmt: skip
    fields.update(kw)
    return RunSpec(**fields)


@pytest.fixture(scope="module")
def dataset(stories_dir, tmp_path_factory) -> Path:
    from mlperf_assets.harness.dataset import prepare_dataset

    out = tmp_path_factory.mktemp("ds") / "prepared data.json"  # a space: the quoting must hold
    return prepare_dataset("stories", stories_dir, out, benchmark="llama3.1-8b", tokenizer="byte", max_samples=5)


def test_local_render_is_the_argv_start_runs(tmp_path, dataset, monkeypatch):
    import resources.runners.local as local

    runner = LocalRunner(node="box", workdir=str(tmp_path / "work dir"))
    spec = _spec(dataset, "r1", node="box", mode="accuracy")
    rendered = runner.render(spec)
    assert not (tmp_path / "work dir").exists()  # rendering starts and writes nothing

    launched: dict = {}

    def refuse(argv, **kw):
        launched.update(argv=argv, cwd=kw["cwd"])
        raise OSError("not started in this test")

    monkeypatch.setattr(local.subprocess, "Popen", refuse)
    with pytest.raises(RunnerError, match="cannot start"):
        runner.start(spec)
    assert rendered.endswith("\n")
    assert shlex.split(rendered) == ["cd", str(launched["cwd"]), "&&", *launched["argv"]]
    assert "accuracy" in launched["argv"] and str(dataset) in launched["argv"]


def test_ssh_render_is_the_command_start_sends(sshd, tmp_path, dataset):
    from resources.runners.ssh import SSHRunner

    runner = SSHRunner(
        node="node-a", host="127.0.0.1", port=sshd.port, user=sshd.user, key_file=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts), workdir=str(tmp_path / "remote work"), python="/no/python",
        connect_timeout_s=5, command_timeout_s=30,
    )  # fmt: skip
    spec = _spec(dataset, "r1", node="node-a")
    rendered = runner.render(spec)
    assert runner._conn is None  # an absolute workdir: rendered without asking the node
    sent: list[str] = []
    original = runner._sh

    def recording(conn, command, what, **kw):
        sent.append(command)
        return original(conn, command, what, **kw)

    runner._sh = recording
    runner._harness_ok = True  # the launch itself is what is compared; the harness check is another test's
    try:
        runner.start(spec)
    except RunnerError:
        pass  # /no/python never starts: the command was sent all the same
    finally:
        runner.close()
    assert rendered == sent[-1] + "\n"
    assert rendered.startswith(f"cd {shlex.quote(str(tmp_path / 'remote work' / 'r1' / 'performance'))} || exit 97;")


class _Silent(BenchmarkRunner):
    kind = "silent"
    settings_model = dict
    start = poll = collect = cancel = active_runs = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.settings = type("Settings", (), {"name": "box-9"})()


def test_a_runner_without_render_says_so(tmp_path):
    with pytest.raises(RunnerError, match=r"^node box-9 \(silent\) has nothing to render$"):
        _Silent().render(_spec(tmp_path / "d.json", "r1"))


def test_render_command_prints_a_local_nodes_command(tmp_path, dataset, capsys):
    from mlperf_assets.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        f"storage: {{artifact_root: {tmp_path / 'results'}}}\n"
        "nodes: [{name: box, runner: local}]\nbenchmark: {backend: extractive, checkpoint: null}\n"
    )
    args = ["render", "--config", str(config), "--node", "box", "--scenario", "Offline", "--mode", "accuracy",
            "--run-id", "nightly-1", "--dataset", str(dataset)]  # fmt: skip
    assert main(args) == 0
    line = capsys.readouterr().out
    argv = shlex.split(line)
    assert argv[:3] == ["cd", str((tmp_path / "work" / "nightly-1" / "accuracy").resolve()), "&&"]
    assert "mlperf_assets.harness" in argv and str(dataset) in argv
    assert main([*args, "--runner", "ssh"]) == 2
    assert "has runner: local, not ssh" in capsys.readouterr().err
