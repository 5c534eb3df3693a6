"""Run the MLCommons submission checker of the user's own checkout (never a copy) and read its verdict per result.

``python <checkout>/tools/submission/submission_checker/main.py --input TREE --version ROUND --csv FILE`` in a
subprocess, ROUND being the round the tree is laid out for (its benchmark's ``submission_round``). The checker logs
one line per finding, ``[time file:line LEVEL] message``; a result's findings follow its ``Starting performance
checks for: <perf path>`` line, and its verdict is ``Results <path> <metric>`` (passed) or ``NoResults <path>``
(failed). Each ERROR (and the ``accuracy not met`` WARNING, which fails a result too) is kept verbatim and classified
as *expected* when the run's own facts explain it (``tree.smoke_reasons``, read from its logs and manifest: fewer
samples than its LoadGen model's performance sample count, an accuracy run over part of the evaluation set, under
600 s, a baseline backend, no TEST06 run where one is required; LoadGen's RNG seeds when the tree is judged at another
round than theirs), else *unexpected*. A model's accuracy run over the whole set that misses its target is unexpected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlperf_assets.errors import UserError

CHECKER_MAIN = Path("tools/submission/submission_checker/main.py")

# Findings a smoke run must produce, and the setting that explains each (the checker's own wording).
SMOKE_FINDINGS = {
    "performance_sample_count, found": "samples",
    "Test duration less than 600s": "duration",
    "accuracy not met": "accuracy",
    "does not cover all dataset": "accuracy_samples",
    # a run without its TEST06 run (compliance not asked for): the checker's three lines about the missing folder
    "Missing TEST06 in compliance dir": "no_test06",
    "Missing accuracy file in compliance dir. Needs file": "no_test06",
    "Running accuracy_check in ComplianceCheck": "no_test06",
    # qsl_/sample_index_/schedule_rng_seed: LoadGen's mlperf.conf seeds are another round's than the checker's
    "rng_seed is wrong": "seeds",
}
# Lines that only restate a failure already logged (a check class's roll-up, the final verdicts).
_ROLLUPS = ("Checks failed for:", "NoResults ", "SUMMARY: submission has errors")
_LINE = re.compile(r"^\[[^\]]*? (?P<src>[\w.]+):\d+ (?P<level>[A-Z]+)\] (?P<msg>.*)$")
_RESULT_PATH = re.compile(r"results/(?P<system>[^/\s]+)/(?P<benchmark>[^/\s]+)/(?P<scenario>[^/\s]+)")


@dataclass
class ResultVerdict:
    system: str
    benchmark: str
    scenario: str
    passed: bool = False
    metric: float | None = None
    errors: list[str] = field(default_factory=list)  # the checker's lines, verbatim (message part)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.system, self.benchmark, self.scenario


@dataclass
class CheckerVerdict:
    returncode: int
    results: dict[tuple[str, str, str], ResultVerdict]
    general_errors: list[str]  # errors tied to no result
    summary: str  # the checker's SUMMARY line
    output: str  # everything it printed

    @property
    def looks_ok(self) -> bool:
        return self.returncode == 0


def checker_path(mlcommons_inference: Path | str | None) -> Path:
    """The checker's main.py in the user's MLCommons checkout; one-line UserError when it is not there."""
    if not mlcommons_inference:
        raise UserError("mlcommons_inference: not set; give the path of your mlcommons/inference checkout "
                        "(the submission checker runs from it)")
    root = Path(mlcommons_inference).expanduser()
    main = root / CHECKER_MAIN
    if not root.is_dir():
        raise UserError(f"mlcommons_inference: {root} does not exist (a checkout of mlcommons/inference)")
    if not main.is_file():
        raise UserError(f"mlcommons_inference: {root} has no {CHECKER_MAIN} (not a checkout of mlcommons/inference?)")
    return main


def parse_output(text: str) -> tuple[dict[tuple[str, str, str], ResultVerdict], list[str], str]:
    results: dict[tuple[str, str, str], ResultVerdict] = {}
    general: list[str] = []
    summary = ""
    current: ResultVerdict | None = None

    def verdict_for(msg: str) -> ResultVerdict | None:
        # The last match: the tree itself may sit under a folder called results (the demo's results/submission).
        m = next(reversed(list(_RESULT_PATH.finditer(msg))), None)
        if not m:
            return None
        key = (m["system"], m["benchmark"], m["scenario"])
        return results.setdefault(key, ResultVerdict(*key))

    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        level, msg = m["level"], m["msg"]
        if msg.startswith("SUMMARY:"):
            summary = msg
            continue
        if msg.startswith("Starting performance checks for:"):
            current = verdict_for(msg)
            continue
        if msg.startswith("Results "):
            v = verdict_for(msg)
            if v is not None:
                v.passed = True
                try:
                    v.metric = float(msg.rsplit(" ", 1)[-1])
                except ValueError:
                    pass
            continue
        important = level in ("ERROR", "CRITICAL") or (level == "WARNING" and "accuracy not met" in msg)
        if not important or any(r in msg for r in _ROLLUPS):
            continue
        target = verdict_for(msg) or current
        if target is None:
            general.append(msg)
        elif msg not in target.errors:
            target.errors.append(msg)
    return results, general, summary


def run_checker(tree: Path, mlcommons_inference: Path | str | None, *, version: str, timeout_s: float = 600,
                python: str | None = None) -> CheckerVerdict:
    """The checker's verdict on ``tree`` judged at round ``version`` (``v6.1``, ``v5.0``: ``--version``)."""
    main = checker_path(mlcommons_inference)
    # main.py appends tools/submission to sys.path and imports its package as ``submission_checker``: an installed
    # package of that name (the MLPerf Endpoints checker's) would come first, so the checkout's goes in front.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(main.parent.parent), *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="mlperf-checker-") as work:
        cmd = [python or sys.executable, str(main), "--input", str(Path(tree).absolute()),
               "--version", version, "--csv", str(Path(work) / "summary.csv")]
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"the submission checker took longer than {timeout_s:g} s on {tree}") from None
    output = proc.stdout + proc.stderr
    results, general, summary = parse_output(output)
    if not summary:
        last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "no output")
        raise UserError(f"the submission checker did not finish (exit {proc.returncode}): {last}")
    return CheckerVerdict(proc.returncode, results, general, summary, output)


def classify(errors: list[str], smoke: set[str]) -> tuple[list[str], list[str]]:
    """(expected, unexpected) findings; ``smoke`` holds the run's traits (:func:`smoke_traits`)."""
    expected, unexpected = [], []
    for msg in errors:
        trait = next((t for pattern, t in SMOKE_FINDINGS.items() if pattern in msg), None)
        (expected if trait in smoke else unexpected).append(msg)
    return expected, unexpected


# tree.smoke_reasons' wording -> the trait it gives the run
_REASON_TRAITS = {
    "performance_sample_count": "samples",
    "min_duration": "duration",
    "the accuracy run covers": "accuracy_samples",
    "baseline": "accuracy",
    "no TEST06 run": "no_test06",
    "RNG seeds": "seeds",
}


def smoke_traits(reasons: list[str]) -> set[str]:
    """The traits of a run that explain checker findings, from ``tree.smoke_reasons`` (facts of the run itself,
    never of the config): samples, accuracy_samples, duration, accuracy (a baseline backend, or an accuracy run
    over part of the evaluation set), no_test06, seeds."""
    traits = {t for pattern, t in _REASON_TRAITS.items() if any(pattern in r for r in reasons)}
    if "accuracy_samples" in traits:
        traits.add("accuracy")
    return traits
