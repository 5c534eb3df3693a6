"""The baseline a harness run is compared with: plain ``vllm.LLM.generate`` on the same prompts, with the same engine
arguments and sampling, in a fresh process.

The prompts are exactly the samples LoadGen issued in the harness run (``samples.jsonl``: their QSL indices in file
order, duplicates included), the engine arguments are the ones its ``run_manifest.json`` recorded (the backend's
per-scenario defaults plus the user's), and sampling is the backend's effective MLPerf setting with detokenizing off.
One 2-token warm-up request first (the backend sends one too), then ONE ``LLM.generate`` call; tokens/s = output tokens
/ that call's wall time. Prints one JSON line prefixed ``PLAIN``.

    python benchmarks/gpu/plain_generate.py HARNESS_RUN_FOLDER DATASET
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def plan(run_folder: Path) -> tuple[str, dict, list[int], str]:
    from mlperf_assets.loadgen_logs import parse_samples_jsonl

    manifest = json.loads((run_folder / "run_manifest.json").read_text())
    engine_args = dict(manifest["backend"]["engine_args"])
    model = engine_args.pop("model")
    indices = parse_samples_jsonl(run_folder / "samples.jsonl").qsl_idx
    return model, engine_args, indices, manifest.get("benchmark") or "llama3.1-8b"


def main() -> None:
    run_folder, dataset = Path(sys.argv[1]), sys.argv[2]
    model, engine_args, indices, benchmark = plan(run_folder)

    import vllm

    from mlperf_assets.harness.backends.sampling import effective_sampling
    from mlperf_assets.harness.dataset import load_prepared

    ds = load_prepared(dataset)
    prompts = [{"prompt_token_ids": ds.prompt_token_ids(i)} for i in indices]
    sampling = {**effective_sampling(benchmark, {}), "detokenize": False}
    t_start = time.perf_counter()
    llm = vllm.LLM(model=model, **engine_args)
    t_ready = time.perf_counter()
    llm.generate(prompts[:1], vllm.SamplingParams(**dict(sampling, max_tokens=2, min_tokens=1)), use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, vllm.SamplingParams(**sampling), use_tqdm=False)
    seconds = time.perf_counter() - t0
    lengths = [len(o.outputs[0].token_ids) for o in outs]
    print("PLAIN " + json.dumps({
        "vllm": vllm.__version__, "samples": len(outs), "distinct": len(set(indices)), "output_tokens": sum(lengths),
        "seconds": round(seconds, 3), "tokens_per_s": round(sum(lengths) / seconds, 2),
        "samples_per_s": round(len(outs) / seconds, 3), "min_out": min(lengths), "max_out": max(lengths),
        "prompt_tokens": sum(len(p["prompt_token_ids"]) for p in prompts),
        "engine_start_s": round(t_ready - t_start, 1), "engine_args": {"model": model, **engine_args},
        "sampling": sampling,
    }), flush=True)


if __name__ == "__main__":
    main()
