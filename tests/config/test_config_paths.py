"""Each node model resolves its own orchestrator-side paths against the config file's folder; paths on the node are
kept as written. The runner kinds come from the node models' own ``runner`` literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlperf_assets.config import RUNNER_KINDS, ConfigError, parse_config
from mlperf_assets.config.nodes import NODE_CLASSES

CONFIG = """\
storage: {artifact_root: out/artifacts, duckdb_path: out/db.duckdb, report_dir: out/report}
benchmark: {backend: extractive, checkpoint: null}
nodes:
  - {name: here, runner: local}
  - {name: far, runner: ssh, host: h, key_file: keys/id, known_hosts: keys/known, workdir: remote/work}
  - {name: pool, runner: kubernetes, image: img, kubeconfig: kube/cfg, workdir: /results}
  - {name: box, runner: docker, image: img, docker_host: 'tcp://e:2376', tls_ca_cert: tls/ca.pem,
     tls_client_cert: tls/c.pem, tls_client_key: tls/k.pem, key_file: keys/id, volumes: ['data:/data'],
     harness_source: /src}
"""


def test_each_node_resolves_its_own_orchestrator_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPERF_DAGSTER_DATASET", raising=False)
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = parse_config(CONFIG, folder / "c.yaml")
    local, ssh, k8s, docker = config.nodes
    assert local.workdir == folder / "out" / "work"  # absent: beside the artifact root
    assert (ssh.key_file, ssh.known_hosts) == (folder / "keys" / "id", folder / "keys" / "known")
    assert ssh.workdir == "remote/work"  # the node's path, as written
    assert (k8s.kubeconfig, k8s.workdir) == (folder / "kube" / "cfg", "/results")
    assert [docker.tls_ca_cert, docker.tls_client_cert, docker.tls_client_key, docker.key_file] == [
        folder / "tls" / "ca.pem", folder / "tls" / "c.pem", folder / "tls" / "k.pem", folder / "keys" / "id"]
    assert docker.known_hosts == Path("~/.ssh/known_hosts").expanduser()
    assert (docker.volumes, docker.harness_source) == (["data:/data"], "/src")  # the engine's, as written


def test_runner_kinds_are_the_node_models_literals(tmp_path):
    assert RUNNER_KINDS == ("local", "ssh", "kubernetes", "docker")
    assert all(NODE_CLASSES[kind].model_fields["runner"].annotation.__args__ == (kind,) for kind in RUNNER_KINDS)
    with pytest.raises(ConfigError) as info:
        parse_config("nodes: [{name: a, runner: slurm}]\n", tmp_path / "c.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'c.yaml'}: nodes[0].runner: must be one of local, ssh, kubernetes, docker, got 'slurm'"
    ]
