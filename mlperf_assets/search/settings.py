"""What a capacity search runs and answers, from the config: its LoadGen model and settings per probe, the identity
that makes a second run resume it, and the config lines that accept its result (no runner, no store)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlperf_assets.config import MlperfConfig
from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS
from mlperf_assets.plan import engine_args
from mlperf_assets.search.algorithm import ESTIMATE, PROBE, Outcome, SearchError

LABELS = ("Server", "Interactive")  # the search's scenarios: LoadGen Server under the plain / -interactive model
# LoadGen Server settings a probe sets itself (the config's other Server settings pass through)
PROBE_KEYS = ("target_qps", "min_duration", "max_duration", "min_query_count", "max_query_count")


# --------------------------------------------------------------------------------------------- identity


def search_lg_model_name(config: MlperfConfig, label: str) -> str:
    """The LoadGen model a search of ``label`` runs: Server = the config's (or the benchmark's default) non-interactive
    model; Interactive = the benchmark's ``-interactive`` model (SearchError if it has none)."""
    b = config.benchmark
    if label == "Server":
        name = b.lg_model_name or BENCHMARKS[b.model].default_lg_model_name
        if LOADGEN_MODELS[name].server_scenario_label != "Server":
            name = BENCHMARKS[b.model].default_lg_model_name
        return name
    if label == "Interactive":
        for m in LOADGEN_MODELS.values():
            if m.benchmark == b.model and m.server_scenario_label == "Interactive":
                return m.name
        raise SearchError(f"benchmark {b.model} has no Interactive LoadGen model (only llama3.1-8b does)")
    raise SearchError(f"unknown search scenario {label!r}: expected one of {', '.join(LABELS)}")


def search_labels(config: MlperfConfig) -> list[str]:
    """The search scenarios of the config's benchmark: Server, and Interactive where the registry has it."""
    out = ["Server"]
    if any(m.benchmark == config.benchmark.model and m.server_scenario_label == "Interactive"
           for m in LOADGEN_MODELS.values()):
        out.append("Interactive")
    return out


def base_server_settings(config: MlperfConfig) -> dict[str, Any]:
    """The config's Server settings a probe keeps (all but rate, duration and query counts)."""
    server = config.benchmark.scenarios.Server
    settings = server.as_settings() if server is not None else {}
    return {k: v for k, v in settings.items() if k not in PROBE_KEYS}


# Probes are not padded: with sample_concatenate_permutation on (mlperf.conf, for llama3.1-8b and gpt-j) LoadGen
# rounds a schedule up to whole multiples of the loaded samples (13,368 on the full dataset), which would make a 60 s
# probe at 40 QPS (2,400 queries) run 13,368 queries, about 5.6 x longer. The confirmation keeps the official setting.
UNPADDED = {"sample_concatenate_permutation": False}


def probe_settings(config: MlperfConfig, kind: str, target_qps: float) -> dict[str, Any]:
    """LoadGen settings of one probe (``kind`` probe or confirm) or of the Offline estimate probe."""
    s = config.search
    if kind == ESTIMATE:
        return {"target_qps": 1.0, "min_duration": int(s.offline_probe_duration_s * 1000),
                "min_query_count": s.offline_probe_queries, **UNPADDED}
    duration = s.probe_duration_s if kind == PROBE else s.confirm_duration_s
    out = {**base_server_settings(config), "target_qps": float(target_qps), "min_duration": int(duration * 1000)}
    if s.min_queries:
        out["min_query_count"] = s.min_queries
    if kind == PROBE:
        out.update(UNPADDED)
    return out


def search_identity(config: MlperfConfig, node: str, label: str, dataset: Path) -> dict[str, Any]:
    """Everything that shapes a search's steps: the same identity resumes the stored search."""
    try:
        st = dataset.stat()
        ds = {"path": str(dataset), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        ds = {"path": str(dataset)}
    return {
        "node": node, "scenario": label, "lg_model_name": search_lg_model_name(config, label),
        "benchmark": config.benchmark.model, "backend": config.benchmark.backend,
        "engine_args": engine_args(config, node), "dataset": ds, "server_settings": base_server_settings(config),
        "search": config.search.model_dump(),
    }


def identity_digest(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def search_id_for(digest: str, existing: Sequence[str], fresh: bool) -> str:
    """``<digest>-<n>``: the newest search of this identity (resumed), or a new one (``fresh``, or none yet)."""
    numbers = [int(s.rsplit("-", 1)[1]) for s in existing if s.startswith(digest + "-") and s.rsplit("-", 1)[1].isdigit()]
    latest = max(numbers, default=0)
    return f"{digest}-{latest + 1 if fresh or not latest else latest}"


# --------------------------------------------------------------------------------------------- the suggestion


def suggestion_lines(label: str, lg_model_name: str, qps: float) -> list[str]:
    """The config lines that accept the result (dotted keys)."""
    lines = [f"benchmark.scenarios.Server.target_qps: {qps:.2f}"]
    if label == "Interactive":
        lines.insert(0, f"benchmark.lg_model_name: {lg_model_name}")
    return lines


def suggestion_yaml(node: str, label: str, lg_model_name: str, outcome: Outcome, search_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"# max_qps_search {search_id}: node {node}, {label} (LoadGen model {lg_model_name}), {stamp}",
            f"# {outcome.message}"]
    if outcome.qps is None:
        return "\n".join([*head, "# no suggestion: the search found no rate to confirm", ""])
    body = ["benchmark:"]
    if label == "Interactive":
        body.append(f"  lg_model_name: {lg_model_name}")
    body += ["  scenarios:", "    Server:", f"      target_qps: {outcome.qps:.2f}"]
    note = ["# Accept it by merging these lines into your config (target_qps is one value for every node)."]
    return "\n".join([*head, *note, *body, ""])


def suggestion_path(config: MlperfConfig, node: str, label: str) -> Path:
    return config.storage.report_dir / f"qps_search_{node}_{label}.yaml"

