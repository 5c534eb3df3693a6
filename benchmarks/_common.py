"""Shared bits of the harness benchmarks: a synthetic prepared dataset, a minimal LoadGen SUT, log reading."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def write_synthetic_dataset(path: Path, samples: int, output_tokens: int = 128, prompt_tokens: int = 800) -> Path:
    """A prepared file of the harness format with made-up token ids (the harness's cost does not depend on text)."""
    rng = random.Random(0)
    doc = {
        "format": "mlperf-dagster-cnndm/1", "benchmark": "llama3.1-8b", "tokenizer": "byte", "tokenizer_kind": "byte",
        "source": "synthetic",
        "samples": [
            {"id": str(i), "input": "x", "prompt": "x", "output": "y",
             "tok_input": [rng.randrange(256) for _ in range(prompt_tokens)],
             "tok_output": [rng.randrange(256) for _ in range(output_tokens)]}
            for i in range(samples)
        ],
    }
    path.write_text(json.dumps(doc))
    return path


MINIMAL_SUT = textwrap.dedent("""\
    # The lower bound for any Python SUT: complete every sample at once, in LoadGen's issue thread, pointing at one
    # static buffer of N int32 tokens with n_tokens (and a first token outside Offline).
    import array, os, sys
    import mlperf_loadgen as lg
    user_conf, model, scenario, out, total, psc, ntok = sys.argv[1:8]
    ntok = int(ntok)
    buf = array.array("i", range(ntok)); ptr, _ = buf.buffer_info(); size = ntok * 4
    os.chdir(out)
    ts = lg.TestSettings(); assert ts.FromConfig(user_conf, model, scenario) == 0
    ts.scenario = getattr(lg.TestScenario, scenario); ts.mode = lg.TestMode.PerformanceOnly
    ts.performance_sample_count_override = int(psc)
    QSR = lg.QuerySampleResponse
    if scenario == "Offline":
        def issue(ids, indices):  # in chunks: LoadGen handles mid-sized completion calls faster than one huge one
            for i in range(0, len(ids), 2048):
                lg.QuerySamplesComplete([QSR(r, ptr, size, ntok) for r in ids[i:i + 2048]])
    else:
        def issue(ids, indices):
            for r in ids:
                lg.FirstTokenComplete([QSR(r, ptr, 4)])
                lg.QuerySamplesComplete([QSR(r, ptr, size, ntok)])
    sut = lg.ConstructFastSUT(issue, lambda: None)  # the fastest Python binding: plain lists of ids and indices
    qsl = lg.ConstructQSL(int(total), int(psc), lambda s: None, lambda s: None)
    ls = lg.LogSettings(); ls.log_output.outdir = out; ls.enable_trace = False
    lg.StartTestWithLogSettings(sut, qsl, ts, ls)
    lg.DestroyQSL(qsl); lg.DestroySUT(sut)
    """)


def run_minimal_sut(out: Path, user_conf_text: str, model: str, scenario: str, total: int, psc: int,
                    ntok: int = 128) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    conf = out / "user.conf"
    conf.write_text(user_conf_text)
    subprocess.run([PYTHON, "-c", MINIMAL_SUT, str(conf), model, scenario, str(out), str(total), str(psc), str(ntok)],
                   check=True)
    return detail(out)


def run_harness(out: Path, *args: str) -> dict:
    cmd = [PYTHON, "-m", "mlperf_assets.harness", "run", "--output-dir", str(out), "--overwrite", *args]
    env = dict(os.environ, PYTHONPATH=str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(cmd, check=True, cwd=PROJECT, env=env)
    return detail(out)


def detail(out: Path) -> dict:
    """Last value of each key in mlperf_log_detail.txt."""
    values = {}
    for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            rec = json.loads(line[len(":::MLLOG "):])
            values[rec["key"]] = rec["value"]
    return values
