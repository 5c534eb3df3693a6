"""What the harness tests that run the ``sim`` backend share: the engine they model and its flags. The 20-story
prepared dataset they run on is the session fixture ``sim_dataset`` (conftest.py)."""

from __future__ import annotations

# A continuous-batching server far faster than LoadGen needs: runs end in seconds, and every figure is modelled.
SIM_ENGINE = {"max_num_seqs": 512, "prefill_tokens_per_s": 2e7, "decode_step_ms": 10, "decode_ms_per_seq": 0.05,
              "output_tokens": 16}


def engine_flags(engine: dict) -> list[str]:
    return [x for k, v in engine.items() for x in ("--engine-arg", f"{k}={v}")]
