"""Device configs from config/examples/gpu-local.yaml: the random-weight model, the prepared dataset, results in P."""
import sys, copy, yaml
from pathlib import Path
src, work, plat, server_qps, inter_qps = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
base = yaml.safe_load(open(src))
base["storage"] = {"artifact_root": str(plat / "artifacts"), "duckdb_path": str(plat / "mlperf.duckdb"),
                   "report_dir": str(plat / "report")}
base["dataset"] = {"source": "local", "path": str(work / "dataset.json"), "max_samples": 2400}
base["benchmark"]["checkpoint"] = str(work / "model")
base["benchmark"]["scenarios"]["Server"]["target_qps"] = server_qps
base["nodes"] = [{"name": "gpu0", "runner": "local", "gpus": 1}]
out = work / "cfg"; out.mkdir(exist_ok=True)
yaml.safe_dump(base, open(out / "main.yaml", "w"), sort_keys=False)
inter = copy.deepcopy(base)
inter["benchmark"]["lg_model_name"] = "llama3_1-8b-interactive"
inter["benchmark"]["scenarios"] = {"Server": {"target_qps": inter_qps, "min_duration_ms": 60000, "min_query_count": 100}}
yaml.safe_dump(inter, open(out / "interactive.yaml", "w"), sort_keys=False)
ss = copy.deepcopy(base)
ss["dataset"]["max_samples"] = 64
ss["benchmark"]["scenarios"] = {"SingleStream": {"min_duration_ms": 10000, "min_query_count": 64, "target_latency_ms": 1000}}
yaml.safe_dump(ss, open(out / "singlestream.yaml", "w"), sort_keys=False)
print("configs:", *sorted(p.name for p in out.iterdir()))
