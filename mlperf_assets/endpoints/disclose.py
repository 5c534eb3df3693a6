"""The hand-authored files of an MLPerf Endpoints bundle, authored from what the platform knows: ``point.yaml`` (rules
§8.3) from the point manifest and its measured results, ``system_desc.json`` (§8.2) from the config's ``system:``
block over the facts the harness recorded (GPUs, driver, CPU, memory), ``system_power.json`` (Appendix E) from the
config's sourced power inventory, ``src/<impl>/README.md`` from the server's actual launch recipe, and ``docs/``.

Pure: dicts and text in, dicts and text out. The names and shapes are those checker 1.5.3.0 reads
(``submission_checker/models/file/{point_config,system,system_power}.py``).
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Mapping, Sequence

from mlperf_assets.config.endpoints_disclosure import EndpointsPower, EndpointsSystem

MODEL_NAME = "llama3_1-8b"  # the checker's canonical name (not "llama3.1-8b": model-name-valid)
DATASET_KEY = "cnn_dailymail"  # point.yaml dataset: the key of the checker's MIN_QUERY_COUNT table
DATASET_SIZE = 13368
LINK_TO_MODEL = "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct"
DATASET_NAME = "CNN/DailyMail 3.0.0 validation"
DATASET_LINK = "https://huggingface.co/datasets/abisee/cnn_dailymail"
ULTRA_LOW_MAX = 32
SEED_KEYS = ("scheduler_rng_seed", "sample_index_rng_seed", "model_seed")
REGIONS = ("low_latency", "low_concurrency", "med_concurrency", "high_concurrency", "margin")
DISABLED_WARMUP = {"duration_s": 0, "requests_issued": 0, "requests_completed": 0,
                   "data_source": "none; warmup disabled", "concurrency": 0}
STEADY_STATUSES = ("windowable", "insufficient_duration", "insufficient_passes", "partial_dataset")


class DisclosureError(ValueError):
    """A point or the config lacks what a disclosure file needs: one line, naming what and where."""


def min_duration_ms(concurrency: int, *, offline: bool = False) -> int:
    """Rules §6.2: 600 s at Ultra-Low concurrency (1-32), 1,200 s above (and for the Offline point)."""
    return 600_000 if concurrency <= ULTRA_LOW_MAX and not offline else 1_200_000


def point_concurrency(manifest: Mapping[str, Any]) -> int:
    """The ``r<N>`` of a point: its concurrency, or the benchmark's dataset size (13,368) for the dedicated Offline
    point (§5.7) -- also on a shortened curve that ran a smaller dataset."""
    if manifest.get("role") == "offline" or manifest.get("concurrency") is None:
        return DATASET_SIZE
    return int(manifest["concurrency"])


def point_yaml(manifest: Mapping[str, Any], *, division: str, max_supported_concurrency: int, seed_set: str,
               seeds: Mapping[str, int], target_cohort: str, model_precision: str, implementation: str,
               steady_state: Mapping[str, Any] | None = None, offline_mode: str = "dedicated") -> dict[str, Any]:
    """The §8.3 disclosure of one point. ``seeds``: the bound seed set's three values (the same at every point)."""
    offline = manifest.get("role") == "offline" or manifest.get("concurrency") is None
    concurrency = point_concurrency(manifest)
    missing = [k for k in SEED_KEYS if k not in seeds]
    if missing:
        raise DisclosureError(f"seed set {seed_set!r}: no {', '.join(missing)}")
    pattern = manifest.get("load_pattern") or "concurrency"
    if offline and pattern in ("max_throughput", "offline"):
        pattern = "max_throughput"
    doc: dict[str, Any] = {"concurrency": concurrency}
    region = manifest.get("region")
    if region in REGIONS:
        doc["region"] = region
    elif not offline:
        doc["region"] = "submitters_choice"
    doc.update({
        "dataset": DATASET_KEY,
        "runtime_settings": {
            "load_pattern": pattern,
            "min_duration_ms": min_duration_ms(concurrency, offline=offline),
            "stream_all_chunks": True,
            "runtime": {k: int(seeds[k]) for k in SEED_KEYS},
        },
        "warmup": dict(DISABLED_WARMUP),
        "division": division,
        "max_supported_concurrency": int(max_supported_concurrency),
        "model_name": MODEL_NAME,
        "model_precision": model_precision,
        "link_to_model": LINK_TO_MODEL,
        "dataset_name": DATASET_NAME,
        "dataset_type": "Performance",
        "dataset_link": DATASET_LINK,
        "seed_set": seed_set,
        "target_cohort": target_cohort,
        "shared_src": f"src/{implementation}",
        "shared_docs": "docs",
    })
    if offline:
        doc["offline"] = offline_mode
    elif manifest.get("offline") == "elected":  # the C_max point elected as the curve's Offline point (§5.7.2)
        doc["offline"] = "elected"
    block = steady_state_block(steady_state)
    if block:
        doc["steady_state"] = block
    return doc


def steady_state_block(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The detector's verdict as point.yaml's ``steady_state`` block (status, verdict, window, state), or None when
    the detector said nothing usable (the checker then warns ``steady-state-basis``; it never errors on absence)."""
    if not data or data.get("status") not in STEADY_STATUSES:
        return None
    block: dict[str, Any] = {"status": data["status"]}
    for key in ("verdict", "window", "state"):
        if data.get(key) is not None:
            block[key] = data[key]
    return block


def _gpu_facts(run_manifest: Mapping[str, Any]) -> dict[str, Any]:
    gpus = [g for g in run_manifest.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        return {}
    first = gpus[0]
    memory = re.match(r"\s*([\d.]+)\s*MiB", str(first.get("memory.total") or ""))
    return {"accelerator_model_name": first.get("name"), "accelerators_per_node": len(gpus),
            "accelerator_memory_capacity": f"{round(float(memory.group(1)) / 1024)} GB" if memory else None,
            "driver": f"NVIDIA {first['driver_version']}" if first.get("driver_version") else None}


def tensor_parallel(manifest: Mapping[str, Any], accelerators: int | None) -> int | None:
    """The server's tensor parallelism: its launch arguments' ``--tensor-parallel-size``/``-tp``, else 1 on a
    one-accelerator node; None when neither says."""
    server = _server(manifest)
    words = [str(a) for a in server.get("args") or []] or shlex.split(str(server.get("launch_recipe") or ""))
    for i, word in enumerate(words):
        if word.startswith("--tensor-parallel-size="):
            return int(word.split("=", 1)[1])
        if word in ("--tensor-parallel-size", "-tp") and i + 1 < len(words) and words[i + 1].isdigit():
            return int(words[i + 1])
    return 1 if accelerators == 1 else None


def system_desc(system: EndpointsSystem, *, division: str, max_supported_concurrency: int,
                run_manifest: Mapping[str, Any] | None = None, machine: Mapping[str, Any] | None = None,
                point_manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``system_desc.json`` (§8.2): the config's ``system:`` block, with what it leaves out filled from the facts the
    harness recorded (``run_manifest``'s GPUs and host; ``machine``: ``harness.host_facts.this_machine()`` as the
    node's runner reports it). ``tps_utilization`` is added per point by the bundle writer."""
    recorded = {**_gpu_facts(run_manifest or {})}
    host = (run_manifest or {}).get("host") or {}
    machine = machine or {}
    if max_supported_concurrency <= ULTRA_LOW_MAX:
        raise DisclosureError(f"max_supported_concurrency {max_supported_concurrency}: the rules need a declared "
                              f"C_max above {ULTRA_LOW_MAX}")

    def pick(field: str, fallback: Any = None) -> Any:
        value = getattr(system, field)
        return value if value is not None else recorded.get(field, fallback)

    accelerator = {"accelerator_model_name": pick("accelerator_model_name"),
                   "accelerators_per_node": pick("accelerators_per_node"),
                   "accelerator_memory_capacity": pick("accelerator_memory_capacity")}
    node: dict[str, Any] = {
        "system_node_ensemble_id": 1,
        "number_of_nodes": system.node_count,
        "host_processor_model_name": system.host_processor_model_name or machine.get("cpu_model") or "not recorded",
        "host_processors_per_node": int(machine.get("cpu_sockets") or 1),
        "host_processor_core_count": system.host_processor_core_count or int(host.get("cpu_count") or
                                                                             machine.get("cpu_count") or 1),
        "host_memory_capacity": system.host_memory_capacity or (f"{machine['memory_gb']} GB"
                                                                if machine.get("memory_gb") else None),
        "host_memory_configuration": system.host_memory_configuration,
        "accelerator_info": [{k: v for k, v in accelerator.items() if v is not None}]
        if accelerator["accelerator_model_name"] else [],
        "host_network_card_count": system.host_network_card_count,
        "host_networking": system.host_networking,
        "cooling": system.cooling,
        "inference_backend": system.serving_framework,
        "driver": pick("driver", "not recorded"),
        "operating_system": system.operating_system or host.get("platform") or machine.get("os"),
        "filesystem": system.filesystem,
        "container_link": system.container_link,
    }
    desc: dict[str, Any] = {
        "submitter_contact": system.submitter_contact,
        "system_name": system.name,
        "shortened_system_name": system.shortened_name,
        "system_availability_status": system.availability,
        "availability_url": system.availability_url,
        "target_availability_date": system.target_availability_date,
        "max_supported_concurrency": int(max_supported_concurrency),
        "system_size": system.system_size,
        "system_node_ensemble_count": 1,
        "system_node_ensemble_total": system.node_count,
        "serving_framework": system.serving_framework,
        "node_types": [{k: v for k, v in node.items() if v is not None}],
        "tensor_parallel": tensor_parallel(point_manifest or {}, accelerator["accelerators_per_node"]),
        "division": division,
        "model_precision": system.model_precision,
        "link_to_model": LINK_TO_MODEL,
    }
    return {k: v for k, v in desc.items() if v is not None}


def system_power(power: EndpointsPower, *, system_desc_id: str, cooling: str) -> dict[str, Any]:
    """``system_power.json`` (Appendix E, ``component_sum``): the configured, sourced inventory; the checker computes
    the provisioned total (major components x (1 + cooling overhead))."""

    def component(c) -> dict[str, Any]:
        return {"model": c.model, "count_per_node": c.count_per_node,
                "tdp_per_unit": {"value_w": c.tdp.value_w, "source_type": c.tdp.source_type, "source": c.tdp.source}}

    components: dict[str, Any] = {"scale_up_network": {"method": "none"}}
    if power.cpu is not None:
        components["cpu"] = component(power.cpu)
    if power.accelerator is not None:
        components["accelerator"] = component(power.accelerator)
    doc: dict[str, Any] = {
        "system_desc_id": system_desc_id,
        "cooling": cooling,
        "node_sets": [{"node_set_id": 1, "system_node_ensemble_id": 1, "nodes_provisioned": power.nodes_provisioned,
                       "power_method": "component_sum", "components": components}],
        "scale_out": {"present": False},
    }
    if power.notes:
        doc["notes"] = power.notes
    return doc


def _server(manifest: Mapping[str, Any]) -> dict[str, Any]:
    server = manifest.get("server")
    return server if isinstance(server, dict) else {}


def src_readme(manifests: Sequence[Mapping[str, Any]], *, implementation: str) -> str:
    """``src/<impl>/README.md``: how the server was launched (the point manifests' recorded launch recipe, every
    distinct one), and how each point ran the reference client."""
    recipes: list[str] = []
    for m in manifests:
        server = _server(m)
        recipe = server.get("launch_recipe") or (
            shlex.join([str(server["launch"]), *map(str, server.get("args") or [])]) if server.get("launch") else "")
        if recipe and recipe not in recipes:
            recipes.append(recipe)
    if not recipes:
        raise DisclosureError("no point manifest records the server's launch recipe (server.launch_recipe)")
    first = manifests[0]
    client = first.get("client") if isinstance(first.get("client"), dict) else {}
    models = sorted({str(_server(m).get("model")) for m in manifests if _server(m).get("model")})
    lines = [f"# {implementation}: the system under test", "",
             "How the inference server was started for every point of this curve (recorded by mlperf-dagster when "
             "it launched the server; one configuration for the whole curve):", ""]
    for recipe in recipes:
        lines += ["```sh", recipe, "```", ""]
    if models:
        lines += [f"Model served: {', '.join(models)}.", ""]
    lines += _standin_tokenizer_note(manifests)
    lines += [
        "## Reproducing a point", "",
        "Each point ran MLCommons' reference client `inference_endpoint`, unmodified, configured only through its "
        "YAML (the `config.yaml` beside each point's results):", "",
        "```sh", "inference-endpoint benchmark from-config -c config.yaml", "```", "",
        f"Client: commit {client.get('commit') or 'not recorded'}, version {client.get('version') or 'not recorded'}, "
        f"Python {client.get('python') or 'not recorded'}.", "",
    ]
    return "\n".join(lines)


def _standin_tokenizer_note(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """Said wherever the client counted tokens with the echo server's stand-in tokenizer (an unofficial curve)."""
    if not any(m.get("standin_tokenizer") for m in manifests):
        return []
    note = next(str(_server(m).get("tokenizer")) for m in manifests if m.get("standin_tokenizer"))
    return [f"UNOFFICIAL: the client counted tokens with a {note}.", ""]


def software_disclosure(system: EndpointsSystem, manifests: Sequence[Mapping[str, Any]]) -> str:
    """``docs/software_disclosure.md``: the serving stack and the client, as recorded."""
    server = _server(manifests[0]) if manifests else {}
    client = manifests[0].get("client") if manifests and isinstance(manifests[0].get("client"), dict) else {}
    return "\n".join([
        "# Software disclosure", "",
        f"- Serving framework: {system.serving_framework}",
        f"- Model: {server.get('model') or LINK_TO_MODEL} ({system.model_precision}), weights not transformed",
        f"- Server endpoint: {server.get('url') or 'not recorded'}",
        f"- Reference client: inference_endpoint commit {client.get('commit') or 'not recorded'}",
        "- Warmup: disabled",
        "- Bundle authored by mlperf-dagster from the recorded point manifests and results.", "",
        *_standin_tokenizer_note(manifests),
    ])
