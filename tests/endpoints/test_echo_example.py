"""The shipped echo example (config/examples/endpoints-echo.yaml), as a newcomer without hub access runs it: every
point counts tokens with the stand-in tokenizer the node builds, and the bundle's checker errors are only the ones a
shortened curve against an echo server must have.

- the stand-in tokenizer goes to the echo server's client only (never to an external or vLLM server's, whose config
  must name the model's tokenizer when the model is a bare served name), labelled in the point manifest; built by the client's own Python, loadable by its AutoTokenizer with a chat template, reused;
- the whole example through the CLI: run, package, the real checker, the Pareto page in Chromium (slow, ~4 min).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.endpoints_client import ensure_client

from mlperf_assets.config import ConfigError, load_config
from mlperf_assets.config.endpoints import EndpointsConfig
from mlperf_assets.endpoints.client import STANDIN_TOKENIZER_NOTE, point_job
from mlperf_assets.endpoints.plan import plan_curve
from mlperf_assets.harness.endpoints_point import STANDIN_TOKENIZER
from tests.support.browser import RENDERED, Browser, assert_offline_and_clean, needs_chromium

pytest.importorskip("submission_checker")

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "config" / "examples" / "endpoints-echo.yaml"
CLI = str(Path(sys.executable).parent / "mlperf-dagster")
BUILDER = PROJECT / "mlperf_assets" / "harness" / "echo_tokenizer.py"
# what a shortened curve against an echo server must fail, and nothing else
EXPECTED_ERRORS = {"min-query-count", "point-duration", "min-duration", "accuracy-gate", "accuracy-sample-count"}


def _job(server: dict):
    cfg = EndpointsConfig(server=server, highest_concurrency=64, shortened=True, passes=1)
    plan = plan_curve(cfg, 20)
    return point_job(cfg, plan, plan.point("c1"), "box", standin_cache="/cache/echo-tokenizer")


def test_only_the_echo_server_without_a_tokenizer_gets_the_standin():
    job = _job({"launch": "echo", "model": "echo-model"})
    assert job["standin_tokenizer"] == "/cache/echo-tokenizer"
    for key in ("perf_yaml", "accuracy_yaml"):
        assert yaml.safe_load(job[key])["model_params"]["tokenizer_name"] == STANDIN_TOKENIZER
    manifest = job["manifest"]
    assert manifest["standin_tokenizer"] is True and manifest["official"] is False
    assert manifest["server"]["tokenizer"] == STANDIN_TOKENIZER_NOTE
    for server in ({"launch": "echo", "model": "echo-model", "tokenizer": "/models/tok"},
                   {"launch": "external", "url": "http://10.1.2.3:8000"},
                   {"launch": "vllm", "model": "/models/llama"}):
        job = _job(server)
        assert job["standin_tokenizer"] is None and job["manifest"]["standin_tokenizer"] is False
        assert STANDIN_TOKENIZER not in job["perf_yaml"]
        assert job["manifest"]["server"]["tokenizer"] == server.get("tokenizer") or job["manifest"]["server"]["model"]


def test_a_real_server_needs_its_models_tokenizer(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("nodes: [{name: box, runner: local}]\nendpoints:\n"
                    "  server: {launch: external, url: 'http://10.0.0.5:8000', model: llama-8b}\n")
    with pytest.raises(ConfigError, match=r"tokenizer: required when model \('llama-8b'\)"):
        load_config(path)
    path.write_text(path.read_text().replace("model: llama-8b", "model: llama-8b, tokenizer: /models/llama/"))
    assert load_config(path).endpoints.server.tokenizer == "/models/llama/"


def test_standin_tokenizer_loads_in_the_client_with_a_chat_template(tmp_path: Path):
    python = str(ensure_client() / "bin" / "python")
    out = tmp_path / "endpoints" / "echo-tokenizer"
    for _ in range(2):
        done = subprocess.run([python, str(BUILDER), str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    stamp = json.loads((out / "standin_tokenizer.json").read_text())
    assert stamp["standin"] is True
    assert [p.name for p in tmp_path.joinpath("endpoints").iterdir()] == ["echo-tokenizer"]  # no temp folder left
    code = ("import json, sys\nfrom transformers import AutoTokenizer\nt = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "msgs = [{'role': 'user', 'content': 'The president said on Tuesday.'}]\n"
            "print(json.dumps([len(t('The president said on Tuesday.').input_ids), "
            "len(t.apply_chat_template(msgs, tokenize=True, return_dict=False))]))")
    loaded = subprocess.run([python, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    plain, chat = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert 1 < plain < 31 and chat > plain  # fewer tokens than characters; the template frames the message


def _example(tmp_path: Path, venv: Path) -> Path:
    """The example as shipped, its storage in tmp and the client where this machine has it."""
    text = EXAMPLE.read_text().replace("../../results/endpoints-echo", str(tmp_path / "results"))
    text = text.replace("~/.cache/mlperf-dagster/endpoints-client", str(venv))
    config = tmp_path / "endpoints-echo.yaml"
    config.write_text(text)
    return config


@pytest.mark.slow
@needs_chromium
def test_echo_example_bundle_fails_only_query_count_duration_and_accuracy(tmp_path: Path):
    venv = ensure_client()
    config = _example(tmp_path, venv)
    env = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    run = subprocess.run([CLI, "endpoints", "run", "--config", str(config)], capture_output=True, text=True,
                         env=env, timeout=1200, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "results" / "endpoints" / "echo-tokenizer" / "tokenizer.json").is_file()  # one shared build

    out = tmp_path / "bundle"
    package = subprocess.run([CLI, "endpoints", "package", "--config", str(config), "--out", str(out)],
                             capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert package.returncode in (0, 1), package.stdout[-3000:] + package.stderr[-3000:]
    (root,) = [p for p in out.glob("*/*") if (p / "results").is_dir()]
    checker = subprocess.run([str(Path(sys.executable).parent / "endpoints-submission-cli"), "check-submission",
                              str(root), "--json"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "NO_COLOR": "1"})
    report = json.loads(checker.stdout)
    errors = {r["rule"] for r in report["results"] if r.get("severity") == "error"}
    assert errors and errors <= EXPECTED_ERRORS, errors
    assert "metric-consistency-tpot-p90" not in errors

    from resources.store import ResultsStore

    points = ResultsStore(path=str(tmp_path / "results" / "mlperf.duckdb")).endpoint_points()
    assert len(points) == 8 and (points["system_tps"] > 0).all(), points[["label", "system_tps"]]
    online = points[points["concurrency"].notna()]
    assert online["tpot_p90_ms"].notna().all() and (online["tps_per_user"] > 0).all()
    assert not points["official"].any()
    readme = "\n".join(p.read_text() for p in root.glob("src/*/README.md"))
    assert "stand-in tokenizer" in readme and "UNOFFICIAL" in readme
    manifests = list((tmp_path / "results" / "artifacts" / "endpoints" / "local").glob("*/*/point_manifest.json"))
    assert len(manifests) == 8 and all(json.loads(m.read_text())["standin_tokenizer"] for m in manifests)

    page = tmp_path / "results" / "report" / "endpoints" / "endpoints.html"
    browser = Browser()
    try:
        browser.open(page)
        assert int(browser.wait_for(RENDERED)) >= 1
        assert browser.evaluate("document.querySelectorAll('#endpoints_pareto .scatterlayer .trace').length") >= 1
        assert_offline_and_clean(browser, page)
    finally:
        browser.close()
