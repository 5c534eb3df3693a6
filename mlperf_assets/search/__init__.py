"""Capacity search: the highest Server (or Interactive) ``target_qps`` that stays VALID, found automatically.

The hardest part of an MLPerf Server run is guessing ``target_qps``: too high and a 10-minute run ends INVALID,
too low and the score is thrown away. The search (``max_qps_search`` asset, ``mlperf-dagster search-qps``):

1. starts from an estimate: ``search.start_qps``, else the node's latest Offline samples/s in the store (same
   benchmark, backend and engine arguments), else a short Offline probe;
2. runs short Server probes (``search.probe_duration_s``) at ``start_fraction`` x the estimate, then *brackets*
   (x ``growth`` while probes pass, x ``shrink`` while they fail) and *bisects* (geometric midpoint) between the
   highest passing and the lowest failing rate until they are within ``tolerance_pct`` or ``max_probes`` ran;
3. judges every probe by LoadGen's own verdict (``result_validity``) and by its p99 TTFT/TPOT (or end-to-end
   latency, for gpt-j) against the limits the run itself logged (else the benchmark registry's), each kept
   ``margin_pct`` under its limit (:func:`judge`);
4. confirms the best rate with one full-length run (``confirm_duration_s``), which must be VALID with its p99s
   under the limits; an INVALID one steps down (:func:`step_down`: as far as the probes' p99 slope says its excess
   needs, at most ``step_down_pct``; just under the rate it completed when it was overloaded) and confirms again.

Interactive is LoadGen's Server scenario under the ``-interactive`` LoadGen model (tighter limits).

Every probe is a LoadGen run through the node's runner (``ledger.PartitionRun``: local, SSH, Kubernetes, Docker),
ingested into DuckDB like any run, and one ``qps_search`` row (step, target QPS, verdict, p99s, limits, duration,
run id). A search is identified by everything that shapes it (:func:`search_identity`): running it again with the
same config *resumes* it, replaying the stored steps instead of measuring them again, so Ctrl-C or a lost node
costs at most the probe in flight (and a probe still running on the node is reattached by the ledger).

The package, by layer:

- :mod:`~mlperf_assets.search.algorithm`: pure. :func:`judge`, :class:`Bracket`, :func:`run_search` and
  :func:`step_down` take plain values and callables and are tested directly;
- :mod:`~mlperf_assets.search.settings`: from the config: the LoadGen model and settings of each probe, the
  search's identity, the suggestion;
- :mod:`~mlperf_assets.search.probes`: :class:`ProbePlan` and :class:`RunnerProbes`, the probes through a runner
  and the results store (an argument: the ``store`` resource);
- :mod:`~mlperf_assets.search.node`: :func:`search_node`, one search end to end (no Dagster).

The report's search chart, and leaving the probes out of a node's latest results, live in ``charts`` and the store.
"""

from mlperf_assets.search.algorithm import (
    CONFIRM,
    ESTIMATE,
    FAIL,
    FOUND,
    PASS,
    PROBE,
    RESULT,
    UNCONFIRMED,
    UNREACHABLE,
    Bracket,
    Limits,
    Outcome,
    ProbeFigures,
    SearchError,
    Step,
    Verdict,
    judge,
    run_search,
    step_down,
)
from mlperf_assets.search.node import SearchRun, search_node
from mlperf_assets.search.probes import ProbePlan, RunnerProbes, SearchStore
from mlperf_assets.search.settings import (
    LABELS,
    base_server_settings,
    identity_digest,
    probe_settings,
    search_id_for,
    search_identity,
    search_labels,
    search_lg_model_name,
    suggestion_lines,
    suggestion_path,
    suggestion_yaml,
)

__all__ = [
    "CONFIRM", "ESTIMATE", "FAIL", "FOUND", "LABELS", "PASS", "PROBE", "RESULT", "UNCONFIRMED", "UNREACHABLE",
    "Bracket", "Limits", "Outcome", "ProbeFigures", "ProbePlan", "RunnerProbes", "SearchError", "SearchRun",
    "SearchStore", "Step", "Verdict", "base_server_settings", "identity_digest", "judge", "probe_settings",
    "run_search", "search_id_for", "search_identity", "search_labels", "search_lg_model_name", "search_node",
    "step_down", "suggestion_lines", "suggestion_path", "suggestion_yaml",
]
