"""Harness ceiling: the replay backend, Offline, against a minimal LoadGen SUT that completes samples instantly.

Both run the same LoadGen settings (one Offline query of the same sample count, 128 int32 tokens per sample) in
the same invocation, each in its own process. Prints samples/s of both and the ratio (target >= 0.5).

    .venv/bin/python benchmarks/harness_ceiling.py [--quick] [--samples N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import run_harness, run_minimal_sut, write_synthetic_dataset

MODEL = "llama3_1-8b"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k samples, one repetition (default 500k, three)")
    ap.add_argument("--samples", type=int, default=None, help="samples in the Offline query")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--dataset-size", type=int, default=1000, help="QSL size (distinct samples)")
    a = ap.parse_args()
    samples = a.samples or (100_000 if a.quick else 500_000)
    repeat = a.repeat or (1 if a.quick else 3)
    with tempfile.TemporaryDirectory(prefix="harness-ceiling-") as tmp:
        tmp = Path(tmp)
        ds = write_synthetic_dataset(tmp / "ds.json", a.dataset_size)
        conf = (f"{MODEL}.Offline.min_query_count = {samples}\n{MODEL}.Offline.min_duration = 0\n"
                f"{MODEL}.Offline.performance_sample_count_override = {a.dataset_size}\n")
        ours, bound = [], []
        for r in range(repeat):
            m = run_minimal_sut(tmp / f"minimal{r}", conf, MODEL, "Offline", a.dataset_size, a.dataset_size)
            h = run_harness(tmp / f"replay{r}", "--scenario", "Offline", "--mode", "performance", "--backend", "replay",
                            "--dataset", str(ds), "--min-query-count", str(samples), "--min-duration-ms", "0")
            assert h["effective_samples_per_query"] == m["effective_samples_per_query"], "different sample counts"
            bound.append(m["result_samples_per_second"])
            ours.append(h["result_samples_per_second"])
            print(f"run {r}: samples/query {h['effective_samples_per_query']}: minimal SUT "
                  f"{m['result_samples_per_second']:,.0f} samples/s, harness+replay "
                  f"{h['result_samples_per_second']:,.0f} samples/s")
        b, o = statistics.median(bound), statistics.median(ours)
        print(f"\nminimal SUT (bound): {b:,.0f} samples/s")
        print(f"harness + replay:    {o:,.0f} samples/s  ({o * 128:,.0f} tokens/s at 128 tokens/sample)")
        print(f"ratio: {o / b:.2f}  (target >= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
