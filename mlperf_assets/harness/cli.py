"""``python -m mlperf_assets.harness {prepare-dataset,run,verify-compliance}``: the node-side command line (parser and dispatch only;
each subcommand's flags belong to its ``*Args`` dataclass in ``args.py``).

Exit codes: ``EXIT_CODES`` below, shown by ``--help``.
"""

from __future__ import annotations

import argparse
import signal
import textwrap
from typing import Callable, Sequence

from . import interrupts
from .args import EndpointPointArgs, PrepareArgs, RunArgs, VerifyComplianceArgs
from .errors import HarnessError, say


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


EXIT_CODES = textwrap.dedent("""\
    Exit codes (every outcome but 0 also prints one line on stderr, never a traceback):
      0    done (run: LoadGen finished and every log was written; run_manifest.json says "completed")
      1    failed: the backend failed, or a file could not be written ("error: no space left on device writing
           FILE"); the manifest says "failed" (details in harness.log)
      2    bad input: a dataset, user.conf or setting that is wrong or unreadable, an unusable --output-dir or --out
           ("error: FILE...: what is wrong"); nothing is written (a run folder already begun says "failed")
      130  SIGINT (Ctrl-C), 143 SIGTERM, at any moment: the manifest says "interrupted" ("terminated (SIGTERM): run
           marked interrupted in .../run_manifest.json"); prepare-dataset leaves no file. Only during Python's own
           start-up, before this command's code runs (50 ms idle, 200 ms+ on a loaded machine), do the default
           dispositions apply: killed by the signal (a shell shows 130 / 143, subprocess and the runners' supervisor
           -2 / -15; a SIGINT while Python imports `site` even ends in its "Fatal Python error: init_import_site",
           exit 1), nothing written. A launcher that starts the harness with SIGINT/SIGTERM blocked closes that
           window: they stay pending until the harness unblocks them, then count as above.
    """)


PREPARE_EPILOG = textwrap.dedent("""\
    The output is one JSON file that IS an MLCommons cnn_eval.json: a list of samples (input = article, output =
    highlights, tok_input = prompt token ids, plus id, prompt and tok_output), each also carrying the benchmark and
    tokenizer names in an "mlperf_dagster" object; MLCommons' evaluation.py reads it as is.

    Examples:
      # full validation split through Hugging Face datasets (or a local copy: --path saved_dir | file.parquet)
      python -m mlperf_assets.harness prepare-dataset --source huggingface --out cnn_eval.json \\
          --tokenizer meta-llama/Llama-3.1-8B-Instruct
      # 20 CNN .story files, built-in byte tokenizer (for the extractive/replay backends; labelled "byte")
      python -m mlperf_assets.harness prepare-dataset --source stories --path stories/ --out smoke.json
      # 500 random samples of an MLCommons file, reproducibly
      python -m mlperf_assets.harness prepare-dataset --source mlcommons-json --path cnn_eval.json \\
          --out subset.json --max-samples 500 --seed 1 --tokenizer /models/llama3.1-8b
    """)

RUN_EPILOG = textwrap.dedent("""\
    Writes into --output-dir: mlperf_log_{summary,detail}.txt, mlperf_log_accuracy.json (LoadGen's), user.conf (the
    --user-conf copy followed by the lines generated from the flags above; later lines win), progress.jsonl,
    samples.jsonl (per-sample issue / first-token / completion times in ns), run_manifest.json (provenance and
    exit status) and harness.log. LoadGen runs inside --output-dir with tracing off.

    --compliance TEST06 --audit-config FILE (compliance/TEST06/audit.config of your MLCommons checkout) runs that
    compliance test: the audit.config is written into --output-dir (LoadGen's working directory) for StartTest only
    and removed once LoadGen has issued its first query (and on any failure or signal); the folder also gets
    verify_accuracy.txt and accuracy/mlperf_log_accuracy.json (see verify-compliance), and run_manifest.json a
    "compliance" record. TEST06 runs in --mode performance.

    Settings use LoadGen config units (ms, QPS). Without them mlperf.conf applies (600 s minimum duration, 13,368
    queries Offline): give small values for smoke runs. A dataset smaller than the benchmark's performance sample
    count lowers performance_sample_count_override to the dataset size and the manifest says so.

    Examples:
      python -m mlperf_assets.harness run --scenario Offline --mode performance --backend extractive \\
          --dataset smoke.json --output-dir runs/offline-perf --min-duration-ms 1000 --min-query-count 100
      python -m mlperf_assets.harness run --scenario Server --mode performance --backend vllm \\
          --dataset cnn_eval.json --output-dir runs/server --target-qps 5 \\
          --engine-arg tensor_parallel_size=1 --engine-arg gpu_memory_utilization=0.9

    Exit codes: 0 LoadGen finished (manifest "completed"); 1 failed, e.g. the backend or a full disk ("error: no
    space left on device writing FILE"; manifest "failed", see harness.log); 2 bad input (one line naming the file);
    130 SIGINT / 143 SIGTERM (manifest "interrupted"). Details: python -m mlperf_assets.harness --help.
    """)


def prepare_main(args: PrepareArgs) -> int:
    from .dataset import prepare_dataset

    with interrupts.raising():  # reading and tokenizing can take minutes: a signal stops it at once (no file written)
        out = prepare_dataset(args.source, args.path, args.out, benchmark=args.benchmark, tokenizer=args.tokenizer,
                              max_samples=args.max_samples, seed=args.seed)
    print(f"wrote {out}")
    return 0


def run_main(args: RunArgs) -> int:
    from .run import run

    return run(args)


def endpoint_point_main(args: EndpointPointArgs) -> int:
    from .endpoints_point import run_point

    return run_point(args)


def verify_compliance_main(args: VerifyComplianceArgs) -> int:
    """Exit 0 when the verification passes, 1 when it fails, 2 on bad input. An ``--out`` that is, holds or lies
    inside the run folder it reads, or holds what must survive (the current directory, the project, $HOME), is
    refused before anything is written (the folder itself is the default, written into without ``--out``)."""
    from .compliance import ComplianceError, verify

    if args.out is not None:
        from mlperf_assets.errors import UserError

        from .outputs import check_output_folder

        try:
            check_output_folder(args.out, option="--out", reads={"the compliance run's folder": args.folder},
                                replaces=False)
        except UserError as exc:
            raise ComplianceError(str(exc)) from None
    result = verify(args.folder, args.scenario, args.benchmark, args.mlcommons_inference, test=args.test,
                    eos_token_id=args.eos_token_id, out=args.out)
    print(result.stdout if result.stdout else result.text, end="" if (result.stdout or result.text).endswith("\n")
          else "\n")
    for note in result.notes:
        say(f"note: {note}")
    print(f"wrote {result.path} ({result.verifier}): {'pass' if result.passed else 'FAIL'}")
    return 0 if result.passed else 1


VERIFY_EPILOG = textwrap.dedent("""\
    Checks a compliance run's folder as MLCommons does (TEST06: first token = start of the output, except Offline;
    at most one trailing EOS; token_count = output length) and writes verify_accuracy.txt (MLCommons' lines) and
    accuracy/mlperf_log_accuracy.json into the folder (or --out). With --mlcommons-inference PATH, that checkout's
    compliance/<TEST>/run_verification.py writes them (its files and output kept verbatim; it gets the run's EOS id
    as an integer), and the verification passes only when its checks and these both pass.

    Exit codes: 0 pass, 1 fail, 2 bad input.

    Example:
      python -m mlperf_assets.harness verify-compliance runs/r1/compliance/TEST06 \\
          --mlcommons-inference ~/inference
    """)


# (name, args class, main, help, description, epilog)
SUBCOMMANDS: tuple[tuple[str, type, Callable[..., int], str, str, str], ...] = (
    ("prepare-dataset", PrepareArgs, prepare_main,
     "read CNN/DM, template prompts, tokenize, write a prepared file",
     "Read CNN/DailyMail validation samples, apply the benchmark's exact prompt template and tokenize with the "
     "model's tokenizer.", PREPARE_EPILOG),
    ("run", RunArgs, run_main, "run one LoadGen test (scenario x mode) with a backend",
     "Run one MLPerf LoadGen test: FromConfig(user.conf, model, scenario) once, then StartTest with the chosen "
     "backend behind the SUT.", RUN_EPILOG),
    ("verify-compliance", VerifyComplianceArgs, verify_compliance_main,
     "verify a compliance run (TEST06) and write verify_accuracy.txt",
     "Verify a compliance test run (harness/compliance.py), as MLCommons' run_verification.py does.", VERIFY_EPILOG),
    ("endpoint-point", EndpointPointArgs, endpoint_point_main,
     "run one MLPerf Endpoints point with MLCommons' reference client",
     "Run one MLPerf Endpoints point: MLCommons' reference client (unmodified, its own venv) with the YAML the "
     "orchestrator wrote, accuracy right after performance at accuracy points, inside the run-folder protocol "
     "(progress.jsonl, run_manifest.json, exit code).", ""),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlperf_assets.harness",
        description="Node-side MLPerf Inference harness for CNN/DailyMail summarization (the benchmarks of "
        "harness/benchmarks.py): prepare the dataset, then run one LoadGen test per process.",
        epilog=EXIT_CODES, formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, args_cls, main_fn, help_text, description, epilog in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=description, epilog=epilog, formatter_class=_Formatter)
        args_cls.add_cli_args(p)
        p.set_defaults(func=_dispatch(args_cls, main_fn))
    return parser


def _dispatch(args_cls, main_fn: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    return lambda ns: main_fn(args_cls.from_cli_args(ns))


def main(argv: Sequence[str] | None = None) -> int:
    """The harness process's entry point (installs the SIGINT/SIGTERM handlers of ``interrupts``)."""
    interrupts.install()
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        return ns.func(ns)
    except HarnessError as exc:
        if interrupts.pending() is None:
            say(f"error: {exc}")
            return exc.exit_code
        signum = interrupts.pending()
    except KeyboardInterrupt as exc:  # Interrupted, or a library's own (Ctrl-C)
        signum = getattr(exc, "signum", None) or interrupts.pending() or signal.SIGINT
    say(f"{interrupts.describe(signum)}: stopped; nothing written")
    return interrupts.exit_code_for(signum)
