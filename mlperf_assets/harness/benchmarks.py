"""The one table of per-benchmark facts (like MLCommons' ``MODEL_CONFIG``): names, LoadGen model names, prompt
template, token dtype, ``n_tokens``, reference sampling, sample counts, accuracy targets and latency limits.

Everything that differs between benchmarks is read from here: the harness CLI's choices, the config's literals, the
prompt builder, the SUT's response packing, the accuracy evaluation, the store's name normalisation and the charts'
limit lines. Adding a CNN/DailyMail variant is one ``Benchmark`` entry (and its LoadGen model names).

Sources: ``reference/mlperf_inference_llm_spec.md`` (mlperf.conf values, checker constants, reference scripts).
Pure data: imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SCENARIOS = ("Offline", "Server", "SingleStream")
MODES = ("performance", "accuracy")

LLAMA_TEMPLATE = (
    "Summarize the following news article in 128 tokens. Please output the summary only, without any other text."
    "\n\nArticle:\n{input}\n\nSummary:"
)
GPTJ_INSTRUCTION = "Summarize the following news article:"
GPTJ_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)

HF_DATASET = ("abisee/cnn_dailymail", "3.0.0", "validation")
FULL_VALIDATION_SIZE = 13368

# language/llama3.1-8b/SUT_VLLM.py: greedy, 128 new tokens at most, the model's own EOS ends a summary.
LLAMA_SAMPLING: Mapping[str, Any] = {
    "temperature": 0.0, "top_p": 1.0, "top_k": 1, "seed": 42, "max_tokens": 128, "min_tokens": 1,
}
# gpt-j's reference is beam search (num_beams=4, min_new_tokens=30); the backends here decode greedily with the same
# length limits, which is fine for smoke tests but not a closed-division gpt-j result.
GPTJ_SAMPLING: Mapping[str, Any] = {**LLAMA_SAMPLING, "min_tokens": 30}


@dataclass(frozen=True)
class AccuracyTarget:
    """Accuracy rules of one submission benchmark (MLCommons ``submission_checker/constants.py``)."""

    benchmark: str  # submission name
    family: str  # harness benchmark name (``Benchmark.name``)
    reference: Mapping[str, float]  # reference ROUGE scores the thresholds are fractions of
    fraction: float  # 0.99 or 0.999
    gen_len_reference: int
    gen_len_max_fraction: float | None  # upper bound (llama only)
    dataset_size: int
    dtype: str  # token id dtype of the accuracy log
    quoted_scores: bool  # the reference script prints scores as strings
    gen_len_min_fraction: float = 0.9

    def thresholds(self) -> dict[str, tuple[float, float | None]]:
        """metric -> (minimum, maximum or None), computed as the checker computes them."""
        out: dict[str, tuple[float, float | None]] = {m: (v * self.fraction, None) for m, v in self.reference.items()}
        upper = self.gen_len_reference * self.gen_len_max_fraction if self.gen_len_max_fraction else None
        out["gen_len"] = (self.gen_len_reference * self.gen_len_min_fraction, upper)
        return out


@dataclass(frozen=True)
class LoadGenModel:
    """One LoadGen model name and the mlperf.conf values compiled into LoadGen for it."""

    name: str  # e.g. "llama3_1-8b-interactive"
    benchmark: str  # harness benchmark (``Benchmark.name``) whose prompts and dtype it uses
    submission_name: str  # the checker's benchmark name for results under it
    performance_sample_count: int  # performance_sample_count_override
    server_scenario_label: str = "Server"  # how MLPerf names its Server runs ("Interactive" for -interactive)
    # Server limits (ms, as in mlperf.conf); None = not judged this way
    ttft_latency_ms: float | None = None
    tpot_latency_ms: float | None = None
    server_target_latency_ms: float | None = None
    uses_token_latencies: bool = True
    # the compliance tests a submission of it needs (the checker's models_TESTxx lists; names of
    # harness/compliance.py's COMPLIANCE_TESTS)
    compliance_tests: tuple[str, ...] = ()

    def server_limits_ns(self) -> dict[str, int | None]:
        """The Server limits in ns, as LoadGen logs them (``ttft_latency``, ``tpot_latency``, ``target_latency``)."""
        def ns(ms: float | None) -> int | None:
            return None if ms is None else int(ms * 1_000_000)
        return {"ttft_latency_ns": ns(self.ttft_latency_ms), "tpot_latency_ns": ns(self.tpot_latency_ms),
                "target_latency_ns": ns(self.server_target_latency_ms)}


@dataclass(frozen=True)
class Benchmark:
    """One CNN/DailyMail benchmark as the harness runs it."""

    name: str  # harness / config name
    prompt_template: str  # ``{input}`` (and ``{instruction}``) are filled in
    instruction: str | None  # gpt-j's Alpaca instruction; None for llama
    max_prompt_tokens: int | None  # the reference truncates gpt-j prompts; None = no limit
    token_dtype: str  # numpy dtype of response token ids, as the reference evaluation decodes them
    sends_n_tokens: bool  # every completion carries n_tokens (the llama reference does; gpt-j's does not)
    sampling: Mapping[str, Any]  # reference generation settings
    dataset_size: int  # samples in the official evaluation set
    reference_tokenizer: str  # HF model whose tokenizer made the official files
    default_lg_model_name: str
    accuracy_targets: tuple[str, ...]  # submission names, strictest last (gptj-99, gptj-99.9)
    # the MLPerf round whose checker (``--version``) judges its results and whose tree layout they are written in:
    # the newest round that lists the benchmark (submission_checker/constants.py MODEL_CONFIG)
    submission_round: str
    # where MLCommons' reference evaluation.py sits in a checkout of mlcommons/inference (accuracy
    # --reference-evaluation)
    reference_evaluation_dir: str
    aliases: tuple[str, ...] = field(default=())  # other spellings seen in submissions and logs
    # the reference tokenizer's EOS (what TEST06 counts at the end of an output): Llama 3.1 Instruct's <|eot_id|>
    eos_token_id: int = 128009
    # the model's weights fit one GPU: a config's `parallelism: auto` runs one engine replica per GPU (data
    # parallelism) on a multi-GPU node; a model that does not is split across the node's GPUs (tensor parallelism)
    fits_one_gpu: bool = True

    @property
    def default_accuracy_target(self) -> str:
        return self.accuracy_targets[0]

    @property
    def dataset_metadata(self) -> Any:
        """What the prepared file records as the prompt instruction (the cnn_eval.json ``instruction`` field)."""
        return self.instruction if self.instruction is not None else {"llama": self.prompt_template}

    def format_prompt(self, article: str) -> str:
        if self.instruction is not None:
            return self.prompt_template.format(instruction=self.instruction, input=article)
        return self.prompt_template.format(input=article)

    def truncate_prompt(self, ids: list[int]) -> list[int]:
        return ids[: self.max_prompt_tokens] if self.max_prompt_tokens else ids

    @property
    def prompt_format(self) -> tuple[str, str | None, int | None]:
        """What a prepared dataset's prompts depend on: benchmarks with equal formats can share one file."""
        return (self.prompt_template, self.instruction, self.max_prompt_tokens)


_LLAMA_COMMON: dict[str, Any] = dict(
    prompt_template=LLAMA_TEMPLATE, instruction=None, max_prompt_tokens=None, token_dtype="int32",
    sends_n_tokens=True, sampling=LLAMA_SAMPLING, reference_tokenizer="meta-llama/Llama-3.1-8B-Instruct",
    submission_round="v6.1", reference_evaluation_dir="language/llama3.1-8b",
)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(name="llama3.1-8b", dataset_size=FULL_VALIDATION_SIZE, default_lg_model_name="llama3_1-8b",
                  accuracy_targets=("llama3.1-8b",), aliases=("llama3_1-8b",), **_LLAMA_COMMON),
        Benchmark(name="llama3.1-8b-edge", dataset_size=5000, default_lg_model_name="llama3_1-8b-edge",
                  accuracy_targets=("llama3.1-8b-edge",), aliases=("llama3_1-8b-edge",), **_LLAMA_COMMON),
        Benchmark(name="gptj", prompt_template=GPTJ_TEMPLATE, instruction=GPTJ_INSTRUCTION, max_prompt_tokens=1919,
                  token_dtype="int64", sends_n_tokens=False, sampling=GPTJ_SAMPLING,
                  dataset_size=FULL_VALIDATION_SIZE, reference_tokenizer="EleutherAI/gpt-j-6b",
                  default_lg_model_name="gptj", accuracy_targets=("gptj-99", "gptj-99.9"), aliases=("gpt-j",),
                  submission_round="v5.0", reference_evaluation_dir="language/gpt-j", eos_token_id=50256),
    )
}

LOADGEN_MODELS: dict[str, LoadGenModel] = {
    m.name: m
    for m in (
        LoadGenModel("llama3_1-8b", "llama3.1-8b", "llama3.1-8b", 13368, ttft_latency_ms=2000, tpot_latency_ms=100,
                     compliance_tests=("TEST06",)),
        LoadGenModel("llama3_1-8b-edge", "llama3.1-8b-edge", "llama3.1-8b-edge", 5000),
        LoadGenModel("llama3_1-8b-interactive", "llama3.1-8b", "llama3.1-8b-interactive", 13368,
                     server_scenario_label="Interactive", ttft_latency_ms=500, tpot_latency_ms=30,
                     compliance_tests=("TEST06",)),
        LoadGenModel("gptj", "gptj", "gptj-99", 13368, server_target_latency_ms=20000, uses_token_latencies=False),
    )
}

_LLAMA_REF = {"rouge1": 38.7792, "rouge2": 15.9075, "rougeL": 24.4957, "rougeLsum": 35.793}
_GPTJ_REF = {"rouge1": 42.9865, "rouge2": 20.1235, "rougeL": 29.9881}
_LLAMA_ACC: dict[str, Any] = dict(fraction=0.99, gen_len_max_fraction=1.1, dtype="int32", quoted_scores=True)
_GPTJ_ACC: dict[str, Any] = dict(family="gptj", reference=_GPTJ_REF, gen_len_reference=4016878,
                                 gen_len_max_fraction=None, dataset_size=13368, dtype="int64", quoted_scores=False)

ACCURACY_TARGETS: dict[str, AccuracyTarget] = {
    t.benchmark: t
    for t in (
        # (llama3.1-8b-interactive is llama3.1-8b under tighter latency limits: it is judged by these rules too,
        # through its LoadGen model's benchmark; see accuracy_target.)
        AccuracyTarget(benchmark="llama3.1-8b", family="llama3.1-8b", reference=_LLAMA_REF,
                       gen_len_reference=8167644, dataset_size=13368, **_LLAMA_ACC),
        AccuracyTarget(benchmark="llama3.1-8b-edge", family="llama3.1-8b-edge",
                       reference={"rouge1": 39.06, "rouge2": 16.1147, "rougeL": 24.6375, "rougeLsum": 36.124},
                       gen_len_reference=3051113, dataset_size=5000, **_LLAMA_ACC),
        AccuracyTarget(benchmark="gptj-99", fraction=0.99, **_GPTJ_ACC),
        AccuracyTarget(benchmark="gptj-99.9", fraction=0.999, **_GPTJ_ACC),
    )
}

BENCHMARK_NAMES = tuple(BENCHMARKS)
LG_MODEL_NAMES = tuple(LOADGEN_MODELS)
# What a bare MLCommons cnn_eval.json is taken for, and what prepare-dataset makes unless told.
DEFAULT_BENCHMARK = "llama3.1-8b"


def _spellings() -> dict[str, str]:
    """Every known spelling (lower case) -> the canonical submission name."""
    out: dict[str, str] = {}
    for t in ACCURACY_TARGETS:
        out[t.lower()] = t
    for m in LOADGEN_MODELS.values():
        out.setdefault(m.submission_name.lower(), m.submission_name)
        out.setdefault(m.name.lower(), m.submission_name)
    for b in BENCHMARKS.values():
        for alias in (b.name, *b.aliases):
            out.setdefault(alias.lower(), b.default_accuracy_target)
    return out


_SPELLINGS = _spellings()


def known_spellings() -> list[str]:
    """The names :func:`submission_name` knows, for error messages: submission names first."""
    names = [*ACCURACY_TARGETS, *(m.submission_name for m in LOADGEN_MODELS.values()), *LOADGEN_MODELS,
             *(a for b in BENCHMARKS.values() for a in (b.name, *b.aliases))]
    return list(dict.fromkeys(names))


def submission_name(name: object) -> str | None:
    """The checker's benchmark name for any spelling seen in logs, folders and configs (``llama3_1-8b`` ->
    ``llama3.1-8b``, ``gptj`` -> ``gptj-99``, ``llama3_1-8b-interactive`` -> ``llama3.1-8b-interactive``);
    None when it is not a benchmark of this table (llama2-70b, mixtral, ...)."""
    if name is None:
        return None
    text = str(name).strip().lower()
    if text in _SPELLINGS:
        return _SPELLINGS[text]
    # folder spellings such as "llama3_1_8b" or "Llama3.1-8B"
    relaxed = text.replace("_", ".").replace("llama3.1.8b", "llama3.1-8b")
    return _SPELLINGS.get(relaxed)


def benchmark(name: str) -> Benchmark:
    """The harness benchmark called ``name`` (KeyError-free callers check ``name in BENCHMARKS`` first)."""
    return BENCHMARKS[name]


def loadgen_model(name: str) -> LoadGenModel:
    return LOADGEN_MODELS[name]


def accuracy_target(name: object) -> AccuracyTarget | None:
    """The accuracy rules for any spelling of a benchmark, or None when unknown. A submission name without rules of
    its own (``llama3.1-8b-interactive``) is judged by its LoadGen model's benchmark."""
    canonical = submission_name(name)
    if canonical is None:
        return None
    if canonical in ACCURACY_TARGETS:
        return ACCURACY_TARGETS[canonical]
    for m in LOADGEN_MODELS.values():
        if m.submission_name == canonical:
            return ACCURACY_TARGETS[BENCHMARKS[m.benchmark].default_accuracy_target]
    return None


def latency_limits_ns(name: object) -> dict[str, int | None] | None:
    """Server limits in ns for a LoadGen model name or any benchmark spelling (None when unknown).

    A submission name maps to the LoadGen model of that name's Server runs (``llama3.1-8b-interactive`` gets the
    interactive limits)."""
    if name is None:
        return None
    text = str(name).strip()
    if text in LOADGEN_MODELS:
        return LOADGEN_MODELS[text].server_limits_ns()
    canonical = submission_name(text)
    for m in LOADGEN_MODELS.values():
        if m.submission_name == canonical:
            return m.server_limits_ns()
    target = ACCURACY_TARGETS.get(canonical) if canonical else None
    if target is None:
        return None
    return LOADGEN_MODELS[BENCHMARKS[target.family].default_lg_model_name].server_limits_ns()
