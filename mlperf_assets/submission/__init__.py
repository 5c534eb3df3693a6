"""MLPerf submission: the tree (``tree``), its systems/measurements JSON (``systems``), the accuracy-log truncation
rule (``truncate``) and the MLCommons checker run from the user's checkout (``checker``). Pure: no Dagster, no
DuckDB (the caller records the checker's verdict, ``check_records``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from .checker import CheckerVerdict, ResultVerdict, checker_path, classify, run_checker, smoke_traits
from .tree import SubmissionTree, build_tree

__all__ = [
    "CheckerVerdict", "ResultVerdict", "SubmissionTree", "build_tree", "check_records", "check_tree", "checker_path",
    "classify", "compliance_failures", "run_checker", "smoke_traits",
]  # fmt: skip


def check_tree(tree: SubmissionTree, mlcommons_inference: Path | str | None,
               ) -> tuple[CheckerVerdict, list[dict[str, Any]]]:
    """Run the checker on ``tree`` at the round it is laid out for and return its verdict plus one row per result:
    node, system, benchmark, scenario, run_id, passed, metric, expected and unexpected findings (the checker's own
    lines, classified by the run's own facts, ``tree.smoke_reasons``). A compliance verification the tree holds
    as failed, or on which the two verifiers disagreed, is an unexpected finding of its result too, and fails it
    (MLCommons' verify_accuracy.txt, kept verbatim, may say it passed)."""
    verdict = run_checker(tree.root, mlcommons_inference, version=tree.round)
    rows = []
    node_of = {system: node for node, system in tree.systems.items()}
    runs = {(tree.systems[r.node], r.benchmark, r.result_scenario): r for r in tree.results}
    for key, result in sorted(verdict.results.items()):
        node = node_of.get(result.system)
        run = runs.get(key)
        traits = smoke_traits(tree.smoke_reasons.get((node, run.scenario), []) if run else [])
        expected, unexpected = classify(result.errors, traits)
        failed = compliance_failures(run) if run else []
        rows.append({
            "node": node, "system": result.system, "benchmark": result.benchmark, "scenario": result.scenario,
            "run_id": run.run_id if run else None, "passed": result.passed and not failed, "metric": result.metric,
            "expected": expected, "unexpected": unexpected + [m for m in failed if m not in unexpected],
        })
    return verdict, rows


def compliance_failures(run) -> list[str]:
    """One line per compliance verification of ``run`` (as written into the tree) that did not pass: its verdict
    and the notes saying why (the two verifiers' disagreement, an empty log)."""
    lines = []
    for test, result in sorted(run.verifications.items()):
        if not result.passed:
            why = "; ".join(result.notes) or result.text.strip().replace("\n", ", ")
            lines.append(f"{test} verification of run {run.run_id} failed: {why}")
    return lines


def package(config, out: Path, *, check: bool | None = None, nodes: list[str] | None = None,
            machine_facts: Callable[[str], Mapping[str, Any]] | None = None, option: str = "--out",
            ) -> tuple[SubmissionTree, CheckerVerdict | None, list[dict[str, Any]]]:
    """Build the tree into ``out``; then, when ``mlcommons_inference`` is configured (or ``check`` is True), run
    the checker. Its verdict per result comes back as rows (:func:`check_tree`); recording them is the caller's
    (``check_records`` gives the ``submission_checks`` rows)."""
    tree = build_tree(config, out, nodes=nodes, machine_facts=machine_facts, option=option)
    if check is None:
        check = config.mlcommons_inference is not None
    if not check:
        return tree, None, []
    verdict, rows = check_tree(tree, config.mlcommons_inference)
    return tree, verdict, rows


def check_records(tree: SubmissionTree, verdict: CheckerVerdict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One checker run as rows of the results store's ``submission_checks`` (the store adds ``check_id`` and
    ``checked_at``)."""
    return [
        {"tree": str(tree.root), "node": r["node"], "system": r["system"], "benchmark": r["benchmark"],
         "scenario": r["scenario"], "run_id": r["run_id"], "passed": r["passed"], "metric": r["metric"],
         "expected_errors": r["expected"], "unexpected_errors": r["unexpected"], "summary": verdict.summary}
        for r in rows
    ]


def verdict_block(verdict: CheckerVerdict, rows: list[dict[str, Any]], *, limit: int = 4) -> str:
    """The checker's verdict in a few lines: its summary, then per result PASS/FAIL and its own error lines."""
    lines = [f"MLCommons submission checker ({verdict.summary or 'no summary'}):"]
    for r in rows:
        state = "PASS" if r["passed"] else ("FAIL (expected: smoke settings or a baseline backend)" if not r["unexpected"] else "FAIL")
        lines.append(f"  {r['system']}/{r['benchmark']}/{r['scenario']}: {state}")
        for msg in (r["unexpected"] + r["expected"])[:limit]:
            lines.append(f"    {_short(msg)}")
        extra = len(r["unexpected"]) + len(r["expected"]) - limit
        if extra > 0:
            lines.append(f"    ... and {extra} more")
    for msg in verdict.general_errors[:limit]:
        lines.append(f"  {_short(msg)}")
    return "\n".join(lines)


def _short(msg: str) -> str:
    """A checker line without the tree's absolute path prefix."""
    import re

    msg = re.sub(r"^\S*/results/\S*\s+", "", msg)  # the result's own log: its heading names it
    return re.sub(r"\S*/results/", "results/", msg)
