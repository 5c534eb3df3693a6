"""ROUGE the MLPerf way on 13,368 prediction/reference pairs: ours versus the reference procedure, same run.

Pairs: the 100 real BART-large summaries of CNN/DM test articles and their reference highlights
(../shared/testdata/cnn_dailymail), cycled to 13,368 pairs (the size of the MLPerf validation set). Texts repeat;
neither side caches anything across pairs.

Ours: ``mlperf_assets.accuracy.score_texts`` (sentence split in a process pool on every core, ROUGE in
rouge-score-rs). Reference: what MLCommons evaluation.py computes, in one process: ``nltk.sent_tokenize`` per text,
then ``rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)`` per pair, numpy mean
and round. Scores are asserted identical (the result dict, and the F-measures pair by pair).

    .venv/bin/python benchmarks/rouge_speed.py           # full: reference on all 13,368 pairs (~1.5 min here)
    .venv/bin/python benchmarks/rouge_speed.py --quick   # reference on 1,000 pairs; the ratio is per pair
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "cnn_dailymail"
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def load_pairs(n: int) -> tuple[list[str], list[str]]:
    rows = (DATA / "cnndm_test_mini_100.tsv").read_text(encoding="utf-8").split("\n")
    refs = [row.split("\t")[1] for row in rows if row]
    preds = (DATA / "cnndm_test_mini_100.bart_output.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return [preds[i % len(preds)] for i in range(n)], [refs[i % len(refs)] for i in range(n)]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the sentence-splitting pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def reference_procedure(predictions: list[str], references: list[str]):
    import nltk
    import numpy as np
    from rouge_score import rouge_scorer

    preds = ["\n".join(nltk.sent_tokenize(p.strip())) for p in predictions]
    refs = ["\n".join(nltk.sent_tokenize(r.strip())) for r in references]
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    scores = [scorer.score(r, p) for r, p in zip(refs, preds)]
    result = {k: f"{round(np.mean([s[k].fmeasure for s in scores]) * 100, 4)}" for k in METRICS}
    result["gen_len"] = int(np.sum([len(p) for p in preds]))
    result["gen_num"] = len(preds)
    return result, {m: [s[m].fmeasure for s in scores] for m in METRICS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=13368, help="pairs scored by ours (default 13368)")
    parser.add_argument("--quick", action="store_true", help="reference side on --reference-pairs pairs only")
    parser.add_argument("--reference-pairs", type=int, default=1000, help="pairs for the reference side with --quick")
    parser.add_argument("--workers", type=int, default=None, help="processes for ours (default: all cores)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"test data not found at {DATA}", file=sys.stderr)
        return 2

    from mlperf_assets import accuracy as acc
    from mlperf_assets.harness.sentences import ensure_punkt

    ensure_punkt()  # one-off cache write / NLTK data path; neither side pays it below
    predictions, references = load_pairs(args.pairs)
    workers = args.workers or acc.default_workers()
    print(f"pairs: {args.pairs} (100 real BART outputs/references, cycled); cores used by ours: {workers}; "
          f"ROUGE engine: {acc.rouge_engine()}; load average before: {os.getloadavg()[0]:.2f}")

    t0, c0 = time.perf_counter(), cpu_seconds()
    ours = acc.score_texts(predictions, references, workers=workers)
    ours_s, ours_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"ours:      {ours_s:8.2f} s  ({args.pairs / ours_s:9.0f} pairs/s, {ours_cpu:.2f} CPU-s)  {ours}")

    n_ref = min(args.reference_pairs, args.pairs) if args.quick else args.pairs
    t0, c0 = time.perf_counter(), cpu_seconds()
    ref_result, ref_f = reference_procedure(predictions[:n_ref], references[:n_ref])
    ref_s, ref_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"reference: {ref_s:8.2f} s  ({n_ref / ref_s:9.0f} pairs/s, {ref_cpu:.2f} CPU-s)  on {n_ref} pairs, "
          f"one process  {ref_result}")

    # identical scores: the F-measures pair by pair, and the printed dict on the same pairs
    processed = acc.postprocess_texts([*predictions[:n_ref], *references[:n_ref]], workers)
    pairs = acc.rouge_pairs(processed[n_ref:], processed[:n_ref], workers=workers)
    for m in METRICS:
        assert [prf[2] for prf in pairs[m]] == ref_f[m], f"{m}: per-pair F-measures differ"
    if n_ref == args.pairs:
        assert ours == ref_result, (ours, ref_result)
    else:
        assert acc.score_texts(predictions[:n_ref], references[:n_ref], workers=workers) == ref_result
    print(f"identical scores: yes (per-pair F-measures of {n_ref} pairs and the result dict)")

    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine slows both sides)")
    if n_ref == args.pairs:
        print(f"speed-up: {ref_s / ours_s:.1f}x wall clock, {ref_cpu / ours_cpu:.1f}x in CPU time "
              f"(same {args.pairs} pairs)")
    else:
        per_pair = (ref_s / n_ref) / (ours_s / args.pairs)
        per_pair_cpu = (ref_cpu / n_ref) / (ours_cpu / args.pairs)
        print(f"speed-up per pair (--quick: reference measured on {n_ref} pairs): {per_pair:.1f}x wall clock, "
              f"{per_pair_cpu:.1f}x in CPU time; "
              f"reference extrapolated to {args.pairs} pairs: {ref_s / n_ref * args.pairs:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
