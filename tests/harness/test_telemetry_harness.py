"""Telemetry in every harness run (harness/telemetry.py): the summary's arithmetic on hand-computed records, and real
LoadGen runs with the ``sim`` backend, without NVML (this machine) and with a stand-in ``pynvml`` module that
simulates two GPUs (the GPUs cannot exist here; the harness, LoadGen and the sampler are real)."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mlperf_assets.harness.telemetry import (
    NvmlReader,
    TelemetrySampler,
    power_integral,
    select_visible,
    summarize_telemetry,
)

from support.simruns import SIM_ENGINE, engine_flags

PROJECT = Path(__file__).resolve().parents[2]
ENGINE = SIM_ENGINE

# A stand-in for nvidia-ml-py's ``pynvml``: two H200-like GPUs with constant readings. Its energy counter runs at
# ``counter_w`` (deliberately not the reported ``power_w``), so a test can tell the counter from the power integral.
# FAKE_NVML (JSON): {"no_energy": [gpu, ...]} makes the energy counter NotSupported there; {"init_error": "..."}
# makes nvmlInit fail.
FAKE_PYNVML = textwrap.dedent("""\
    import json, os, time
    _CFG = json.loads(os.environ.get("FAKE_NVML") or "{}")
    _T0 = time.monotonic()
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    class NVMLError(Exception):
        pass
    class NVMLError_NotSupported(NVMLError):
        pass
    class NVMLError_DriverNotLoaded(NVMLError):
        pass
    GPUS = [
        dict(name="NVIDIA H200", uuid="GPU-0a0a0a0a-fake", power_w=300.0, counter_w=400.0, util=90, mem_util=40,
             used_mib=1000, total_mib=143771, limit_w=700.0, sm=1980, mem=3201, temp=61),
        dict(name="NVIDIA H200", uuid="GPU-1b1b1b1b-fake", power_w=500.0, counter_w=600.0, util=70, mem_util=20,
             used_mib=2000, total_mib=143771, limit_w=700.0, sm=1755, mem=3201, temp=55),
    ]
    class _Mem:
        def __init__(self, g):
            self.total, self.used = g["total_mib"] << 20, g["used_mib"] << 20
            self.free = self.total - self.used
    class _Util:
        def __init__(self, g):
            self.gpu, self.memory = g["util"], g["mem_util"]
    def nvmlInit():
        if _CFG.get("init_error"):
            raise NVMLError_DriverNotLoaded(_CFG["init_error"])
    def nvmlShutdown():
        pass
    def nvmlSystemGetDriverVersion():
        return "550.90.07"
    def nvmlDeviceGetCount():
        return len(GPUS)
    def nvmlDeviceGetHandleByIndex(i):
        return i
    def nvmlDeviceGetName(h):
        return GPUS[h]["name"]
    def nvmlDeviceGetUUID(h):
        return GPUS[h]["uuid"]
    def nvmlDeviceGetMemoryInfo(h):
        return _Mem(GPUS[h])
    def nvmlDeviceGetUtilizationRates(h):
        return _Util(GPUS[h])
    def nvmlDeviceGetPowerUsage(h):
        return int(GPUS[h]["power_w"] * 1000)
    def nvmlDeviceGetEnforcedPowerLimit(h):
        return int(GPUS[h]["limit_w"] * 1000)
    def nvmlDeviceGetTotalEnergyConsumption(h):
        if h in _CFG.get("no_energy", []):
            raise NVMLError_NotSupported("Not Supported")
        return int(5e6 + GPUS[h]["counter_w"] * (time.monotonic() - _T0) * 1000)
    def nvmlDeviceGetClockInfo(h, kind):
        return GPUS[h]["sm"] if kind == NVML_CLOCK_SM else GPUS[h]["mem"]
    def nvmlDeviceGetTemperature(h, sensor):
        if _CFG.get("no_temperature"):
            raise NVMLError_NotSupported("Not Supported")
        return GPUS[h]["temp"]
    """)


@pytest.fixture(scope="module")
def dataset(sim_dataset) -> Path:
    return sim_dataset


@pytest.fixture()
def fake_nvml_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fake_nvml"
    folder.mkdir()
    (folder / "pynvml.py").write_text(FAKE_PYNVML)
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def offline_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
            "--output-dir", str(out), "--target-qps", "1", "--min-duration-ms", "100", "--min-query-count", "1536",
            "--progress-interval-s", "0.2", "--telemetry-interval-s", "0.1",
            *engine_flags(ENGINE), *extra]


def harness(args: list[str], *, env: dict | None = None, code: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "mlperf_assets.harness", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=timeout,
                          env={**os.environ, **(env or {})})


def nvml_env(fake_dir: Path, **extra: str) -> dict:
    import os

    path = os.pathsep.join(p for p in (str(fake_dir), str(PROJECT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **extra}


def markers(recs: list[dict]) -> tuple[float, float]:
    start = [r["t_s"] for r in recs if r.get("event") == "test_start"]
    end = [r["t_s"] for r in recs if r.get("event") == "test_end"]
    assert len(start) == 1 and len(end) == 1, (start, end)
    return start[0], end[0]


# ------------------------------------------------------------------------------------------- the summary (pure)


def _gpu(t, gpu, *, energy=None, power=None, util=None, mem=None):
    return {"t_s": t, "source": "gpu", "gpu": gpu, "energy_j": energy, "power_w": power, "gpu_util_pct": util,
            "mem_used_mib": mem}


def test_summary_from_energy_counters_over_the_marked_window():
    records = [
        {"event": "header", "t_s": 0.0, "gpus": []},
        _gpu(0.0, 0, energy=1000.0, power=50.0, util=0.0, mem=500.0),
        _gpu(0.0, 1, energy=5000.0, power=50.0, util=0.0, mem=500.0),
        {"t_s": 0.5, "source": "engine", "kv_cache_usage_pct": 99.0},
        {"event": "test_start", "t_s": 1.0},
        _gpu(1.1, 0, energy=1100.0, power=100.0, util=90.0, mem=1000.0),
        _gpu(1.1, 1, energy=5200.0, power=400.0, util=70.0, mem=1500.0),
        {"t_s": 1.5, "source": "engine", "kv_cache_usage_pct": 40.0},
        _gpu(2.0, 0, energy=1500.0, power=300.0, util=80.0, mem=1200.0),
        _gpu(2.0, 1, energy=5600.0, power=600.0, util=60.0, mem=1800.0),
        {"t_s": 2.5, "source": "engine", "kv_cache_usage_pct": 60.0},
        {"event": "test_end", "t_s": 2.9},
        _gpu(3.0, 0, energy=1900.0, power=300.0, util=10.0, mem=9999.0),
        _gpu(3.0, 1, energy=6000.0, power=600.0, util=10.0, mem=9999.0),
        {"t_s": 3.5, "source": "engine", "kv_cache_usage_pct": 100.0},
        _gpu(4.0, 0, energy=2500.0, power=50.0),
        _gpu(4.0, 1, energy=7000.0, power=50.0),
    ]
    s = summarize_telemetry(records)
    # nearest samples: 1.1 (start 1.0) and 3.0 (end 2.9): (1900 - 1100) + (6000 - 5200)
    assert s["energy_j"] == pytest.approx(1600.0) and s["energy_source"] == "nvml_energy_counter"
    assert s["window_s"] == pytest.approx(1.9)
    assert s["mean_gpu_util_pct"] == pytest.approx(75.0)  # (90 + 70 + 80 + 60) / 4
    assert s["mean_power_w"] == pytest.approx(700.0)  # GPU 0: (100 + 300) / 2, GPU 1: (400 + 600) / 2
    assert s["peak_mem_used_mib"] == 1800.0  # 9999 lies after the window
    assert s["mean_kv_cache_usage_pct"] == pytest.approx(50.0) and s["peak_kv_cache_usage_pct"] == 60.0
    assert (s["gpu_rows"], s["engine_rows"]) == (4, 2)


def test_a_window_end_between_one_ticks_gpu_rows_weighs_every_gpu_alike():
    """Each GPU's row of a tick takes its own t_s, so test_end can fall between them: GPU 0's last row is inside
    the window, GPU 1's is not. The mean utilisation is the mean of each GPU's mean (as mean_power_w sums each
    GPU's mean), so GPU 0's extra row does not pull it (seen in CI: 80.213 for GPUs at 90 and 70)."""
    records = [{"event": "test_start", "t_s": 0.0}]
    for tick in range(3):
        records += [_gpu(tick + 0.1, 0, power=300.0, util=90.0), _gpu(tick + 0.2, 1, power=500.0, util=70.0)]
    records += [_gpu(3.1, 0, power=300.0, util=90.0), {"event": "test_end", "t_s": 3.15},
                _gpu(3.2, 1, power=500.0, util=70.0)]
    s = summarize_telemetry(records)
    assert s["gpu_rows"] == 7  # 4 of GPU 0, 3 of GPU 1
    assert s["mean_gpu_util_pct"] == pytest.approx(80.0) and s["mean_power_w"] == pytest.approx(800.0)


def test_power_integral_when_one_gpu_lacks_the_counter():
    records = [{"event": "test_start", "t_s": 0.5}, {"event": "test_end", "t_s": 2.5}]
    for t, p in zip((0.0, 1.0, 2.0, 3.0), (100.0, 200.0, 200.0, 100.0)):
        records.append(_gpu(t, 0, energy=1000.0 * t, power=p))
        records.append(_gpu(t, 1, energy=None, power=50.0))
    s = summarize_telemetry(records)
    # GPU 0: 150 at 0.5, 200 at 1 and 2, 150 at 2.5: 0.5*175 + 200 + 0.5*175 = 375; GPU 1: 50 W x 2 s = 100
    assert s["energy_source"] == "power_integral" and s["energy_j"] == pytest.approx(475.0)
    assert s["mean_power_w"] == pytest.approx(250.0)  # samples at 1 and 2: GPU 0 200, GPU 1 50
    assert power_integral([(0.0, 100.0), (1.0, 200.0), (2.0, 200.0), (3.0, 100.0)], 0.5, 2.5) == pytest.approx(375.0)
    # beyond the samples the nearest one is held: 100 W from 0 back to -1, then the curve up to 1 (150)
    assert power_integral([(0.0, 100.0), (2.0, 300.0)], -1.0, 1.0) == pytest.approx(100.0 + 150.0)


def test_missing_markers_use_every_record_and_a_counter_going_back_falls_back():
    records = [_gpu(10.0, 0, energy=900.0, power=100.0, util=50.0), _gpu(12.0, 0, energy=100.0, power=100.0),
               _gpu(14.0, 0, energy=300.0, power=300.0), {"t_s": 11.0, "source": "engine", "kv_cache_usage_pct": 20.0},
               {"t_s": 13.0, "source": "engine", "kv_cache_usage_pct": 30.0}]
    s = summarize_telemetry(records)
    assert s["window_s"] == pytest.approx(4.0)
    # the counter went backwards (a reset): 100 x 2 + (100 + 300) / 2 x 2 = 600 from power
    assert s["energy_source"] == "power_integral" and s["energy_j"] == pytest.approx(600.0)
    assert s["mean_gpu_util_pct"] == 50.0 and s["mean_kv_cache_usage_pct"] == pytest.approx(25.0)
    assert (s["gpu_rows"], s["engine_rows"]) == (3, 2)


def test_nothing_to_summarize_gives_none():
    s = summarize_telemetry([])
    assert s == {"window_s": None, "energy_j": None, "energy_source": None, "mean_gpu_util_pct": None,
                 "mean_power_w": None, "peak_mem_used_mib": None, "mean_kv_cache_usage_pct": None,
                 "peak_kv_cache_usage_pct": None, "gpu_rows": 0, "engine_rows": 0}
    engine_only = summarize_telemetry([{"event": "test_start", "t_s": 1.0}, {"event": "test_end", "t_s": 3.0},
                                       {"t_s": 2.0, "source": "engine", "kv_cache_usage_pct": 10.0}])
    assert engine_only["window_s"] == 2.0 and engine_only["energy_j"] is None and engine_only["mean_power_w"] is None
    assert engine_only["energy_source"] is None and engine_only["peak_kv_cache_usage_pct"] == 10.0
    # a GPU without any power reading: no energy and no total power (a partial sum would understate them)
    partial = summarize_telemetry([_gpu(0.0, 0, power=100.0), _gpu(1.0, 0, power=100.0), _gpu(0.0, 1),
                                   _gpu(1.0, 1)])
    assert partial["energy_j"] is None and partial["mean_power_w"] is None and partial["gpu_rows"] == 4


def test_cuda_visible_devices_selects_gpus_as_cuda_does():
    devices = [(0, "GPU-aaaa-0"), (1, "GPU-bbbb-1"), (2, "GPU-cccc-2")]
    assert select_visible(devices, None) == [0, 1, 2]
    assert select_visible(devices, "2,0") == [2, 0]
    assert select_visible(devices, "GPU-bbbb") == [1] and select_visible(devices, "cccc-2,0") == [2, 0]
    assert select_visible(devices, "1,7,0") == [1]  # CUDA stops at the first invalid entry
    assert select_visible(devices, "0,0") == [0] and select_visible(devices, "") == []
    assert select_visible(devices, "-1") == []


# ------------------------------------------------------------------------------------------- the sampler itself


def _load_fake(tmp_path: Path, monkeypatch, cfg: dict) -> object:
    monkeypatch.setenv("FAKE_NVML", json.dumps(cfg))
    path = tmp_path / "pynvml.py"
    path.write_text(FAKE_PYNVML)
    spec = importlib.util.spec_from_file_location("pynvml", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_nvml_init_failure_is_the_reason(tmp_path: Path, monkeypatch):
    _load_fake(tmp_path, monkeypatch, {"init_error": "Driver Not Loaded"})
    reader, reason = NvmlReader.open()
    assert reader is None and reason == "nvmlInit failed: Driver Not Loaded"


def test_not_supported_nulls_that_field_only(tmp_path: Path, monkeypatch, caplog):
    _load_fake(tmp_path, monkeypatch, {"no_temperature": True})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    reader, reason = NvmlReader.open()
    assert reason is None and [g["index"] for g in reader.gpus] == [0, 1]
    assert reader.gpus[1] == {"index": 1, "name": "NVIDIA H200", "uuid": "GPU-1b1b1b1b-fake", "mem_total_mib": 143771,
                              "power_limit_w": 700.0}
    row = reader.sample(lambda: 1.5)[1]
    assert row["temperature_c"] is None
    assert {k: row[k] for k in ("gpu", "gpu_util_pct", "mem_util_pct", "mem_used_mib", "power_w", "sm_clock_mhz",
                                "mem_clock_mhz")} == {"gpu": 1, "gpu_util_pct": 70.0, "mem_util_pct": 20.0,
                                                      "mem_used_mib": 2000.0, "power_w": 500.0, "sm_clock_mhz": 1755,
                                                      "mem_clock_mhz": 3201}
    assert row["energy_j"] > 5000.0  # 5e6 mJ at the fake's start
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # "not supported" is no failure


class _Stats:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls, self.n = fail, 0, 0

    def engine_stats(self):
        self.calls += 1
        if self.fail:
            raise RuntimeError("metrics endpoint gone")
        self.n += 1
        return {"kv_cache_usage_pct": 10.0 * self.n, "requests_running": 3, "generation_tokens_total": 100 * self.n}


def test_engine_stats_failure_is_logged_once_and_counters_become_rates(tmp_path: Path, caplog):
    failing = _Stats(fail=True)
    sampler = TelemetrySampler(tmp_path, failing, 0.01, nvml_open=lambda: (None, "test"))
    sampler.start()
    time.sleep(0.15)
    record = sampler.stop()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert failing.calls == 1 and len(warnings) == 1 and "engine_stats() failed" in warnings[0].getMessage()
    assert record["engine_rows"] == 0 and record["error"] is None

    ticks = iter([0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])  # a clock the test controls: t0, then one per engine row
    ok = _Stats()
    sampler = TelemetrySampler(tmp_path, ok, 0.01, clock=lambda: next(ticks), nvml_open=lambda: (None, "test"))
    sampler._t0 = 0.0
    first, second, third = (sampler._engine_row() for _ in range(3))
    assert first["generation_tokens_per_s"] is None  # no earlier sample
    assert second["generation_tokens_per_s"] == 100.0  # 100 tokens in 1 s
    assert third["generation_tokens_per_s"] == 50.0 and third["kv_cache_usage_pct"] == 30.0  # 100 tokens in 2 s
    assert "prompt_tokens_per_s" not in third and sampler.kv_cache_usage_pct == 30.0


# --------------------------------------------------------------------------------------------- real LoadGen runs


def test_run_without_nvml_records_engine_rows_and_markers(dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    r = harness(offline_args(dataset, out))
    assert r.returncode == 0, r.stderr[-3000:]
    recs = rows(out / "telemetry.jsonl")
    header = recs[0]
    assert header["event"] == "header" and header["nvml"] is False and header["gpus"] == []
    assert "pynvml" in header["reason"] and header["interval_s"] == 0.1
    assert not [x for x in recs if x.get("source") == "gpu"]
    start, end = markers(recs)
    engine = [x for x in recs if x.get("source") == "engine"]
    inside = [x for x in engine if start <= x["t_s"] <= end]
    assert len(inside) >= 5, engine
    # the sim's batch (512 seqs) fills, the rest waits (1536+ queries at once), and the KV cache is in use
    assert max(x["requests_running"] for x in inside) == 512 and max(x["requests_waiting"] for x in inside) > 0
    assert 0 < max(x["kv_cache_usage_pct"] for x in inside) <= 100
    assert any((x.get("generation_tokens_per_s") or 0) > 1000 for x in inside)
    assert [x["t_s"] for x in recs] == sorted(x["t_s"] for x in recs)  # one clock, in order
    log = (out / "harness.log").read_text()
    assert log.count("no GPU telemetry") == 1 and "NVML unavailable" in log
    m = json.loads((out / "run_manifest.json").read_text())
    t = m["telemetry"]
    assert t["enabled"] is True and t["nvml"] is False and t["file"] == "telemetry.jsonl" and t["error"] is None
    assert t["window_s"] == pytest.approx(end - start, abs=0.002)
    assert t["energy_j"] is None and t["energy_source"] is None and t["engine_rows"] == len(inside)
    assert t["peak_kv_cache_usage_pct"] == max(x["kv_cache_usage_pct"] for x in inside)
    assert "telemetry: no GPU, " in log and "peak KV" in log
    progress = rows(out / "progress.jsonl")
    assert all("kv_cache_usage_pct" in p for p in progress[1:]), progress
    assert any(p["kv_cache_usage_pct"] > 0 for p in progress)


def test_run_with_two_gpus_uses_the_energy_counters(dataset: Path, tmp_path: Path, fake_nvml_dir: Path):
    out = tmp_path / "run"
    r = harness(offline_args(dataset, out), env=nvml_env(fake_nvml_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    recs = rows(out / "telemetry.jsonl")
    header = recs[0]
    assert header["nvml"] is True and header["reason"] is None and header["driver"] == "550.90.07"
    assert [(g["index"], g["uuid"], g["mem_total_mib"], g["power_limit_w"]) for g in header["gpus"]] == [
        (0, "GPU-0a0a0a0a-fake", 143771, 700.0), (1, "GPU-1b1b1b1b-fake", 143771, 700.0)]
    gpu = [x for x in recs if x.get("source") == "gpu"]
    by = {g: [x for x in gpu if x["gpu"] == g] for g in (0, 1)}
    assert len(by[0]) == len(by[1]) >= 10
    assert {(x["power_w"], x["gpu_util_pct"], x["mem_used_mib"], x["temperature_c"]) for x in by[1]} == {
        (500.0, 70.0, 2000.0, 55)}
    start, end = markers(recs)
    t = json.loads((out / "run_manifest.json").read_text())["telemetry"]
    # the fake's counters run at 400 + 600 W: 1000 J per second of window (the 300 + 500 W readings would give 800)
    assert t["energy_source"] == "nvml_energy_counter"
    assert t["energy_j"] == pytest.approx(1000.0 * (end - start), abs=100.0)
    assert t["mean_power_w"] == pytest.approx(800.0) and t["mean_gpu_util_pct"] == pytest.approx(80.0)
    assert t["peak_mem_used_mib"] == 2000.0 and [g["index"] for g in t["gpus"]] == [0, 1]
    assert t["gpu_rows"] == len([x for x in gpu if start <= x["t_s"] <= end])
    log = (out / "harness.log").read_text()
    assert "no GPU telemetry" not in log
    assert f"telemetry: 2 GPUs, {t['window_s']:.1f} s window, {t['energy_j'] / 1000:.1f} kJ, mean util 80.0%" in log


def test_cuda_visible_devices_restricts_the_gpus(dataset: Path, tmp_path: Path, fake_nvml_dir: Path):
    out = tmp_path / "run"
    r = harness(offline_args(dataset, out), env=nvml_env(fake_nvml_dir, CUDA_VISIBLE_DEVICES="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    recs = rows(out / "telemetry.jsonl")
    assert [g["index"] for g in recs[0]["gpus"]] == [1]
    assert {x["gpu"] for x in recs if x.get("source") == "gpu"} == {1}
    start, end = markers(recs)
    t = json.loads((out / "run_manifest.json").read_text())["telemetry"]
    assert t["energy_j"] == pytest.approx(600.0 * (end - start), abs=60.0)  # GPU 1's counter alone
    assert t["mean_power_w"] == pytest.approx(500.0) and t["peak_mem_used_mib"] == 2000.0


def test_energy_not_supported_falls_back_to_the_power_integral(dataset: Path, tmp_path: Path, fake_nvml_dir: Path):
    out = tmp_path / "run"
    r = harness(offline_args(dataset, out), env=nvml_env(fake_nvml_dir, FAKE_NVML=json.dumps({"no_energy": [1]})))
    assert r.returncode == 0, r.stderr[-3000:]
    recs = rows(out / "telemetry.jsonl")
    gpu = [x for x in recs if x.get("source") == "gpu"]
    assert {x["energy_j"] is None for x in gpu if x["gpu"] == 1} == {True}
    assert {x["energy_j"] is None for x in gpu if x["gpu"] == 0} == {False}
    assert {x["power_w"] for x in gpu if x["gpu"] == 1} == {500.0}  # the other fields stay
    start, end = markers(recs)
    t = json.loads((out / "run_manifest.json").read_text())["telemetry"]
    assert t["energy_source"] == "power_integral"
    assert t["energy_j"] == pytest.approx(800.0 * (end - start), rel=1e-3)  # 300 + 500 W, constant
    assert "reading energy failed" not in (out / "harness.log").read_text()  # "not supported" is not a failure


FULL_TELEMETRY_DISK = textwrap.dedent("""\
    import builtins, errno, sys
    import mlperf_assets.harness.telemetry as telemetry

    class Full:
        # telemetry.jsonl on a disk that fills after 4 lines
        def __init__(self, fh):
            self.fh, self.left = fh, 4
        def write(self, text):
            if self.left == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= 1
            return self.fh.write(text)
        def close(self):
            self.fh.close()

    def opener(path, *args, **kwargs):
        fh = builtins.open(path, *args, **kwargs)
        return Full(fh) if str(path).endswith("telemetry.jsonl") else fh

    telemetry.open = opener
    from mlperf_assets.harness.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def test_telemetry_write_failure_does_not_fail_the_run(dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    r = harness(offline_args(dataset, out), code=FULL_TELEMETRY_DISK)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.strip() == "" and "Traceback" not in r.stderr
    assert "Result is : VALID" in (out / "mlperf_log_summary.txt").read_text()
    assert len((out / "telemetry.jsonl").read_text().splitlines()) == 4  # what fitted, complete lines
    log = (out / "harness.log").read_text()
    warnings = [line for line in log.splitlines() if " WARNING " in line and "telemetry" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith(f"telemetry stopped (the run goes on): no space left on device writing "
                                f"{out.resolve()}/telemetry.jsonl")
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["exit_status"] == "completed"
    t = m["telemetry"]
    assert t["error"].startswith("no space left on device") and t["file"] is None and t["energy_j"] is None
    progress = rows(out / "progress.jsonl")
    assert progress[-1]["final"] is True  # progress goes on (kv from the sampler's last reading, if any)


def test_interval_zero_turns_telemetry_off(dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = offline_args(dataset, out)
    args[args.index("--telemetry-interval-s") + 1] = "0"
    r = harness(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "telemetry.jsonl").exists()
    assert json.loads((out / "run_manifest.json").read_text())["telemetry"] == {"enabled": False}
    assert "telemetry" not in (out / "harness.log").read_text()
    # progress.jsonl still shows the engine's KV cache (read from the backend directly)
    assert any(p.get("kv_cache_usage_pct", 0) > 0 for p in rows(out / "progress.jsonl"))


def test_interrupted_run_leaves_a_complete_telemetry_file(dataset: Path, tmp_path: Path, fake_nvml_dir: Path):
    import os

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode", "performance",
         "--backend", "sim", "--dataset", str(dataset), "--output-dir", str(out), "--target-qps", "50",
         "--min-duration-ms", "600000", "--telemetry-interval-s", "0.05", "--progress-interval-s", "0.1"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **nvml_env(fake_nvml_dir)})
    path = out / "telemetry.jsonl"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if path.exists() and '"test_start"' in path.read_text() and (out / "progress.jsonl").exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    text = path.read_text()
    assert text.endswith("\n")
    recs = [json.loads(line) for line in text.splitlines()]  # every line complete
    assert [x["event"] for x in recs if "event" in x] == ["header", "test_start"]  # LoadGen never finished
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["exit_status"] == "interrupted"
    t = m["telemetry"]
    assert t["file"] == "telemetry.jsonl" and t["gpu_rows"] >= 2 and t["engine_rows"] >= 2
    start = next(x["t_s"] for x in recs if x.get("event") == "test_start")
    assert t["window_s"] == pytest.approx(recs[-1]["t_s"] - start, abs=0.002)  # up to the last sample


def test_progress_line_shows_kv_cache():
    from mlperf_assets.harness.run_folder import RunProgress, progress_from_texts

    line = json.dumps({"elapsed_s": 12.0, "completed": 120, "total": 400, "tokens_per_s": 5123.0,
                       "kv_cache_usage_pct": 43.2})
    p = progress_from_texts(line + "\n", None, alive=True)
    assert p.kv_cache_usage_pct == 43.2
    assert p.describe() == "running 120/400 samples (30%), 5,123 tokens/s, 12.0 s, KV cache 43%"
    assert RunProgress(completed=3).describe() == "running 3 samples, 0 tokens/s, 0.0 s"
    assert progress_from_texts('{"completed": 1}\n', None, alive=True).kv_cache_usage_pct is None


def test_sampler_thread_stops_and_closes(tmp_path: Path):
    sampler = TelemetrySampler(tmp_path, _Stats(), 0.02, nvml_open=lambda: (None, "no NVML here"))
    sampler.start()
    sampler.mark("test_start")
    time.sleep(0.1)
    sampler.mark("test_end")
    record = sampler.stop()
    assert not [t for t in threading.enumerate() if t.name == "telemetry"]
    recs = rows(tmp_path / "telemetry.jsonl")
    assert recs[0]["reason"] == "no NVML here" and recs[-1]["source"] == "engine"
    assert [x["event"] for x in recs if "event" in x] == ["header", "test_start", "test_end"]
    assert record["engine_rows"] >= 3 and record["peak_kv_cache_usage_pct"] >= 30.0
    assert sampler.stop() is record  # idempotent
    sampler.mark("test_end")  # after stop: nothing written
    assert len(rows(tmp_path / "telemetry.jsonl")) == len(recs)


class _Counters:
    """What ProgressWriter reads of the SUT."""

    total, records, scenario = 400, [], "Server"

    def counters(self):
        return 120, 100, 5000


def test_progress_writer_line_and_bar_show_kv(tmp_path: Path, capsys):
    from mlperf_assets.harness.progress import ProgressWriter

    kv = [None]
    writer = ProgressWriter(tmp_path, _Counters(), t0_ns=time.monotonic_ns(), show_bar=True, label="Server",
                            kv_source=lambda: kv[0])
    writer.write(final=False)
    kv[0] = 43.21
    writer.write(final=False)
    writer.stop()
    lines = rows(tmp_path / "progress.jsonl")
    assert "kv_cache_usage_pct" not in lines[0]  # not reported yet: absent
    assert lines[1]["kv_cache_usage_pct"] == 43.2 and lines[2]["kv_cache_usage_pct"] == 43.2
    assert "kv=43%" in capsys.readouterr().err
