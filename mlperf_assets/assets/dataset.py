"""``cnn_dailymail_dataset``: the prepared CNN/DailyMail validation file every run reads (the harness's prepared-dataset format).

The harness's own ``prepare_dataset`` does the work (read the source, subset, template prompts, tokenize,
write atomically); this asset picks the file name, records provenance, and checks the result:
sample count, no empty articles or references, token-length statistics, and whether a full set is the official one.
"""


import statistics
from pathlib import Path
from typing import Any

import dagster as dg

from mlperf_assets.config import HF_DATASET, MlperfConfig, how_to_supply_dataset
from mlperf_assets.harness.benchmarks import FULL_VALIDATION_SIZE
from mlperf_assets.harness.dataset import official_set
from mlperf_assets.plan import prepared_dataset_path
from resources.mlperf_config import MlperfConfigResource

DATASET_KEY = dg.AssetKey("cnn_dailymail_dataset")


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def token_length_stats(lengths: list[int]) -> dict[str, float]:
    """min / mean / p50 / p99 / max of a list of token counts (empty list: zeros)."""
    if not lengths:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0}
    return {
        "min": min(lengths),
        "mean": round(statistics.fmean(lengths), 1),
        "p50": _percentile(lengths, 0.5),
        "p99": _percentile(lengths, 0.99),
        "max": max(lengths),
    }


def expected_sample_count(config: MlperfConfig, source_samples: int | None) -> int | None:
    """How many samples the prepared file must hold: max_samples (capped by the source), else the source size
    (13,368 for the Hugging Face validation split)."""
    ds = config.dataset
    total = source_samples
    if total is None and ds.source == "huggingface" and ds.path is None:
        total = FULL_VALIDATION_SIZE
    if ds.max_samples is None:
        return total
    return min(ds.max_samples, total) if total is not None else ds.max_samples


def _prepare(config: MlperfConfig, out: Path) -> None:
    from mlperf_assets.harness.dataset import prepare_dataset
    from mlperf_assets.harness.errors import HarnessError

    ds = config.dataset
    try:
        prepare_dataset(
            ds.source,
            str(ds.path) if ds.path else None,
            out,
            benchmark=config.benchmark.model,
            tokenizer=config.tokenizer,
            max_samples=ds.max_samples,
            seed=ds.seed,
        )
    except HarnessError as exc:
        text = f"cannot prepare the dataset: {exc}"
        if ds.source == "huggingface" and ds.path is None:
            text = f"cannot load {HF_DATASET} from the Hugging Face hub ({exc}). {how_to_supply_dataset()}"
        raise dg.Failure(description=text, allow_retries=False) from None


@dg.asset(
    key=DATASET_KEY,
    group_name="mlperf",
    kinds={"python", "json"},
    description="CNN/DailyMail validation articles as prompts and token ids (the harness's prepared-dataset file).",
    check_specs=[
        dg.AssetCheckSpec(
            "sample_count", asset=DATASET_KEY, description="Holds exactly the samples the config asks for."
        ),
        dg.AssetCheckSpec("no_empty_articles", asset=DATASET_KEY, description="No empty article, reference or prompt."),
        dg.AssetCheckSpec("token_lengths", asset=DATASET_KEY, description="Prompt/reference token-length statistics."),
        dg.AssetCheckSpec("official_dataset", asset=DATASET_KEY,
                          description="A full set holds as many distinct CNN/DM validation articles (and ids, where "
                                      "kept) as MLPerf's official evaluation set (a warning otherwise)."),
    ],
)
def cnn_dailymail_dataset(
    context: dg.AssetExecutionContext, mlperf_config: MlperfConfigResource
) -> dg.MaterializeResult:
    from mlperf_assets.harness.dataset import load_prepared
    from mlperf_assets.harness.files import sha256_file
    from mlperf_assets.harness.errors import HarnessError

    config = mlperf_config.load()
    out = prepared_dataset_path(config)
    if config.dataset.source != "local":
        where = config.dataset.path or HF_DATASET
        context.log.info(f"preparing {config.dataset.source} {where} -> {out} (tokenizer {config.tokenizer})")
        _prepare(config, out)
    try:
        prepared = load_prepared(out)
    except HarnessError as exc:
        raise dg.Failure(description=f"prepared dataset {out} is unreadable: {exc}", allow_retries=False) from None
    source_samples = prepared.source_samples
    samples = prepared.samples
    n = len(samples)
    expected = expected_sample_count(config, source_samples)
    empty = [
        str(s.get("id", i))
        for i, s in enumerate(samples)
        if not str(s.get("input", "")).strip() or not str(s.get("output", "")).strip() or not s.get("tok_input")
    ]
    official, official_meta = official_set(samples, prepared.benchmark, config.dataset.max_samples)
    if not official:
        context.log.warning(f"{out}: {official_meta['note']}")
    prompt_stats = token_length_stats([len(s["tok_input"]) for s in samples])
    ref_stats = token_length_stats([len(s.get("tok_output") or []) for s in samples])
    checks = [
        dg.AssetCheckResult(
            check_name="sample_count",
            passed=expected is None or n == expected,
            metadata={"samples": n, "expected": expected if expected is not None else "any"},
        ),
        dg.AssetCheckResult(
            check_name="no_empty_articles",
            passed=not empty,
            metadata={"empty": len(empty), "first_empty_ids": ", ".join(empty[:10]) or "none"},
        ),
        dg.AssetCheckResult(
            check_name="token_lengths",
            passed=prompt_stats["min"] > 0 and ref_stats["min"] > 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **{f"prompt_tokens_{k}": float(v) for k, v in prompt_stats.items()},
                **{f"reference_tokens_{k}": float(v) for k, v in ref_stats.items()},
                "tokenizer": prepared.tokenizer_name,
            },
        ),
        dg.AssetCheckResult(check_name="official_dataset", passed=official, severity=dg.AssetCheckSeverity.WARN,
                            metadata=official_meta),
    ]
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(out)),
        "samples": n,
        "source": config.dataset.source,
        "source_path": str(config.dataset.path or HF_DATASET),
        "benchmark": prepared.benchmark,
        "tokenizer": prepared.tokenizer_name,
        "tokenizer_kind": prepared.tokenizer_kind,
        "sha256": sha256_file(out),
        "prompt_tokens_mean": float(prompt_stats["mean"]),
        "prompt_tokens_max": int(prompt_stats["max"]),
    }
    if config.dataset_overridden_by:
        metadata["overridden_by"] = config.dataset_overridden_by
    context.log.info(f"prepared {n} samples in {out}")
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
