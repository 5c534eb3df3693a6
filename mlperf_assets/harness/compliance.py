"""MLPerf compliance tests as a table: what each test is, which benchmarks take it, the mode it forces, how its
audit.config reaches LoadGen, and how its result is verified.

A compliance run is a normal harness run (``run --compliance TEST06 --audit-config FILE``) with the test's official
``audit.config`` (from the user's MLCommons checkout) in LoadGen's working directory while ``StartTest`` reads it;
the harness removes it again as soon as LoadGen has issued its first query, when ``StartTest`` returns, and on any
failure or interrupt, so no later run is ever audited by accident.

Verification (:func:`verify`) is MLCommons' own when the user's checkout is given (its
``compliance/<TEST>/run_verification.py`` runs in a subprocess and its ``verify_accuracy.txt`` and output are kept
verbatim) and this module's equivalent of the same checks besides: it passes only when both pass. Without a checkout
this module's checks decide alone, written in the same lines. Either way the folder gets
``verify_accuracy.txt`` and ``accuracy/mlperf_log_accuracy.json`` (the layout of a submission's ``TEST06/`` folder).

Adding TEST01/TEST04-style tests is one ``ComplianceTest`` entry (its verify function and its script's argv).

Standard library and numpy only (the node side imports it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .benchmarks import BENCHMARKS, LOADGEN_MODELS, SCENARIOS
from .errors import HarnessError
from .run_folder import ACCURACY_DIR, ACCURACY_LOG, AUDIT_CONFIG, VERIFY_ACCURACY, read_manifest


class ComplianceError(HarnessError):
    """A compliance test that cannot run or be verified as asked (exit code 2)."""


@dataclass(frozen=True)
class VerifyContext:
    """What a verification needs besides the folder."""

    scenario: str
    dtype: str  # numpy dtype of the token ids in the accuracy log
    eos_token_id: int


@dataclass
class VerifyResult:
    """The outcome of one compliance verification."""

    test: str
    passed: bool
    checks: dict[str, bool | None]  # check name -> passed (None: skipped)
    text: str  # verify_accuracy.txt as written
    path: Path  # where verify_accuracy.txt was written
    verifier: str  # "mlperf-dagster" or the MLCommons script's path
    stdout: str = ""  # the MLCommons script's output, verbatim
    samples: int = 0  # accuracy-log records checked
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "passed": self.passed, "checks": dict(self.checks), "path": str(self.path),
                "verifier": self.verifier, "samples": self.samples, "notes": list(self.notes)}


# ---------------------------------------------------------------------------------------------------------- TEST06
def _tokens(hex_text: str, dtype: str):
    import numpy as np

    return np.frombuffer(bytes.fromhex(hex_text), dtype=np.dtype(dtype))


def consistency_checks(records: Sequence[Mapping[str, Any]], ctx: VerifyContext) -> dict[str, bool | None]:
    """The three TEST06 checks of ``compliance/TEST06/README.md`` on accuracy-log records:

    - ``first_token`` (not Offline): each record's ``token_data`` (the first-token response) is a prefix of ``data``;
    - ``eos``: no output ends with more than one EOS token;
    - ``sample_length``: ``len(data) == token_count``.
    A record that lacks a field fails its check."""
    first: bool | None = None
    if ctx.scenario != "Offline":
        first = True
        for r in records:
            try:
                data, head = _tokens(r["data"], ctx.dtype), _tokens(r["token_data"], ctx.dtype)
            except (KeyError, TypeError, ValueError):
                first = False
                break
            n = min(len(data), len(head))
            if not (data[:n] == head[:n]).all():
                first = False
                break
    eos = True
    length = True
    for r in records:
        try:
            data = _tokens(r["data"], ctx.dtype)
        except (KeyError, TypeError, ValueError):
            eos = length = False
            break
        trailing = 0
        for t in data[::-1]:
            if int(t) != ctx.eos_token_id:
                break
            trailing += 1
        if trailing > 1:
            eos = False
        try:
            if len(data) != int(r["token_count"]):
                length = False
        except (KeyError, TypeError, ValueError, OverflowError):
            length = False
    return {"first_token": first, "eos": eos, "sample_length": length}


def consistency_text(checks: Mapping[str, bool | None], complete: bool) -> str:
    """verify_accuracy.txt in the lines of MLCommons' run_verification.py."""
    first = checks.get("first_token")
    return (f"First token check pass: {'Skipped' if first is None else first}\n"
            f"EOS check pass: {checks['eos']}\n"
            f"Sample length check pass: {checks['sample_length']}\n"
            f"TEST06 verification {'complete' if complete else 'failed'}\n")


def parse_consistency_text(text: str) -> dict[str, bool | None]:
    """The checks from a verify_accuracy.txt (MLCommons' or ours); a line that is missing counts as failed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        values[key.strip()] = value.strip()

    def flag(key: str) -> bool | None:
        v = values.get(key)
        return None if v == "Skipped" else v == "True"

    return {"first_token": flag("First token check pass"), "eos": flag("EOS check pass"),
            "sample_length": flag("Sample length check pass")}


# run_verification.py reads -e as a string (argparse without type=int), so through its own command line its EOS check
# compares token ids with a string and passes whatever the log holds. This runs its main() unchanged, from the user's
# checkout, with only that argument made the integer it stands for: its EOS check then judges the run's EOS id.
_INT_EOS_MAIN = """\
import importlib.util, sys
path = sys.argv.pop(1)
spec = importlib.util.spec_from_file_location("run_verification", path)
rv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rv)
parse = rv.get_args
def get_args():
    args = parse()
    args.eos_token_id = int(args.eos_token_id)
    return args
rv.get_args = get_args
rv.main()
"""


def consistency_mlcommons_argv(script: Path, folder: Path, out: Path, ctx: VerifyContext) -> list[str]:
    return [sys.executable, "-c", _INT_EOS_MAIN, str(script), "-c", str(folder), "-o", str(out), "-s", ctx.scenario,
            "-d", ctx.dtype, "-e", str(ctx.eos_token_id)]


def _takes_token_outputs(lg_model_name: str) -> str | None:
    """None if the LoadGen model's responses carry token ids and counts (what TEST06 checks), else why not."""
    model = LOADGEN_MODELS.get(lg_model_name)
    if model is None:
        return f"{lg_model_name} is not a LoadGen model of harness/benchmarks.py"
    bench = BENCHMARKS[model.benchmark]
    if not (bench.sends_n_tokens and model.uses_token_latencies):
        return (f"{model.submission_name} responses carry no token counts (n_tokens) or first tokens, which TEST06 "
                "checks")
    return None


@dataclass(frozen=True)
class ComplianceTest:
    """One MLPerf compliance test."""

    name: str
    description: str
    mode: str  # the harness --mode it runs under (what its audit.config forces)
    unsupported: Callable[[str], str | None]  # LoadGen model name -> None if the test can run, else why not
    checks: Callable[[Sequence[Mapping[str, Any]], VerifyContext], dict[str, bool | None]]
    render: Callable[[Mapping[str, bool | None], bool], str]  # checks, complete -> result file text
    parse: Callable[[str], dict[str, bool | None]]  # result file text -> checks
    mlcommons_argv: Callable[[Path, Path, Path, VerifyContext], list[str]]  # script, run folder, -o folder, ctx
    audit_config_path: str = ""  # inside an MLCommons checkout
    verification_script: str = ""  # inside an MLCommons checkout
    result_file: str = VERIFY_ACCURACY

    def __post_init__(self) -> None:
        if not self.audit_config_path:
            object.__setattr__(self, "audit_config_path", f"compliance/{self.name}/{AUDIT_CONFIG}")
        if not self.verification_script:
            object.__setattr__(self, "verification_script", f"compliance/{self.name}/run_verification.py")


COMPLIANCE_TESTS: dict[str, ComplianceTest] = {
    t.name: t
    for t in (
        ComplianceTest(
            name="TEST06",
            description="LLM output consistency: first token, at most one trailing EOS, token counts (100 logged "
                        "samples of a performance run)",
            mode="performance",
            unsupported=_takes_token_outputs,
            checks=consistency_checks, render=consistency_text, parse=parse_consistency_text, mlcommons_argv=consistency_mlcommons_argv,
        ),
    )
}
COMPLIANCE_NAMES = tuple(COMPLIANCE_TESTS)


def compliance_test(name: str) -> ComplianceTest:
    """The table entry for ``name``; :class:`ComplianceError` listing the known tests otherwise."""
    try:
        return COMPLIANCE_TESTS[name]
    except KeyError:
        raise ComplianceError(f"unknown compliance test {name!r}: expected one of {', '.join(COMPLIANCE_TESTS)}") \
            from None


def required_tests(benchmark_or_submission_name: str) -> list[str]:
    """The compliance tests a submission of this benchmark needs (``llama3.1-8b`` -> ``["TEST06"]``): those of the
    LoadGen model rows (``LoadGenModel.compliance_tests``) filed under its submission name."""
    from .benchmarks import LOADGEN_MODELS, submission_name

    name = submission_name(benchmark_or_submission_name) or benchmark_or_submission_name
    wanted = {t for m in LOADGEN_MODELS.values() if m.submission_name == name for t in m.compliance_tests}
    return [t for t in COMPLIANCE_TESTS if t in wanted]


def check_runnable(test: ComplianceTest, lg_model_name: str, mode: str) -> None:
    """:class:`ComplianceError` (one line) when ``test`` cannot run for this LoadGen model and mode."""
    why = test.unsupported(lg_model_name)
    if why:
        raise ComplianceError(f"--compliance {test.name} cannot run for {lg_model_name}: {why}")
    if mode != test.mode:
        raise ComplianceError(f"--compliance {test.name} runs in --mode {test.mode} (its audit.config forces it), "
                              f"not {mode}")


# Keys an audit.config may set: a user.conf's (settings.KNOWN_KEYS) and those LoadGen reads only from mlperf.conf and
# audit.config (TEST01's logging probability, TEST05's RNG seeds). Its ``mode`` is a TestMode number.
AUDIT_ONLY_KEYS = frozenset({"accuracy_log_probability", "qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"})
LOADGEN_MODE_NUMBERS = {"accuracy": 1, "performance": 2}  # audit.config: 0 submission, 1 accuracy, 2 performance


def parse_audit_config(text: str, where: str, test: ComplianceTest | None = None) -> dict[str, str]:
    """``model.scenario.key = value`` lines of an audit.config (comments and blank lines skipped), checked as a
    user.conf's are (a LoadGen model and scenario, a key LoadGen reads there, a number) and, given the ``test``,
    a ``mode`` that is the test's own; :class:`ComplianceError` naming ``where`` and the line otherwise, or if it
    holds no setting."""
    from .settings import KNOWN_KEYS, _is_number

    entries: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        parts = key.split(".")
        if not eq or len(parts) != 3 or not all(parts) or not value:
            raise ComplianceError(f"{where}:{n}: not an audit.config line ('model.scenario.key = value'): {raw!r}")
        model, scenario, name = parts
        if model != "*" and model not in LOADGEN_MODELS:
            raise ComplianceError(f"{where}:{n}: unknown LoadGen model name {model!r} (LoadGen would ignore the line)")
        if scenario != "*" and scenario not in (*SCENARIOS, "MultiStream"):
            raise ComplianceError(f"{where}:{n}: unknown scenario {scenario!r}")
        if name not in KNOWN_KEYS | AUDIT_ONLY_KEYS:
            raise ComplianceError(f"{where}:{n}: unknown key {name!r} (LoadGen would ignore it)")
        if not _is_number(value):
            raise ComplianceError(f"{where}:{n}: value {value!r} is not a number")
        if name == "mode" and test is not None and value != str(LOADGEN_MODE_NUMBERS[test.mode]):
            raise ComplianceError(f"{where}:{n}: mode {value} is not {test.name}'s (it runs in {test.mode} mode: "
                                  f"mode = {LOADGEN_MODE_NUMBERS[test.mode]})")
        entries[key] = value
    if not entries:
        raise ComplianceError(f"{where}: no settings (expected the compliance test's audit.config)")
    return entries


def read_audit_config(path: str | os.PathLike, test: ComplianceTest | None = None) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComplianceError(f"--audit-config {p} does not exist (compliance/TEST06/audit.config of an MLCommons "
                              "inference checkout)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComplianceError(f"--audit-config {p}: cannot read it ({getattr(exc, 'strerror', None) or exc})") \
            from None
    parse_audit_config(text, str(p), test)
    return text


def default_eos_token_id(benchmark: str, tokenizer_kind: str | None, tokenizer: str | None = None) -> int:
    """The EOS id TEST06 checks: the byte tokenizer's for byte-tokenized datasets, a local tokenizer folder's own
    (a test or custom model), else the benchmark's (Llama 3.1 Instruct: 128009, ``<|eot_id|>``)."""
    if tokenizer_kind == "byte":
        from .tokenizers import ByteTokenizer

        return ByteTokenizer.eos_token_id
    if tokenizer and tokenizer != BENCHMARKS[benchmark].reference_tokenizer and Path(tokenizer).is_dir():
        try:
            from .tokenizers import load_tokenizer

            eos = load_tokenizer(tokenizer).eos_token_id
            if isinstance(eos, int):
                return eos
        except HarnessError:
            pass
    return BENCHMARKS[benchmark].eos_token_id


class AuditConfig:
    """The audit.config of one compliance run, in LoadGen's working directory only while LoadGen needs it."""

    def __init__(self, folder: Path, text: str) -> None:
        self.path = folder / AUDIT_CONFIG
        self.text = text

    def place(self) -> None:
        self.path.write_text(self.text, encoding="utf-8")

    def remove(self) -> None:
        """Idempotent; never raises (called from failure paths)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------- verification
def verify(folder: str | os.PathLike, scenario: str | None = None, benchmark: str | None = None,
           mlcommons_inference: str | os.PathLike | None = None, *, test: str | None = None,
           eos_token_id: int | None = None, out: str | os.PathLike | None = None,
           timeout_s: float = 600.0) -> VerifyResult:
    """Verify the compliance run in ``folder`` (its LoadGen logs and run_manifest.json); write
    ``verify_accuracy.txt`` and ``accuracy/mlperf_log_accuracy.json`` into ``out`` (default: ``folder``).

    ``test``, ``scenario``, ``benchmark`` and the EOS id default to what the folder's run_manifest.json records.
    With ``mlcommons_inference`` (a checkout of mlcommons/inference) its own ``run_verification.py`` writes the
    files, kept verbatim; our checks still run, and the result passes only when both verifiers pass (a disagreement
    is noted in ``VerifyResult.notes``). Bad input (no accuracy log, a damaged manifest or log, unknown test or
    scenario, a checkout without the script, an ``out`` that cannot be written): :class:`ComplianceError`."""
    folder = Path(folder)
    out_dir = Path(out) if out is not None else folder
    t, ctx = _context(folder, scenario, benchmark, test, eos_token_id)
    log_path = folder / ACCURACY_LOG
    records = _read_records(log_path)
    own = t.checks(records, ctx)
    own_ok = all(v is not False for v in own.values()) and bool(records)
    notes = [] if records else [f"{log_path} holds no samples: was {AUDIT_CONFIG} applied?"]
    if mlcommons_inference is None:
        text = t.render(own, own_ok)
        try:
            _write_result(out_dir, t.result_file, text, log_path)
        except (OSError, HarnessError) as exc:
            raise _unwritable(out_dir, exc) from None
        return VerifyResult(t.name, own_ok, own, text, out_dir / t.result_file, "mlperf-dagster", "", len(records),
                            notes)
    return _verify_mlcommons(t, folder, out_dir, ctx, Path(mlcommons_inference), own, own_ok, len(records), notes,
                             timeout_s)


def _context(folder: Path, scenario: str | None, benchmark: str | None, test: str | None,
             eos_token_id: int | None) -> tuple[ComplianceTest, VerifyContext]:
    """The test and what its checks need: the arguments, else what the folder's run_manifest.json records (each
    field checked: a damaged manifest is one line naming the field)."""
    from .run_folder import RUN_MANIFEST

    manifest = read_manifest(folder)
    where = folder / RUN_MANIFEST

    def bad(field_name: str, value: Any, expected: str) -> ComplianceError:
        return ComplianceError(f"{where}: {field_name}: {value!r} is not {expected}")

    comp = manifest.get("compliance") or {}
    if not isinstance(comp, dict):
        raise bad("compliance", comp, "a compliance record (an object)")
    name = test or comp.get("test") or "TEST06"
    if not isinstance(name, str):
        raise bad("compliance.test", name, "a compliance test name")
    t = compliance_test(name)
    scenario = scenario or manifest.get("scenario")
    if not isinstance(scenario, str) or scenario not in SCENARIOS:
        raise ComplianceError(f"{folder}: scenario {scenario!r} unknown (give one of {', '.join(SCENARIOS)})")
    bench_name = benchmark or manifest.get("benchmark") or "llama3.1-8b"
    if not isinstance(bench_name, str):
        raise bad("benchmark", bench_name, "a benchmark name")
    if bench_name not in BENCHMARKS:
        from .benchmarks import LOADGEN_MODELS as models, submission_name

        sub = submission_name(bench_name)
        family = next((m.benchmark for m in models.values() if m.submission_name == sub), None)
        if family is None:
            raise ComplianceError(f"unknown benchmark {bench_name!r}: expected one of {', '.join(BENCHMARKS)}")
        bench_name = family
    eos = eos_token_id if eos_token_id is not None else comp.get("eos_token_id")
    if eos is None:
        ds = manifest.get("dataset") or {}
        if not isinstance(ds, dict):
            raise bad("dataset", ds, "a dataset record (an object)")
        kind, tokenizer = ds.get("tokenizer_kind"), ds.get("tokenizer")
        eos = default_eos_token_id(bench_name, kind if isinstance(kind, str) else None,
                                   tokenizer if isinstance(tokenizer, str) else None)
    if isinstance(eos, bool) or not isinstance(eos, int) or eos < 0:
        raise bad("compliance.eos_token_id", eos, "a token id (an integer >= 0)")
    return t, VerifyContext(scenario=scenario, dtype=BENCHMARKS[bench_name].token_dtype, eos_token_id=eos)


def _read_records(log_path: Path) -> list:
    """The accuracy log's records; :class:`ComplianceError` naming the file (and the record) when it is missing,
    not a JSON list, or holds a token count that is no number of tokens."""
    import math

    try:
        records = json.loads(log_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ComplianceError(f"{log_path} does not exist: not a compliance run folder") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ComplianceError(f"{log_path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(records, list):
        raise ComplianceError(f"{log_path}: expected a JSON list of accuracy-log records")
    for i, r in enumerate(records):
        count = r.get("token_count") if isinstance(r, dict) else None
        if isinstance(count, float) and not math.isfinite(count):
            raise ComplianceError(f"{log_path}: record {i}: token_count {count!r} is not a number of tokens")
    return records


def _unwritable(out_dir: Path, exc: BaseException) -> ComplianceError:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ComplianceError(f"--out {out_dir}: cannot write the verification there ({why})")


def _write_result(out_dir: Path, name: str, text: str, log_path: Path) -> None:
    from .files import write_atomic

    write_atomic(out_dir / name, text)
    dest = out_dir / ACCURACY_DIR / ACCURACY_LOG
    if dest.resolve() != log_path.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log_path, dest)


def _verify_mlcommons(t: ComplianceTest, folder: Path, out_dir: Path, ctx: VerifyContext, checkout: Path,
                      own: dict[str, bool | None], own_ok: bool, n: int, notes: list[str],
                      timeout_s: float) -> VerifyResult:
    script = (checkout / t.verification_script).resolve()
    if not script.is_file():
        raise ComplianceError(f"--mlcommons-inference {checkout}: {t.verification_script} not found (expected a "
                              "checkout of mlcommons/inference)")
    with tempfile.TemporaryDirectory(prefix=f"verify-{t.name}-") as tmp:
        argv = t.mlcommons_argv(script, folder.resolve(), Path(tmp), ctx)
        try:
            proc = subprocess.run(argv, cwd=script.parent, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ComplianceError(f"{script} did not finish within {timeout_s:.0f} s") from None
        produced = Path(tmp) / t.name
        result = produced / t.result_file
        if proc.returncode != 0 or not result.is_file():
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
            raise ComplianceError(f"{script} failed (exit {proc.returncode}): {last}")
        text = result.read_text(encoding="utf-8")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(result, out_dir / t.result_file)
            acc = produced / ACCURACY_DIR
            if acc.is_dir():
                shutil.copytree(acc, out_dir / ACCURACY_DIR, dirs_exist_ok=True)
        except OSError as exc:
            raise _unwritable(out_dir, exc) from None
    checks = t.parse(text)
    theirs = all(v is not False for v in checks.values()) and f"{t.name} verification complete" in text
    if checks != own or theirs != own_ok:
        notes.append(f"mlperf-dagster's own checks say {own} ({'pass' if own_ok else 'fail'}); "
                     f"{script.name} says {checks} ({'pass' if theirs else 'fail'}): the verification fails")
    return VerifyResult(t.name, theirs and own_ok, checks, text, out_dir / t.result_file, str(script), proc.stdout, n,
                        notes)
