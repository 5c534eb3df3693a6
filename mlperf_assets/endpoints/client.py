"""What MLCommons' reference client is told for one point: its YAML (performance, and accuracy at accuracy points),
its command, the server it talks to, and the point's manifest; together the point's *job*, which the node-side
runner (``harness/endpoints_point.py``) executes. Pure: nothing here runs anything.

The client is configured only through its YAML (rules 2.1.1). Seeds: the published set's
``scheduler_rng_seed`` / ``sample_index_rng_seed`` go to the client's ``scheduler_random_seed`` /
``dataloader_random_seed``; ``model_seed`` is recorded in the manifest only (the client would send it as the
requests' ``seed``, and at 9.3e18 it is above the int64 an OpenAI server such as vLLM accepts).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlperf_assets.endpoints.plan import EndpointsPlan, Point
from mlperf_assets.harness.endpoints_point import SERVER_PORT, SERVER_URL, STANDIN_TOKENIZER
from mlperf_assets.harness.run_folder import CLIENT_ACCURACY_DIR, CLIENT_REPORT_DIR

if TYPE_CHECKING:
    from mlperf_assets.config.endpoints import EndpointsConfig

CNN_DATASET = "cnn_dailymail::llama3_8b"  # the client's predefined CNN/DM dataset with the llama3_8b preset
CNN_DATASET_KEY = "cnn_dailymail"  # point.yaml's dataset (the checker's MIN_QUERY_COUNT key)
ECHO_MODULE = "inference_endpoint.testing.echo_server"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
# the llama3_8b preset sends its own chat template (findings 1.4): vLLM must accept request chat templates
VLLM_REQUIRED_ARGS = ("--trust-request-chat-template",)


STANDIN_TOKENIZER_DIR = "echo-tokenizer"  # <artifact_root>/../endpoints/<this>: the echo curve's stand-in tokenizer
STANDIN_TOKENIZER_NOTE = ("stand-in tokenizer (a small byte-level BPE built offline for the echo server, not Llama "
                          "3.1's): token counts, TPOT and TPS are unofficial")


def uses_standin_tokenizer(cfg: EndpointsConfig) -> bool:
    """The echo server without a configured tokenizer: the client counts tokens with a stand-in the node builds
    (``harness/echo_tokenizer.py``); without one it would count none (no TPOT, system_tps 0). Never for a real
    server, whose model's own tokenizer is the only one whose counts mean anything."""
    return cfg.server.launch == "echo" and not cfg.server.tokenizer


def server_url(cfg: EndpointsConfig) -> str:
    """The URL the client is given: the external server's, or a placeholder the node fills with the port the
    server it starts listens on."""
    return cfg.server.url if cfg.server.launch == "external" else SERVER_URL


def server_launch(cfg: EndpointsConfig) -> dict[str, Any]:
    """How the node reaches (or starts) the server: one fixed recipe for every point of the curve."""
    s = cfg.server
    out: dict[str, Any] = {"launch": s.launch, "url": s.url, "port": s.port, "ready_timeout_s": s.ready_timeout_s}
    if s.launch == "echo":
        out["argv"] = [cfg.client.python_path, "-m", ECHO_MODULE, "--port", SERVER_PORT]
    elif s.launch == "vllm":
        out["argv"] = [s.vllm_python or "python3", "-m", VLLM_MODULE, "--model", s.model, "--host", "127.0.0.1",
                       "--port", SERVER_PORT, *VLLM_REQUIRED_ARGS, *s.vllm_args]
    return out


def launch_recipe(cfg: EndpointsConfig) -> str:
    """The server's launch as one shell-quoted line (what src/<impl>/README.md discloses)."""
    import shlex

    launch = server_launch(cfg)
    if "argv" not in launch:
        return f"external server at {cfg.server.url} (not started by mlperf-dagster)"
    return shlex.join(launch["argv"]).replace(SERVER_PORT, str(cfg.server.port or "<port>"))


def _base(cfg: EndpointsConfig, plan: EndpointsPlan, point: Point, report_dir: str) -> dict[str, Any]:
    model_params: dict[str, Any] = {"name": cfg.server.model, "temperature": 0.0, "max_new_tokens": cfg.max_tokens,
                                    "streaming": "on"}
    if cfg.server.tokenizer:
        model_params["tokenizer_name"] = cfg.server.tokenizer
    elif uses_standin_tokenizer(cfg):
        model_params["tokenizer_name"] = STANDIN_TOKENIZER  # the node puts the built folder's path here
    if point.concurrency is None:
        load = {"type": "max_throughput"}
    else:
        load = {"type": "concurrency", "target_concurrency": point.concurrency}
    return {
        "name": f"{plan.benchmark}-{point.label}",
        "type": "offline" if point.concurrency is None else "online",
        "model_params": model_params,
        "settings": {
            "runtime": {
                "min_duration_ms": int(point.min_duration_s * 1000),
                "scheduler_random_seed": plan.seeds["scheduler_rng_seed"],
                "dataloader_random_seed": plan.seeds["sample_index_rng_seed"],
            },
            "load_pattern": load,
            "client": {**cfg.client.settings, "num_workers": cfg.client.num_workers, "stream_all_chunks": True},
        },
        "endpoint_config": {"endpoints": [server_url(cfg)], "api_type": "openai"},
        "report_dir": report_dir,
    }


def performance_config(cfg: EndpointsConfig, plan: EndpointsPlan, point: Point) -> dict[str, Any]:
    data = _base(cfg, plan, point, CLIENT_REPORT_DIR)
    data["settings"]["runtime"]["n_samples_to_issue"] = point.n_samples_to_issue
    if point.max_duration_s is not None:  # a probe: the client stops the performance phase itself
        data["settings"]["runtime"]["max_duration_ms"] = int(point.max_duration_s * 1000)
    data["datasets"] = [{"name": CNN_DATASET, "type": "performance", "samples": plan.dataset_samples,
                         "parser": {"prompt": "prompt"}}]
    return data


def accuracy_config(cfg: EndpointsConfig, plan: EndpointsPlan, point: Point) -> dict[str, Any]:
    """Every sample once, unsalted, at the point's own load (rules 4.3: right after its performance run)."""
    data = _base(cfg, plan, point, CLIENT_ACCURACY_DIR)
    data["datasets"] = [{"name": CNN_DATASET, "type": "accuracy", "samples": plan.dataset_samples,
                         "parser": {"prompt": "prompt"},
                         "accuracy_config": {"eval_method": cfg.client.accuracy_scorer, "ground_truth": "highlights",
                                             "extractor": "identity_extractor", "num_repeats": 1}}]
    return data


def render_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=120)


def client_commit(cfg: EndpointsConfig) -> str | None:
    """The client's commit: configured, else read from the user's checkout (git), else None."""
    if cfg.client.commit:
        return cfg.client.commit
    checkout = cfg.client.checkout
    if checkout is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return _pinned_commit(checkout)


def _pinned_commit(checkout: Path) -> str | None:
    """A copy that is no git checkout may say its commit in PINNED.md (``commit `<40 hex>```)."""
    import re

    try:
        text = (checkout / "PINNED.md").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"commit `([0-9a-f]{40})`", text)
    return found.group(1) if found else None


def point_manifest(cfg: EndpointsConfig, plan: EndpointsPlan, point: Point, node: str) -> dict[str, Any]:
    """POINT_MANIFEST (the contract with the bundle writer), as planned; the node adds run id and client version."""
    launch = server_launch(cfg)
    return {
        "label": point.label, "node": node, "concurrency": point.concurrency, "load_pattern": point.load_pattern,
        "region": point.region, "role": point.role, "accuracy": point.accuracy, "offline": point.offline,
        "n_samples_to_issue": point.n_samples_to_issue, "passes": point.passes,
        "min_duration_s": point.min_duration_s, "official": plan.official and not uses_standin_tokenizer(cfg),
        "standin_tokenizer": uses_standin_tokenizer(cfg),
        "seeds": dict(plan.seeds), "seed_set": plan.seed_set, "target_cohort": plan.target_cohort,
        "c_min": plan.c_min, "c_max": plan.c_max, "division": cfg.division,
        "client": {"commit": client_commit(cfg), "version": None, "python": cfg.client.python_path,
                   "command": cfg.client.command},
        "server": {"url": cfg.server.url or "", "launch": cfg.server.launch, "model": cfg.server.model,
                   "args": list(launch.get("argv", [])), "launch_recipe": launch_recipe(cfg),
                   "tokenizer": STANDIN_TOKENIZER_NOTE if uses_standin_tokenizer(cfg) else
                   (cfg.server.tokenizer or cfg.server.model)},
        "benchmark": plan.benchmark, "dataset": CNN_DATASET_KEY, "dataset_samples": plan.dataset_samples,
    }  # fmt: skip


def point_job(cfg: EndpointsConfig, plan: EndpointsPlan, point: Point, node: str, *,
              standin_cache: str | None = None) -> dict[str, Any]:
    """Everything the node-side runner needs for ``point`` (``harness/endpoints_point.py`` reads it).
    ``standin_cache``: where the node builds (once) and reuses the echo curve's stand-in tokenizer."""
    return {
        "standin_tokenizer": (standin_cache or STANDIN_TOKENIZER_DIR) if uses_standin_tokenizer(cfg) else None,
        "manifest": point_manifest(cfg, plan, point, node),
        "client_argv": [cfg.client.command],
        "client_python": cfg.client.python_path,
        "server": server_launch(cfg),
        "perf_yaml": render_yaml(performance_config(cfg, plan, point)),
        "accuracy_yaml": render_yaml(accuracy_config(cfg, plan, point)) if point.accuracy else None,
    }


def job_json(job: dict[str, Any]) -> str:
    return json.dumps(job, sort_keys=True)


__all__ = ["point_job", "job_json", "point_manifest", "performance_config", "accuracy_config", "render_yaml",
           "launch_recipe", "server_launch"]
