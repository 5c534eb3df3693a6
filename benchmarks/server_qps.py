"""Server scenario with the replay backend at 1,000 and 10,000 QPS: is the result VALID, and how much p99 latency
does the harness add over a minimal SUT that answers in LoadGen's issue thread (same settings, same invocation)?

    .venv/bin/python benchmarks/server_qps.py [--quick] [--qps 1000 10000] [--duration-ms N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import run_harness, run_minimal_sut, write_synthetic_dataset

MODEL = "llama3_1-8b"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per run (default 20 s)")
    ap.add_argument("--qps", type=float, nargs="+", default=[1000.0, 10000.0])
    ap.add_argument("--duration-ms", type=int, default=None)
    ap.add_argument("--dataset-size", type=int, default=1000)
    a = ap.parse_args()
    duration = a.duration_ms or (3000 if a.quick else 20000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="server-qps-") as tmp:
        tmp = Path(tmp)
        ds = write_synthetic_dataset(tmp / "ds.json", a.dataset_size)
        for qps in a.qps:
            conf = (f"{MODEL}.Server.target_qps = {qps:g}\n{MODEL}.Server.min_duration = {duration}\n"
                    f"{MODEL}.Server.min_query_count = 100\n"
                    f"{MODEL}.Server.performance_sample_count_override = {a.dataset_size}\n")
            m = run_minimal_sut(tmp / f"minimal{qps:g}", conf, MODEL, "Server", a.dataset_size, a.dataset_size)
            h = run_harness(tmp / f"replay{qps:g}", "--scenario", "Server", "--mode", "performance", "--backend",
                            "replay", "--dataset", str(ds), "--target-qps", f"{qps:g}", "--min-duration-ms",
                            str(duration), "--min-query-count", "100", "--progress-interval-s", "1")
            rows.append((qps, m, h))
    print(f"\n{'target QPS':>10} | {'SUT':<16} | {'validity':<8} | {'completed/s':>11} | {'p99 latency':>12} | "
          f"{'p99 TTFT':>12} | queries")
    for qps, m, h in rows:
        for name, d in (("minimal SUT", m), ("harness+replay", h)):
            print(f"{qps:>10,.0f} | {name:<16} | {d['result_validity']:<8} | "
                  f"{d['result_completed_samples_per_sec']:>11,.1f} | "
                  f"{d['result_99.00_percentile_latency_ns'] / 1e6:>9.3f} ms | "
                  f"{d['result_first_token_99.00_percentile_latency_ns'] / 1e6:>9.3f} ms | {d['generated_query_count']}")
        added = (h["result_99.00_percentile_latency_ns"] - m["result_99.00_percentile_latency_ns"]) / 1e6
        ratio = h["result_99.00_percentile_latency_ns"] / max(1, m["result_99.00_percentile_latency_ns"])
        print(f"{'':>10}   p99 latency added by the harness: {added:+.3f} ms (x{ratio:.2f} of the minimal SUT's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
