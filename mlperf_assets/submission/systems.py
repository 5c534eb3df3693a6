"""``systems/<system>.json``, ``measurements.json`` and the scenario ``README.md`` of a submission tree: what the
run manifests say about the machine (GPUs, driver, CPU, memory, OS, engine versions) plus the config's
``submission:`` block (what a machine cannot know). Pure: no Dagster, no DuckDB."""

from __future__ import annotations

import re
from typing import Any, Mapping


def safe_name(text: str) -> str:
    """A folder name from free text: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "system"


def _gpu_memory_gb(text: str | None) -> str | None:
    m = re.match(r"\s*([\d.]+)\s*MiB", text or "")
    return f"{round(float(m.group(1)) / 1024)} GB" if m else None


def system_json(sub: Mapping[str, Any], manifest: Mapping[str, Any], *, division: str, machine: Mapping[str, Any],
                framework: str, nodes: int = 1) -> dict[str, Any]:
    """Every field the MLCommons checker requires of ``systems/<system>.json``: measured facts first (the run
    manifest's GPUs and host, ``machine`` as the node's runner reports it), the config's ``submission:`` block over
    them, and its ``system:`` mapping (any field, verbatim) last."""
    gpus = manifest.get("gpus") or []
    host = manifest.get("host") or {}
    backend = manifest.get("backend") or {}
    versions = backend.get("versions") or {}
    if gpus:
        accel = gpus[0].get("name") or "GPU"
        accel_mem = _gpu_memory_gb(gpus[0].get("memory.total")) or "unknown"
        driver = gpus[0].get("driver_version")
    else:
        accel, accel_mem, driver = "N/A (CPU only)", "N/A", None
    stack = [f"mlperf-dagster {manifest['harness_version']}"] if manifest.get("harness_version") else []
    stack += [f"{k} {v}" for k, v in sorted(versions.items()) if v]
    stack += [f"mlcommons-loadgen {manifest.get('loadgen_version')}", f"python {host.get('python')}"]
    if driver:
        stack.append(f"NVIDIA driver {driver}")
    cores = machine.get("cores") or host.get("cpu_count")
    data: dict[str, Any] = {
        "division": division,
        "submitter": sub.get("submitter"),
        "status": sub.get("status"),
        "system_name": sub.get("system_name"),
        "system_type": sub.get("category"),
        "system_type_detail": sub.get("system_type_detail") or "N/A",
        "number_of_nodes": nodes,
        "host_processor_model_name": sub.get("host_processor_model_name") or machine.get("cpu_model") or "unknown",
        "host_processors_per_node": sub.get("host_processors_per_node") or machine.get("cpu_sockets") or 1,
        "host_processor_core_count": sub.get("host_processor_core_count") or cores or "unknown",
        "host_processor_frequency": f"{machine['cpu_mhz']} MHz" if machine.get("cpu_mhz") else "N/A",
        "host_processor_caches": machine.get("cpu_cache") or "N/A",
        "host_processor_interconnect": "N/A",
        "host_memory_capacity": sub.get("host_memory_capacity")
        or (f"{machine['memory_gb']} GB" if machine.get("memory_gb") else "unknown"),
        "host_memory_configuration": sub.get("host_memory_configuration"),
        "host_storage_capacity": sub.get("host_storage_capacity"),
        "host_storage_type": sub.get("host_storage_type"),
        "host_networking": sub.get("host_networking"),
        "host_networking_topology": sub.get("host_networking_topology"),
        "host_network_card_count": sub.get("host_network_card_count"),
        "accelerators_per_node": len(gpus) if gpus else "0",  # the checker reads a number 0 as "empty"
        "accelerator_model_name": accel,
        "accelerator_memory_capacity": accel_mem,
        "accelerator_memory_configuration": sub.get("accelerator_memory_configuration"),
        "accelerator_frequency": "N/A",
        "accelerator_host_interconnect": sub.get("accelerator_host_interconnect"),
        "accelerator_interconnect": sub.get("accelerator_interconnect"),
        "accelerator_interconnect_topology": "N/A",
        "accelerator_on-chip_memories": "N/A",
        "cooling": sub.get("cooling"),
        "framework": framework,
        "operating_system": machine.get("os") or host.get("platform") or "unknown",
        "other_software_stack": ", ".join(stack),
        "hw_notes": sub.get("hw_notes") or "",
        "sw_notes": sub.get("sw_notes") or "",
    }
    data.update(sub.get("system") or {})
    return data


def framework_name(manifest: Mapping[str, Any]) -> str:
    """``vllm 0.x`` for a model backend, or the baseline's name, labelled as one."""
    backend = manifest.get("backend") or {}
    name = backend.get("name") or "unknown"
    versions = backend.get("versions") or {}
    version = versions.get(name) or next((v for v in versions.values() if v), None)
    label = f"{name} {version}" if version else name
    if backend.get("kind") and backend.get("kind") != "model":
        label += f" ({backend['kind']}, not a model)"
    return label


def measurements_json(sub: Mapping[str, Any], manifest: Mapping[str, Any], checkpoint: str | None) -> dict[str, Any]:
    backend = manifest.get("backend") or {}
    baseline = backend.get("kind") not in (None, "model")
    return {
        "input_data_types": sub.get("input_data_types") or "int32 token ids",
        "retraining": sub.get("retraining") or "No",
        "starting_weights_filename": sub.get("starting_weights_filename")
        or checkpoint or f"none: the {backend.get('name')} baseline uses no weights",
        "weight_data_types": sub.get("weight_data_types") or ("none (baseline)" if baseline else "bf16"),
        "weight_transformations": sub.get("weight_transformations") or "none",
    }


def scenario_readme(*, system: str, benchmark: str, scenario: str, manifest: Mapping[str, Any], run_id: str,
                    smoke_reasons: list[str], smoke_settings: list[str] = (), node: str | None = None,
                    lg_scenario: str | None = None, src: str | None = None, mlperf_conf: bool = False) -> str:
    """The scenario's README.md: what produced it, how to reproduce it (``src``: its recipe folder under the
    submitter's folder), and why it is not submittable. Headed "smoke settings" only when ``smoke_settings`` (the
    run's own logs against the benchmark's required counts and duration) says so; other reasons (a baseline
    backend, a missing compliance run) are named as what they are."""
    backend = manifest.get("backend") or {}
    node = node or manifest.get("node") or "NODE"
    loadgen = manifest.get("loadgen_version")
    lines = [
        f"# {benchmark} {scenario} on {system}",
        "",
        f"Produced by mlperf-dagster {manifest.get('harness_version') or ''} (run `{run_id}`, node `{node}`), "
        f"backend `{backend.get('name')}` ({backend.get('kind')}), LoadGen {loadgen}.",
        "",
        f"Reproduce: `mlperf-dagster run --node {node} --scenario {lg_scenario or scenario}` with the config that "
        "produced this run, then `mlperf-dagster submission --out DIR`.",
    ]
    if src:
        lines += ["", f"The exact harness command of each run (performance, accuracy, compliance) is in `{src}/"
                  "commands.sh`, the launch recipe (backend, checkpoint, engine arguments, versions, each run's spec) "
                  f"in `{src}/launch.json` (both under the submitter's folder). `user.conf` beside this file holds "
                  "the LoadGen settings the performance run used."]
    lines += ["", f"mlperf.conf: the runs used the copy compiled into LoadGen {loadgen}"
              + ("; `mlperf.conf` beside `user.conf` is the copy of the MLCommons checkout the tree was built with."
                 if mlperf_conf else ".")]
    if smoke_reasons:
        head = "NOT A SUBMISSION RUN (smoke settings):" if smoke_settings else "NOT A SUBMISSION RUN:"
        lines += ["", head, *[f"- {r}" for r in smoke_reasons]]
    return "\n".join(lines) + "\n"
