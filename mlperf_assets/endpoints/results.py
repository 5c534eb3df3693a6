"""One MLPerf Endpoints point's run folder -> its figures, computed exactly as the Endpoints checker computes them.

The checker (``endpoints-submission-cli``, ``submission_checker.models.file.point_summary.PointSummary``) derives
every official figure from the client's ``result_summary.json``: ``system_tps = output_sequence_lengths.total /
(duration_ns / 1e9)``, ``tps_per_user = 1000 / tpot_p90_ms`` with ``tpot_p90_ms = tpot.percentiles["90"] / 1e6``
(``"90"`` and ``"90.0"`` are the same key), TTFT percentiles ``/ 1e6``. Where that package is importable its own model
computes them; otherwise the same formulas below do (a test holds the two equal).

Accuracy: the client's own ``accuracy_results.json`` scores, and beside them the same predictions (the accuracy
phase's completed samples in ``events.jsonl``, mapped to dataset rows by ``sample_idx_map.json``) re-scored with
:mod:`mlperf_assets.accuracy` (MLCommons-identical ROUGE; ``gen_len`` in characters) when the references are known.

Pure: no Dagster, no DuckDB. Bad input raises :class:`PointResultsError` with one line naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mlperf_assets.harness import run_folder as rf

RESULT_SUMMARY = "performance/result_summary.json"  # inside a client report folder
ACCURACY_RESULTS = "accuracy/accuracy_results.json"
EVENTS = "events.jsonl"
SAMPLE_IDX_MAP = "sample_idx_map.json"
CLIENT_CONFIG = "config.yaml"
PERFORMANCE_PHASE = "performance"  # the sample_idx_map key of the performance phase
ACCURACY_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len")
SEED_KEYS = ("scheduler_rng_seed", "sample_index_rng_seed", "model_seed")


class PointResultsError(ValueError):
    """A point's run folder cannot be read: one line naming the file and what is wrong."""


@dataclass
class PointResults:
    """``row``: one ``endpoint_points`` row; ``accuracy``: ``endpoint_accuracy`` rows (client's and ours)."""

    row: dict[str, Any]
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    folder: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PointResultsError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise PointResultsError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None


def _percentile(block: Any, pct: float) -> float | None:
    """``block.percentiles[pct]`` whatever the key's spelling (``"90"``, ``"90.0"``), as the checker normalizes it."""
    if not isinstance(block, dict) or not isinstance(block.get("percentiles"), dict):
        return None
    for key, value in block["percentiles"].items():
        try:
            if float(key) == pct and value is not None:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def checker_figures(summary: dict[str, Any]) -> dict[str, float | None]:
    """The official figures of one ``result_summary.json``: from the checker's own ``PointSummary`` model where the
    package is installed, else from the same formulas (:func:`formula_figures`)."""
    try:
        from submission_checker.models.file.point_summary import PointSummary
    except ImportError:
        return formula_figures(summary)
    try:
        s = PointSummary.model_validate(summary)
    except Exception as exc:  # noqa: BLE001 - pydantic's error, or the checker's Invalid: one line either way
        raise PointResultsError(f"result_summary.json: the Endpoints checker cannot read it: "
                                f"{str(exc).splitlines()[0]}") from None
    tpot_p90 = s.tpot_p90_ms
    return {
        "duration_s": s.elapsed_duration_seconds,
        "output_tokens": float(s.total_output_tokens),
        "system_tps": s.system_tps,
        "tpot_p90_ms": tpot_p90,
        "tps_per_user": 1000.0 / tpot_p90 if tpot_p90 and math.isfinite(tpot_p90) and tpot_p90 > 0 else None,
        "ttft_p50_ms": s.ttft_p50_ms,
        "ttft_p90_ms": s.ttft_p90_ms,
    }


def formula_figures(summary: dict[str, Any]) -> dict[str, float | None]:
    """The checker's formulas (``point_summary.py``), for an install without the checker."""
    duration_s = float(summary.get("duration_ns") or 0) / 1e9
    osl = summary.get("output_sequence_lengths") or {}
    tokens = int(float(osl.get("total") or 0)) if isinstance(osl, dict) else 0
    p90 = _percentile(summary.get("tpot"), 90)
    tpot_p90 = None if p90 is None else p90 / 1e6
    return {
        "duration_s": duration_s,
        "output_tokens": float(tokens),
        "system_tps": tokens / duration_s if duration_s > 0 else 0.0,
        "tpot_p90_ms": tpot_p90,
        "tps_per_user": 1000.0 / tpot_p90 if tpot_p90 and math.isfinite(tpot_p90) and tpot_p90 > 0 else None,
        "ttft_p50_ms": (_percentile(summary.get("ttft"), 50) or 0.0) / 1e6,
        "ttft_p90_ms": (_percentile(summary.get("ttft"), 90) or 0.0) / 1e6,
    }


def _ms(block: Any, pct: float) -> float | None:
    value = _percentile(block, pct)
    return None if value is None else value / 1e6


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def report_dirs(folder: Path) -> list[Path]:
    """The client's report folders of a point, performance first."""
    return [d for d in (folder / rf.CLIENT_REPORT_DIR, folder / rf.CLIENT_ACCURACY_DIR) if d.is_dir()]


def accuracy_file(folder: Path) -> Path | None:
    """The client's ``accuracy_results.json`` of the point's accuracy run (its own folder, else the ``--mode both``
    report folder), or None at a point without accuracy."""
    for d in reversed(report_dirs(folder)):
        if (d / ACCURACY_RESULTS).is_file():
            return d / ACCURACY_RESULTS
    return None


def client_accuracy(path: Path) -> list[dict[str, Any]]:
    """The accuracy entries of an ``accuracy_results.json`` other than the performance run's inline score: a list of
    ``{dataset, metric: value..., n_samples}``."""
    data = _read_json(path)
    entries = data.get("accuracy_scores") if isinstance(data, dict) and "accuracy_scores" in data else data
    if isinstance(entries, dict):
        entries = [{"dataset_name": k, **v} for k, v in entries.items() if isinstance(v, dict)]
    if not isinstance(entries, list):
        raise PointResultsError(f"{path}: expected a list of accuracy entries (accuracy_scores)")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("dataset_type") == PERFORMANCE_PHASE:
            continue
        raw_score = entry.get("score")
        if isinstance(raw_score, (int, float, str)) and not isinstance(raw_score, bool):
            raw_score = {"score": raw_score}  # a scorer with one number (string_match, pass_at_1): kept as "score"
        score = raw_score if isinstance(raw_score, dict) else {}
        values = {}
        if "score" in score:
            try:
                values["score"] = float(score["score"])
            except (TypeError, ValueError):
                raise PointResultsError(f"{path}: score = {score['score']!r} is not a number") from None
        for metric in ACCURACY_METRICS:
            raw = next((v for k, v in score.items() if k.lower() == metric.lower()), None)
            try:
                values[metric] = None if raw is None else float(raw)
            except (TypeError, ValueError):
                raise PointResultsError(f"{path}: {metric} = {raw!r} is not a number") from None
        out.append({"dataset": str(entry.get("dataset_name") or ""), "scores": values,
                    "n_samples": _int(entry.get("unit_samples", entry.get("num_samples")))})
    return out


def _model_output_text(data: Any) -> str:
    """``str(TextModelOutput)`` of an events.jsonl ``sample.complete`` payload ``["TextModelOutput", output,
    reasoning, tool_calls]``: reasoning then output, chunks joined (tool calls do not occur for llama)."""
    if not isinstance(data, list) or not data:
        return str(data) if isinstance(data, str) else ""

    def joined(part: Any) -> str:
        if isinstance(part, str):
            return part
        if isinstance(part, list):
            return "".join(p for p in part if isinstance(p, str))
        return ""

    output = data[1] if len(data) > 1 else ""
    reasoning = data[2] if len(data) > 2 else None
    return joined(reasoning) + joined(output)


def _iter_completions(events: Path, wanted: set[str]) -> Iterator[tuple[str, str]]:
    with events.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if '"sample.complete"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise PointResultsError(f"{events}: line {n} is not JSON") from None
            uuid = record.get("sample_uuid")
            if uuid in wanted:
                yield uuid, _model_output_text(record.get("data"))


def accuracy_predictions(report_dir: Path, dataset: str | None = None) -> tuple[str, list[tuple[int, str]]]:
    """``(dataset, [(dataset row, prediction text)])`` of the accuracy phase in one client report folder, from
    ``sample_idx_map.json`` and ``events.jsonl`` exactly as the client's scorer pairs them."""
    index = _read_json(report_dir / SAMPLE_IDX_MAP)
    if not isinstance(index, dict):
        raise PointResultsError(f"{report_dir / SAMPLE_IDX_MAP}: expected an object of phases")
    names = [k for k in index if k != PERFORMANCE_PHASE]
    if dataset is None:
        if not names:
            raise PointResultsError(f"{report_dir / SAMPLE_IDX_MAP}: no accuracy phase in it")
        dataset = names[0]
    mapping = index.get(dataset)
    if not isinstance(mapping, dict):
        raise PointResultsError(f"{report_dir / SAMPLE_IDX_MAP}: no phase {dataset!r}")
    events = report_dir / EVENTS
    if not events.is_file():
        raise PointResultsError(f"{events}: missing")
    pairs = [(int(mapping[u]), text) for u, text in _iter_completions(events, set(mapping))]
    return dataset, sorted(pairs, key=lambda p: p[0])


def rescore(report_dir: Path, references: Sequence[str], dataset: str | None = None) -> dict[str, Any]:
    """Our MLCommons-identical ROUGE of the accuracy phase's predictions against ``references`` (the dataset's
    highlights, by row): the dict ``evaluation.py`` prints (``gen_len`` in characters)."""
    from mlperf_assets.accuracy import score_texts

    _, pairs = accuracy_predictions(report_dir, dataset)
    if not pairs:
        raise PointResultsError(f"{report_dir / EVENTS}: no completed accuracy samples to score")
    bad = [i for i, _ in pairs if not 0 <= i < len(references)]
    if bad:
        raise PointResultsError(f"{report_dir / SAMPLE_IDX_MAP}: sample index {bad[0]} is outside the "
                                f"{len(references)} references")
    return score_texts([t for _, t in pairs], [references[i] for i, _ in pairs], quoted=False)


def _accuracy_rows(run_id: str, source: str, dataset: str, scores: dict[str, Any], n_samples: int | None,
                   ) -> list[dict[str, Any]]:
    from mlperf_assets.accuracy import resolve_target

    limits = resolve_target("llama3.1-8b").thresholds()
    rows = []
    for metric in [*ACCURACY_METRICS, *(m for m in scores if m not in (*ACCURACY_METRICS, "gen_num"))]:
        value = scores.get(metric)
        if value is None:
            continue
        low, high = limits.get(metric, (None, None))
        passed = None if low is None else bool(float(value) >= low and (high is None or float(value) <= high))
        rows.append({"run_id": run_id, "source": source, "dataset": dataset, "metric": metric,
                     "value": float(value), "target_min": low, "target_max": high, "passed": passed,
                     "n_samples": n_samples})
    return rows


def _energy(run_manifest: dict[str, Any], output_tokens: int | None) -> dict[str, float | None]:
    """GPU energy of the point (its run manifest's telemetry, NVML) and joules per output token; None without."""
    telemetry = run_manifest.get("telemetry") if isinstance(run_manifest.get("telemetry"), dict) else {}
    energy = telemetry.get("energy_j")
    if not isinstance(energy, (int, float)) or isinstance(energy, bool) or not math.isfinite(energy) or energy <= 0:
        return {"gpu_energy_j": None, "energy_j_per_token": None}
    return {"gpu_energy_j": float(energy),
            "energy_j_per_token": float(energy) / output_tokens if output_tokens else None}


def _steady_state(folder: Path) -> dict[str, Any]:
    path = folder / rf.STEADY_STATE
    if not path.is_file():
        return {}
    data = _read_json(path)
    return data if isinstance(data, dict) else {}


def read_point(folder: str | Path, *, references: Sequence[str] | None = None) -> PointResults:
    """Everything one point's run folder says, as ``endpoint_points`` / ``endpoint_accuracy`` rows.

    ``references``: the dataset's reference summaries by row (the accuracy re-score needs them); without them (and
    without a ``dataset_path`` in the point manifest) only the client's own accuracy is recorded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PointResultsError(f"{folder}: not a folder")
    manifest = _read_json(folder / rf.POINT_MANIFEST)
    if not isinstance(manifest, dict):
        raise PointResultsError(f"{folder / rf.POINT_MANIFEST}: expected a JSON object")
    summary_path = folder / rf.CLIENT_REPORT_DIR / RESULT_SUMMARY
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise PointResultsError(f"{summary_path}: expected a JSON object")
    try:
        figures = checker_figures(summary)
    except PointResultsError as exc:
        raise PointResultsError(f"{summary_path}: {str(exc).split(': ', 1)[-1]}") from None
    run_manifest = rf.read_manifest(folder)
    run_id = str(run_manifest.get("run_id") or manifest.get("run_id") or folder.name)
    steady = _steady_state(folder)
    seeds = manifest.get("seeds") if isinstance(manifest.get("seeds"), dict) else {}
    client = manifest.get("client") if isinstance(manifest.get("client"), dict) else {}
    server = manifest.get("server") if isinstance(manifest.get("server"), dict) else {}
    window = steady.get("window") if isinstance(steady.get("window"), dict) else {}
    row: dict[str, Any] = {
        "run_id": run_id,
        "label": manifest.get("label"),
        "node": manifest.get("node"),
        "benchmark": manifest.get("benchmark"),
        "concurrency": _int(manifest.get("concurrency")),
        "load_pattern": manifest.get("load_pattern"),
        "region": manifest.get("region"),
        "role": manifest.get("role"),
        "official": manifest.get("official") is not False,
        "accuracy_point": bool(manifest.get("accuracy")),
        "n_samples_issued": _int(summary.get("n_samples_issued")),
        "n_samples_completed": _int(summary.get("n_samples_completed")),
        "n_samples_failed": _int(summary.get("n_samples_failed")),
        "duration_ns": _int(summary.get("duration_ns")),
        "duration_s": figures["duration_s"],
        "output_tokens": _int(figures["output_tokens"]),
        "system_tps": figures["system_tps"],
        "tps_per_user": figures["tps_per_user"],
        "qps": float(summary["qps"]) if isinstance(summary.get("qps"), (int, float)) else None,
        "client_tps": float(summary["tps"]) if isinstance(summary.get("tps"), (int, float)) else None,
        "tpot_p50_ms": _ms(summary.get("tpot"), 50),
        "tpot_p90_ms": figures["tpot_p90_ms"],
        "tpot_p99_ms": _ms(summary.get("tpot"), 99),
        "ttft_p50_ms": _ms(summary.get("ttft"), 50),
        "ttft_p90_ms": _ms(summary.get("ttft"), 90),
        "ttft_p99_ms": _ms(summary.get("ttft"), 99),
        "latency_p90_ms": _ms(summary.get("latency"), 90),
        "steady_state_status": steady.get("status"),
        "steady_state_verdict": steady.get("verdict"),
        "steady_state_window_s": float(window["duration_s"]) if isinstance(window.get("duration_s"), (int, float))
        else None,
        "seed_set": manifest.get("seed_set") or seeds.get("seed_set"),
        **{key: _int(seeds.get(key)) for key in SEED_KEYS},
        "client_commit": client.get("commit"),
        "client_version": client.get("version") or summary.get("version"),
        "client_git_sha": summary.get("git_sha"),
        "server_url": server.get("url"),
        "server_model": server.get("model"),
        **_energy(run_manifest, _int(figures["output_tokens"])),
        "run_folder": str(folder.resolve()),
    }
    accuracy: list[dict[str, Any]] = []
    acc_path = accuracy_file(folder)
    if acc_path is not None:
        entries = client_accuracy(acc_path)
        for entry in entries:
            accuracy += _accuracy_rows(run_id, "client", entry["dataset"], entry["scores"], entry["n_samples"])
        refs = references if references is not None else _manifest_references(manifest, folder)
        if refs is not None:
            report_dir = acc_path.parent.parent
            dataset, pairs = accuracy_predictions(report_dir, entries[0]["dataset"] if entries else None)
            ours = rescore(report_dir, refs, dataset)
            accuracy += _accuracy_rows(run_id, "ours", dataset, ours, int(ours["gen_num"]))
    return PointResults(row=row, accuracy=accuracy, folder=folder, manifest=manifest, summary=summary)


def _manifest_references(manifest: dict[str, Any], folder: Path) -> list[str] | None:
    """The reference summaries named by the point manifest's ``dataset_path`` (the parquet the client read:
    ``<datasets_dir>/cnn_dailymail/cnn_dailymail.parquet``, column ``highlights``); None when it names none."""
    path = manifest.get("dataset_path")
    if not path:
        return None
    return load_references(Path(path) if Path(path).is_absolute() else folder / path)


def load_references(path: Path, column: str = "highlights") -> list[str]:
    """The ``column`` of the client's CNN/DailyMail parquet, by row."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise PointResultsError(f"{path}: reference dataset missing")
    try:
        table = pq.read_table(path, columns=[column])
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common base worth naming
        raise PointResultsError(f"{path}: cannot read column {column!r}: {str(exc).splitlines()[0]}") from None
    return [str(v) for v in table.column(column).to_pylist()]
