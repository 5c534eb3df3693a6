"""Results stores for the report tests: real submission logs, plus real harness runs (LoadGen, replay/extractive).

Built once per pytest session under the session's temporary folder and shared by test_charts and test_dashboard.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

# (run id, node, scenario, backend, settings flags): small counts and durations, as in test_harness_run
HARNESS_RUNS = [
    ("night-1", "node-a", "Server", "replay", ["--min-query-count", "40", "--target-qps", "150"]),
    ("night-2", "node-a", "Server", "replay", ["--min-query-count", "40", "--target-qps", "150"]),
    ("night-1", "node-b", "Offline", "extractive", ["--min-query-count", "60", "--target-qps", "100"]),
]


def submission_store(base: Path, mlperf_logs_dir: Path) -> Path:
    """A store filled from the MLPerf submission logs alone (no per-sample timings, no progress)."""
    from mlperf_assets import store

    db = base / "submissions.duckdb"
    marker = base / "submissions.duckdb.done"
    if not marker.exists():
        db.unlink(missing_ok=True)
        store.ingest_path(db, mlperf_logs_dir)
        marker.write_text("ok\n")
    return db


def harness_runs(base: Path, stories_dir: Path) -> dict[tuple[str, str], Path]:
    """Run the harness (real LoadGen) for HARNESS_RUNS; returns (run id, node) -> run folder."""
    from mlperf_assets.harness.dataset import prepare_dataset

    runs_dir = base / "harness-runs"
    folders = {(rid, node): runs_dir / f"{node}-{scenario}-{rid}" for rid, node, scenario, _, _ in HARNESS_RUNS}
    if all((f / "run_manifest.json").is_file() for f in folders.values()) and (runs_dir / "done").exists():
        return folders
    dataset = prepare_dataset("stories", stories_dir, base / "stories.json", tokenizer="byte")
    for rid, node, scenario, backend, flags in HARNESS_RUNS:
        out = folders[(rid, node)]
        cmd = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", scenario, "--mode", "performance",
               "--backend", backend, "--dataset", str(dataset), "--output-dir", str(out), "--min-duration-ms",
               "300", "--run-id", f"{node}-{scenario}-{rid}", "--node", node, "--progress-interval-s", "0.05",
               *flags]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"harness run failed ({' '.join(cmd)}):\n{result.stderr[-2000:]}")
    (runs_dir / "done").write_text("ok\n")
    return folders


def full_store(base: Path, mlperf_logs_dir: Path, stories_dir: Path) -> Path:
    """Submission logs plus the harness runs (with per-sample timings and progress)."""
    from mlperf_assets import store

    db = base / "full.duckdb"
    marker = base / "full.duckdb.done"
    if not marker.exists():
        db.unlink(missing_ok=True)
        folders = harness_runs(base, stories_dir)
        store.ingest_path(db, mlperf_logs_dir)
        for folder in folders.values():
            store.ingest_path(db, folder)
        marker.write_text("ok\n")
    return db


def shared_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "report-stores"
    base.mkdir(exist_ok=True)
    return base


# ------------------------------------------------------------------------------- a results tree as MLCommons publishes

# systems/<system>.json of each system of the shared logs, written by the tests (the log files' figures stay the real
# ones; these describe the hardware as the folder names and the public results say). A str is written as it is (a
# malformed file); a system missing here gets no systems JSON at all.
SYSTEMS: dict[tuple[str, str, str], dict | str] = {
    ("inference_results_v4.1", "NVIDIA", "DGX-H100_H100-SXM-80GBx8_TRT"): {
        "accelerator_model_name": "NVIDIA H100-SXM-80GB", "accelerators_per_node": "8", "number_of_nodes": "1",
        "host_processor_model_name": "Intel(R) Xeon(R) Platinum 8480C", "framework": "TensorRT 10.2, CUDA 12.4"},
    ("inference_results_v4.1", "Intel", "1-node-2S-EMR-PyTorch"): {
        "accelerator_model_name": "N/A", "accelerators_per_node": "0", "number_of_nodes": "1",
        "host_processor_model_name": "INTEL(R) XEON(R) PLATINUM 8592+", "framework": "PyTorch"},
    ("inference_results_v4.1", "NVIDIA", "Orin_TRT"): {
        "accelerator_model_name": "NVIDIA Jetson AGX Orin 64G", "accelerators_per_node": 1, "number_of_nodes": 1,
        "host_processor_model_name": "12-core ARM Cortex-A78AE", "framework": "TensorRT 10.1, CUDA 12.2"},
    ("inference_results_v4.1", "ASUSTeK", "ESC8000A_E12_H100x8_TRT"): {
        "accelerator_model_name": "NVIDIA H100-PCIe-80GB", "accelerators_per_node": "8", "number_of_nodes": "1",
        "host_processor_model_name": "AMD EPYC 9654", "framework": "TensorRT 10.1, CUDA 12.4"},
    ("inference_results_v5.1", "Cisco", "C885_H200x8_TRT"): {
        "accelerator_model_name": "NVIDIA H200-SXM-141GB", "accelerators_per_node": "8", "number_of_nodes": "1",
        "host_processor_model_name": "AMD EPYC 9575F", "framework": "TensorRT 10.11, CUDA 12.9",
        "division": "closed", "submitter": "Cisco", "system_name": "Cisco UCS C885A M8 (8x H200-SXM-141GB, TensorRT)"},
    ("inference_results_v5.1", "Dell", "XE9680L_B200_SXM_180GBx8_TRT"): {
        "accelerator_model_name": "NVIDIA B200-SXM-180GB", "accelerators_per_node": 8, "number_of_nodes": 1,
        "host_processor_model_name": "Intel(R) Xeon(R) Platinum 8570", "framework": "TensorRT 10.11, CUDA 12.9"},
    ("inference_results_v5.1", "Intel", "1-node-1x-BMG-Pro-B60-Dual"): {
        "accelerator_model_name": "Intel Arc Pro B60 Dual", "accelerators_per_node": "1", "number_of_nodes": "1",
        "host_processor_model_name": "Intel(R) Xeon(R) w7-2475X", "framework": "vLLM"},
    ("inference_results_v5.1", "Intel", "1-node-2S-GNR_128C"): {
        "accelerator_model_name": "N/A", "accelerators_per_node": "0", "number_of_nodes": "1",
        "host_processor_model_name": "Intel(R) Xeon(R) 6980P", "framework": "PyTorch"},
    ("inference_results_v5.1", "Lenovo", "SR680a_V3_B200SXMx8_TRT"): {
        "accelerator_model_name": "NVIDIA B200-SXM-180GB", "accelerators_per_node": "8", "number_of_nodes": "1",
        "host_processor_model_name": "Intel(R) Xeon(R) Platinum 8570", "framework": "TensorRT 10.11, CUDA 12.9"},
    # malformed: cut off in the middle (the run must still ingest, its accelerator unknown)
    ("inference_results_v5.1", "AMD", "8xMI300X_2xEPYC_9575F"): '{"accelerator_model_name": "AMD Instinct MI300X", '
                                                               '"accelerators_per_node": ',
    # open/GATEOverflow/.../RTX4090x2...: no systems JSON at all
    ("inference_results_v6.0", "AMD", "8xMI355X_2xEPYC_9575F"): {
        "accelerator_model_name": "AMD Instinct MI355X", "accelerators_per_node": "8", "number_of_nodes": "1",
        "host_processor_model_name": "AMD EPYC 9575F", "framework": "vLLM 0.10, ROCm 7.0"},
}
# `nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv` of a one-H200 node
NVIDIA_SMI_ONE_H200 = ("index, name, uuid, memory.total [MiB], driver_version\n"
                       "0, NVIDIA H200, GPU-6d4c9f0e-1b1a-4f7e-9c59-0b6f6f2d8a11, 143771 MiB, 570.133.20\n")


def manifest_entries(mlperf_logs_dir: Path) -> list[dict]:
    import json

    return json.loads((mlperf_logs_dir / "MANIFEST.json").read_text())


def published_tree(base: Path, mlperf_logs_dir: Path) -> Path:
    """The shared logs laid out as MLCommons publishes them: `<repo>/<division>/<submitter>/results/<system>/
    <benchmark>/<scenario>/...` (and `compliance/`), every file a link to the real one (MANIFEST.json says where it
    came from), plus `<division>/<submitter>/systems/<system>.json` from SYSTEMS."""
    import json

    root = base / "published-tree"
    marker = base / "published-tree.done"
    if marker.exists():
        return root
    for entry in manifest_entries(mlperf_logs_dir):
        repo = entry["repo"].split("/")[1]
        division, submitter, _, system = entry["results_dir"].split("/")[:4]
        for f in entry["files"]:
            target = root / repo / f["src"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(mlperf_logs_dir / entry["folder"] / f["rel"])
        content = SYSTEMS.get((repo, submitter, system))
        if content is not None:
            path = root / repo / division / submitter / "systems" / f"{system}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    marker.write_text("ok\n")
    return root


def your_runs(base: Path, stories_dir: Path) -> dict[tuple[str, str], Path]:
    """Copies of the harness runs (real LoadGen) as they would come from GPU nodes: node-b's Offline run with the
    GPU list nvidia-smi prints on a one-H200 node in its run_manifest.json (the runs ran on this CPU-only machine,
    so the list is written here); node-a's Server runs keep the empty GPU list they recorded."""
    import json
    import shutil

    from mlperf_assets.harness.manifest import parse_nvidia_smi_csv

    out = base / "your-runs"
    folders = {key: out / folder.name for key, folder in harness_runs(base, stories_dir).items()}
    if (out / "done").exists():
        return folders
    for key, folder in harness_runs(base, stories_dir).items():
        copy = folders[key]
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        if key[1] == "node-b":
            manifest = json.loads((copy / "run_manifest.json").read_text())
            manifest["gpus"] = parse_nvidia_smi_csv(NVIDIA_SMI_ONE_H200)
            (copy / "run_manifest.json").write_text(json.dumps(manifest, indent=2))
    (out / "done").write_text("ok\n")
    return folders


def published_store(base: Path, mlperf_logs_dir: Path, stories_dir: Path | None = None) -> Path:
    """The published results tree, plus (with `stories_dir`) your harness runs."""
    from mlperf_assets import store

    name = "published-and-yours" if stories_dir is not None else "published"
    db = base / f"{name}.duckdb"
    marker = base / f"{name}.duckdb.done"
    if not marker.exists():
        db.unlink(missing_ok=True)
        store.ingest_path(db, published_tree(base, mlperf_logs_dir))
        if stories_dir is not None:
            for folder in your_runs(base, stories_dir).values():
                store.ingest_path(db, folder)
        marker.write_text("ok\n")
    return db


# ------------------------------------------------------------------------------- GPU telemetry (issue 12)

# What the harness's sampler writes (telemetry.jsonl) on a node with two H200s: 10 ticks 1 s apart at t_s 0.5 ... 9.5,
# LoadGen's timed window from t_s 1.0 to 9.0. Every value is a simple function of the tick so the tests can state
# what the store and the charts must hold.
TELEMETRY_TICKS = 10
TELEMETRY_TEST_START_S = 1.0
TELEMETRY_TEST_END_S = 9.0
# The summary run_manifest.json carries (the harness computes it; the store copies it).
GPU_TELEMETRY_SUMMARY = {
    "nvml": True, "reason": None, "interval_s": 1.0, "file": "telemetry.jsonl", "window_s": 8.0,
    "energy_j": 9876.5, "energy_source": "nvml_energy_counter", "mean_gpu_util_pct": 71.5, "mean_power_w": 612.5,
    "peak_mem_used_mib": 10001.0, "mean_kv_cache_usage_pct": 45.0, "peak_kv_cache_usage_pct": 80.0,
    "gpu_rows": 2 * TELEMETRY_TICKS, "engine_rows": TELEMETRY_TICKS,
}
H200 = {"name": "NVIDIA H200", "mem_total_mib": 143771, "power_limit_w": 700.0}


def _iso(t_s: float) -> str:
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 11, 30, 2, 0, 0, tzinfo=timezone.utc)
    return (start + timedelta(seconds=t_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gpu_telemetry_lines(gpus: int = 2) -> list[dict]:
    """The records of a telemetry.jsonl of `gpus` GPUs (header, markers, GPU rows, engine rows), in file order."""
    lines: list[dict] = [{
        "event": "header", "t_s": 0.0, "time": _iso(0), "interval_s": 1.0, "nvml": True, "reason": None,
        "driver": "570.133.20",
        "gpus": [{"index": g, **H200, "uuid": f"GPU-00000000-0000-0000-0000-00000000000{g}"} for g in range(gpus)],
    }]
    energy = [1_000_000.0 + 100_000.0 * g for g in range(gpus)]
    for k in range(TELEMETRY_TICKS):
        t = 0.5 + k
        if t > TELEMETRY_TEST_START_S and not any(r.get("event") == "test_start" for r in lines):
            lines.append({"event": "test_start", "t_s": TELEMETRY_TEST_START_S, "time": _iso(TELEMETRY_TEST_START_S)})
        if t > TELEMETRY_TEST_END_S and not any(r.get("event") == "test_end" for r in lines):
            lines.append({"event": "test_end", "t_s": TELEMETRY_TEST_END_S, "time": _iso(TELEMETRY_TEST_END_S)})
        for g in range(gpus):
            power = 300.0 + 10.0 * k + 50.0 * g
            energy[g] += power
            lines.append({"t_s": t, "time": _iso(t), "source": "gpu", "gpu": g, "gpu_util_pct": 50.0 + 5 * k + g,
                          "mem_util_pct": 40.0 + k, "mem_used_mib": 1000.0 * (k + 1) + g, "power_w": power,
                          "energy_j": energy[g], "sm_clock_mhz": 1980, "mem_clock_mhz": 3201,
                          "temperature_c": 60 + k})
        lines.append({"t_s": t + 0.002, "time": _iso(t), "source": "engine", "kv_cache_usage_pct": 10.0 * k,
                      "requests_running": 100 + k, "requests_waiting": 20 - k, "prompt_tokens_per_s": 5000.0,
                      "generation_tokens_per_s": 1000.0 * k})
    return lines


def write_telemetry(folder: Path, lines: list[dict], summary: dict | None, *, tail: str = "") -> None:
    """telemetry.jsonl of `lines` (plus `tail`, written as it is: e.g. a half-written last line) and the manifest's
    `telemetry` summary (None: the key is removed, as in runs from before telemetry)."""
    import json

    (folder / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + tail)
    manifest = json.loads((folder / "run_manifest.json").read_text())
    manifest.pop("telemetry", None)
    if summary is not None:
        manifest["telemetry"] = summary
    (folder / "run_manifest.json").write_text(json.dumps(manifest, indent=2))


def add_gpu_telemetry(folder: Path, gpus: int = 2) -> None:
    write_telemetry(folder, gpu_telemetry_lines(gpus), {**GPU_TELEMETRY_SUMMARY, "gpus": gpu_telemetry_lines(gpus)[0]["gpus"]})


CPU_REASON = "NVML unavailable: NVML Shared Library Not Found (no NVIDIA driver on this node)"


def add_cpu_telemetry(folder: Path) -> None:
    """What the sampler writes on a CPU node: a header saying why there is no GPU telemetry, and the markers."""
    lines = [{"event": "header", "t_s": 0.0, "time": _iso(0), "interval_s": 1.0, "nvml": False, "reason": CPU_REASON,
              "driver": None, "gpus": []},
             {"event": "test_start", "t_s": 0.2, "time": _iso(0.2)}, {"event": "test_end", "t_s": 1.4, "time": _iso(1.4)}]
    write_telemetry(folder, lines, {"nvml": False, "reason": CPU_REASON, "interval_s": 1.0, "gpus": [],
                                    "file": "telemetry.jsonl", "window_s": 1.2, "energy_j": None,
                                    "energy_source": None, "mean_gpu_util_pct": None, "mean_power_w": None,
                                    "peak_mem_used_mib": None, "mean_kv_cache_usage_pct": None,
                                    "peak_kv_cache_usage_pct": None, "gpu_rows": 0, "engine_rows": 0})
