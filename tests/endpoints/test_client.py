"""The reference client's YAML and the point's job (mlperf_assets/endpoints/client.py), judged by the real client's own
``inference-endpoint validate-yaml`` (the pinned, unmodified copy in its Python 3.12 venv)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from support.endpoints_client import ensure_client

from mlperf_assets.config.endpoints import EndpointsConfig
from mlperf_assets.endpoints.client import (
    accuracy_config,
    job_json,
    performance_config,
    point_job,
    render_yaml,
)
from mlperf_assets.endpoints.plan import plan_curve
from mlperf_assets.harness.endpoints_point import SERVER_PORT, SERVER_URL

pytest.importorskip("submission_checker")


def _plan(**kw):
    cfg = EndpointsConfig(**{"server": {"launch": "external", "url": "http://10.1.2.3:8000"},
                             "highest_concurrency": 64, "shortened": True, "passes": 2, **kw})
    return cfg, plan_curve(cfg, 20)


def test_yaml_carries_the_plan_and_the_seed_set():
    cfg, plan = _plan()
    point = plan.point("c3")
    perf = performance_config(cfg, plan, point)
    assert perf["settings"]["load_pattern"] == {"type": "concurrency", "target_concurrency": 3}
    assert perf["settings"]["runtime"]["n_samples_to_issue"] == 40
    assert perf["settings"]["runtime"]["scheduler_random_seed"] == 10487924139932647040
    assert perf["settings"]["runtime"]["dataloader_random_seed"] == 586478644936801402
    assert perf["settings"]["client"]["stream_all_chunks"] is True
    assert "seed" not in perf["model_params"]  # model_seed is above an OpenAI server's int64 seed
    assert [d["type"] for d in perf["datasets"]] == ["performance"]
    assert perf["endpoint_config"]["endpoints"] == ["http://10.1.2.3:8000"]
    acc = accuracy_config(cfg, plan, point)
    assert [d["type"] for d in acc["datasets"]] == ["accuracy"]
    assert acc["datasets"][0]["accuracy_config"]["ground_truth"] == "highlights"
    assert "n_samples_to_issue" not in acc["settings"]["runtime"]  # every sample once
    offline = performance_config(cfg, plan, plan.point("offline"))
    assert offline["type"] == "offline" and offline["settings"]["load_pattern"] == {"type": "max_throughput"}


def test_job_has_accuracy_only_at_accuracy_points_and_the_contract_manifest():
    cfg, plan = _plan()
    for point in plan.points:
        job = json.loads(job_json(point_job(cfg, plan, point, "box")))
        assert (job["accuracy_yaml"] is not None) == point.accuracy
        manifest = job["manifest"]
        for key in ("label", "node", "concurrency", "load_pattern", "region", "role", "accuracy",
                    "n_samples_to_issue", "seeds", "client", "server", "benchmark", "dataset_samples"):
            assert key in manifest, key
        assert manifest["benchmark"] == "llama3_1-8b" and manifest["official"] is False
        assert set(manifest["server"]) >= {"url", "launch", "model", "args", "launch_recipe"}
    free = [p for p in plan.points if p.role == "free"]
    assert free and not any(p.accuracy for p in free)


def test_managed_servers_get_a_port_placeholder_and_one_recipe():
    cfg, plan = _plan(server={"launch": "vllm", "model": "/models/llama", "vllm_args": ["--max-model-len", "4096"]})
    job = point_job(cfg, plan, plan.point("c1"), "box")
    argv = job["server"]["argv"]
    assert SERVER_PORT in argv and "--trust-request-chat-template" in argv and argv[-2:] == ["--max-model-len", "4096"]
    assert yaml.safe_load(job["perf_yaml"])["endpoint_config"]["endpoints"] == [SERVER_URL]
    recipes = {point_job(cfg, plan, p, "box")["manifest"]["server"]["launch_recipe"] for p in plan.points}
    assert len(recipes) == 1  # one server configuration for the whole curve


@pytest.mark.slow
def test_the_real_client_accepts_every_yaml(tmp_path):
    venv = ensure_client()
    cfg, plan = _plan()
    files = []
    for point in (plan.point("c1"), plan.point("c64"), plan.point("offline")):
        for name, data in (("perf", performance_config(cfg, plan, point)), ("acc", accuracy_config(cfg, plan, point))):
            path = tmp_path / f"{point.label}-{name}.yaml"
            path.write_text(render_yaml(data))
            files.append(path)
    broken = tmp_path / "broken.yaml"
    broken.write_text(render_yaml({**performance_config(cfg, plan, plan.point("c1")), "settings": {
        "load_pattern": {"type": "concurrency", "target_concurrency": "many"}}}))
    for path in [*files, broken]:
        out = subprocess.run([str(venv / "bin" / "inference-endpoint"), "validate-yaml", "-c", str(path)],
                             capture_output=True, text=True, timeout=300)
        assert (out.returncode == 0) == (path != broken), (path.name, out.stdout[-800:], out.stderr[-800:])
