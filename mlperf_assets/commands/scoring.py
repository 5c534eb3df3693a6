"""``mlperf-dagster accuracy`` and ``mlperf-dagster rouge``: the MLPerf accuracy evaluation from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import ACCURACY_TARGETS

ACCURACY_EPILOG = """\
What it does (exactly the MLCommons reference evaluation.py): keep the first log entry of each qsl_idx, decode the
hex token ids (int32 for llama3.1-8b, int64 for gpt-j), detokenize skipping special tokens, strip and split both
prediction and reference into sentences with NLTK's English punkt (joined by newlines), score ROUGE-1/2/L/Lsum with
stemming, and print round(mean * 100, 4) per metric plus gen_len (characters) and gen_num.

Targets (99% of the reference scores; gen_len within 0.9-1.1x for llama, >= 0.9x for gpt-j) are checked per metric;
the exit code is 0 when all pass, 1 when a target is missed, 2 for bad input.

Examples:
  mlperf-dagster accuracy --log runs/r1/mlperf_log_accuracy.json --dataset data/cnn_prepared.json
  mlperf-dagster accuracy --log mlperf_log_accuracy.json --dataset cnn_eval.json \\
      --benchmark llama3.1-8b --tokenizer meta-llama/Llama-3.1-8B-Instruct --out accuracy/accuracy.txt

--reference-evaluation PATH (a checkout of mlcommons/inference) also runs that checkout's
language/<benchmark>/evaluation.py on the same log, dataset, tokenizer and dtype, and prints its figures beside ours
with the difference (it needs what it imports: evaluate, nltk, rouge-score, torch, transformers, pandas; evaluate
loads its ROUGE metric from the Hugging Face Hub unless cached). The exit code stays ours.

--out writes accuracy.txt in the format the MLCommons submission checker reads, with the hash= line of the log.
A submission's own accuracy/mlperf_log_accuracy.json is truncated (first and last 4 KiB) and cannot be scored.
"""

ROUGE_EPILOG = """\
Both files hold one text per line, in the same order. Each pair is scored exactly as the MLPerf evaluation scores a
prediction against its reference (sentence split, ROUGE with stemming, mean F-measure * 100 rounded to 4 places).

Example:
  mlperf-dagster rouge --predictions outputs.txt --references highlights.txt --format json
"""


def register(subparsers) -> None:
    acc = subparsers.add_parser(
        "accuracy",
        help="score a LoadGen accuracy log (ROUGE, MLPerf rules) and check the targets",
        description="Score mlperf_log_accuracy.json against the dataset the MLPerf way and check the accuracy targets.",
        epilog=ACCURACY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    acc.add_argument("--log", required=True, type=Path, help="the accuracy-mode run's mlperf_log_accuracy.json")
    acc.add_argument("--dataset", required=True, type=Path,
                     help="the prepared dataset file the run used (or an MLCommons cnn_eval.json)")
    acc.add_argument("--benchmark", default=None,
                     help=f"{', '.join(ACCURACY_TARGETS)}, or a LoadGen spelling of one (default: what the dataset "
                          "file says)")
    acc.add_argument("--tokenizer", default=None,
                     help="'byte' or a Hugging Face tokenizer name/folder (default: the dataset file's tokenizer)")
    acc.add_argument("--dtype", choices=("int32", "int64"), default=None,
                     help="token id type in the log (default: int32 for llama, int64 for gpt-j)")
    acc.add_argument("--workers", type=int, default=None, help="processes for sentence splitting (default: all cores)")
    acc.add_argument("--out", type=Path, default=None, help="write accuracy.txt here (atomically)")
    acc.add_argument("--format", choices=("text", "json"), default="text", help="what to print (default: text)")
    acc.add_argument("--reference-evaluation", type=Path, default=None, metavar="MLCOMMONS_INFERENCE",
                     help="also run this mlcommons/inference checkout's evaluation.py and compare its figures")
    acc.set_defaults(func=run_accuracy)

    rouge = subparsers.add_parser(
        "rouge",
        help="ROUGE of predictions against references, one text per line, the MLPerf way",
        description="Print the MLPerf result dict (rouge1, rouge2, rougeL, rougeLsum, gen_len, gen_num).",
        epilog=ROUGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rouge.add_argument("--predictions", required=True, type=Path, help="file with one prediction per line")
    rouge.add_argument("--references", required=True, type=Path, help="file with one reference per line")
    rouge.add_argument("--workers", type=int, default=None, help="processes for sentence splitting (default: all cores)")
    rouge.add_argument("--format", choices=("text", "json"), default="text",
                       help="text: the dict as the reference prints it; json: an object with numbers")
    rouge.set_defaults(func=run_rouge)


def _check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1 (got {workers})")


def run_accuracy(args: argparse.Namespace) -> int:
    from mlperf_assets.accuracy import AccuracyError, evaluate_accuracy_log, write_accuracy_txt

    _check_workers(args.workers)
    try:
        report = evaluate_accuracy_log(
            args.log, args.dataset, benchmark=args.benchmark, tokenizer=args.tokenizer, workers=args.workers,
            dtype=args.dtype,
        )
    except AccuracyError as exc:
        raise UserError(str(exc)) from None
    reference = None
    if args.reference_evaluation is not None:
        from mlperf_assets.accuracy import run_reference_evaluation

        try:
            reference = run_reference_evaluation(args.reference_evaluation, report)
        except AccuracyError as exc:
            raise UserError(str(exc)) from None
    if args.out is not None:
        try:
            write_accuracy_txt(report, args.out)
        except OSError as exc:
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.format == "json":
        data = report.to_dict()
        if reference is not None:
            data["reference_evaluation"] = {
                "script": str(reference.script), "results": reference.results,
                "difference": {k: d for k, _, _, d in reference.comparison(report.results) if d is not None}}
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(report.to_text())
        if reference is not None:
            print(f"\nMLCommons {reference.script}:")
            sys.stdout.write(reference.comparison_text(report.results))
        if args.out is not None:
            print(f"wrote {args.out}")
    return 0 if report.passed else 1


def read_lines(path: Path, what: str) -> list[str]:
    """One text per line ('\\n' only; a trailing '\\r' and the final newline are dropped)."""
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} file {path} is not UTF-8 text (byte {exc.start})") from None
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise UserError(f"{what} file {path} is empty")
    return [line.removesuffix("\r") for line in text.split("\n")]


def run_rouge(args: argparse.Namespace) -> int:
    from mlperf_assets.accuracy import AccuracyError, format_results, score_texts

    _check_workers(args.workers)
    predictions = read_lines(args.predictions, "predictions")
    references = read_lines(args.references, "references")
    if len(predictions) != len(references):
        raise UserError(
            f"{args.predictions} has {len(predictions)} lines but {args.references} has {len(references)}: "
            "one prediction per reference, line by line"
        )
    try:
        results = score_texts(predictions, references, workers=args.workers)
    except AccuracyError as exc:
        raise UserError(str(exc)) from None
    if args.format == "json":
        print(json.dumps({k: float(v) if isinstance(v, str) else v for k, v in results.items()}))
    else:
        print(format_results(results))
    return 0
