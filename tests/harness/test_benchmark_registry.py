"""harness/benchmarks.py is the one table of per-benchmark facts: it agrees with LoadGen's own mlperf.conf, every
choice and literal derives from it, and a new CNN/DailyMail variant is one entry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets import accuracy
from mlperf_assets.config import ConfigError, parse_config
from mlperf_assets.harness import benchmarks as reg
from mlperf_assets.harness.backends import BACKENDS
from mlperf_assets.harness.backends.sampling import reference_sampling
from mlperf_assets.harness.cli import build_parser
from mlperf_assets.harness.sut import sends_n_tokens, token_dtype

PROJECT = Path(__file__).resolve().parents[2]
NODE = "nodes: [{name: a, runner: local}]\n"


def test_entries_refer_to_each_other_consistently():
    for name, b in reg.BENCHMARKS.items():
        assert reg.LOADGEN_MODELS[b.default_lg_model_name].benchmark == name
        for t in b.accuracy_targets:
            target = reg.ACCURACY_TARGETS[t]
            assert target.family == name and target.dtype == b.token_dtype and target.dataset_size == b.dataset_size
    for m in reg.LOADGEN_MODELS.values():
        assert m.benchmark in reg.BENCHMARKS
        assert reg.accuracy_target(m.submission_name) is not None  # every LoadGen model can be judged


# The mlperf.conf compiled into LoadGen is the outside truth for sample counts and Server limits.
MLPERF_CONF = """\
import json, sys
import mlperf_loadgen as lg
open("empty.conf", "w").close()
ts = lg.TestSettings()
assert ts.FromConfig("empty.conf", sys.argv[1], "Server") == 0
print(json.dumps({"psc": ts.performance_sample_count_override, "ttft": ts.ttft_latency, "tpot": ts.tpot_latency,
                  "target": ts.server_target_latency_ns, "tokens": ts.use_token_latencies}))
"""


@pytest.mark.parametrize("lg_name", list(reg.LOADGEN_MODELS))
def test_loadgen_models_match_loadgen_mlperf_conf(lg_name: str, tmp_path: Path):
    r = subprocess.run([sys.executable, "-c", MLPERF_CONF, lg_name], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout)
    m = reg.LOADGEN_MODELS[lg_name]
    assert conf["psc"] == m.performance_sample_count
    assert conf["tokens"] == m.uses_token_latencies
    limits = m.server_limits_ns()
    if m.ttft_latency_ms is not None:
        assert (conf["ttft"], conf["tpot"]) == (limits["ttft_latency_ns"], limits["tpot_latency_ns"])
    if m.server_target_latency_ms is not None:
        assert conf["target"] == limits["target_latency_ns"]


def test_choices_and_literals_derive_from_the_registries(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    usage = capsys.readouterr().out
    for names in (reg.BENCHMARKS, reg.LOADGEN_MODELS, BACKENDS, reg.SCENARIOS, reg.MODES):
        assert "{" + ",".join(names) + "}" in usage
    path = tmp_path / "c.yaml"
    with pytest.raises(ConfigError) as info:
        parse_config("benchmark: {model: resnet50, lg_model_name: bert, backend: extractive}\n" + NODE, path)
    assert info.value.problems == [
        f"{path}: benchmark.model: must be one of {', '.join(reg.BENCHMARKS)}, got 'resnet50'",
        f"{path}: benchmark.lg_model_name: must be one of {', '.join(reg.LOADGEN_MODELS)}, got 'bert'",
    ]


def test_facts_are_read_from_the_registry():
    assert accuracy.TARGETS is reg.ACCURACY_TARGETS
    for name, b in reg.BENCHMARKS.items():
        assert token_dtype(name) == np.dtype(b.token_dtype).newbyteorder("<")
        assert sends_n_tokens(name) is b.sends_n_tokens
        assert reference_sampling(name) == dict(b.sampling)
        assert accuracy.resolve_target(name) is reg.ACCURACY_TARGETS[b.default_accuracy_target]
    # the hand-checked facts of the MLCommons references
    assert token_dtype("gptj") == np.dtype("<i8") and token_dtype("llama3.1-8b") == np.dtype("<i4")
    assert not sends_n_tokens("gptj") and sends_n_tokens("llama3.1-8b-edge")
    assert reference_sampling("gptj")["min_tokens"] == 30 and reference_sampling("llama3.1-8b")["max_tokens"] == 128
    # interactive is llama3.1-8b under tighter latency limits, judged by the same accuracy rules
    assert accuracy.resolve_target("llama3_1-8b-interactive").benchmark == "llama3.1-8b"
    assert reg.latency_limits_ns("llama3.1-8b-interactive")["ttft_latency_ns"] == 500_000_000


# Registers one variant (a new template, int64 tokens without n_tokens) and nothing else, then prepares a dataset
# and runs an Offline accuracy test with the replay backend through the harness CLI.
VARIANT = textwrap.dedent("""\
    import dataclasses, sys
    from mlperf_assets.harness import benchmarks as reg
    base = reg.BENCHMARKS["llama3.1-8b"]
    reg.BENCHMARKS["cnndm-variant"] = dataclasses.replace(
        base, name="cnndm-variant", prompt_template="Condense: {input}\\nTL;DR:", token_dtype="int64",
        sends_n_tokens=False, default_lg_model_name="cnndm_variant", accuracy_targets=("llama3.1-8b",))
    reg.LOADGEN_MODELS["cnndm_variant"] = reg.LoadGenModel("cnndm_variant", "cnndm-variant", "llama3.1-8b", 13368)
    from mlperf_assets.harness.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def test_a_variant_is_one_entry(stories_dir: Path, tmp_path: Path):
    ds, out = tmp_path / "v.json", tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", VARIANT, "prepare-dataset", "--source", "stories", "--path",
                        str(stories_dir), "--out", str(ds), "--benchmark", "cnndm-variant", "--max-samples", "4"],
                       capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert r.returncode == 0, r.stderr
    samples = json.loads(ds.read_text())  # the prepared file is a list of samples
    assert samples[0]["prompt"] == f"Condense: {samples[0]['input']}\nTL;DR:"
    r = subprocess.run([sys.executable, "-c", VARIANT, "run", "--scenario", "Offline", "--mode", "accuracy",
                        "--backend", "replay", "--dataset", str(ds), "--output-dir", str(out)],
                       capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert (manifest["benchmark"], manifest["lg_model_name"]) == ("cnndm-variant", "cnndm_variant")
    assert "cnndm_variant.Offline.performance_sample_count_override = 4" in (out / "user.conf").read_text()
    log = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert len(log) == 4
    for e in log:
        assert np.frombuffer(bytes.fromhex(e["data"]), "<i8").tolist() == samples[e["qsl_idx"]]["tok_output"]
        assert "token_count" not in e


def test_a_variant_entry_carries_its_orchestrator_side_facts(monkeypatch, tmp_path: Path):
    """Beyond the harness: the compliance tests a submission needs, where MLCommons' evaluation.py sits, and the
    submission's results folder all come from the variant's two rows, with no other table to edit."""
    import dataclasses

    from mlperf_assets.accuracy import AccuracyError, reference_evaluation_argv
    from mlperf_assets.harness import benchmarks as reg
    from mlperf_assets.harness.compliance import required_tests
    from mlperf_assets.submission.tree import result_folder

    base = reg.BENCHMARKS["llama3.1-8b"]
    variant = dataclasses.replace(base, name="cnndm-variant", default_lg_model_name="cnndm_variant",
                                  reference_evaluation_dir="language/cnndm-variant", aliases=())
    model = reg.LoadGenModel("cnndm_variant", "cnndm-variant", "cnndm-variant-99", 6000, compliance_tests=("TEST06",))
    monkeypatch.setitem(reg.BENCHMARKS, variant.name, variant)
    monkeypatch.setitem(reg.LOADGEN_MODELS, model.name, model)
    monkeypatch.setattr(reg, "_SPELLINGS", reg._spellings())

    assert required_tests("cnndm_variant") == ["TEST06"]
    assert required_tests("cnndm-variant-99") == ["TEST06"]
    assert result_folder(model, "Offline") == ("cnndm-variant-99", "Offline")
    # the reference evaluation looks for the variant's own folder in the checkout
    checkout = tmp_path / "inference"
    (checkout / "language" / "llama3.1-8b").mkdir(parents=True)
    (checkout / "language" / "llama3.1-8b" / "evaluation.py").write_text("")
    with pytest.raises(AccuracyError, match="language/cnndm-variant/evaluation.py not found"):
        reference_evaluation_argv(checkout, tmp_path / "log.json", tmp_path / "ds.json", family="cnndm-variant",
                                  tokenizer="byte", dtype="int32", total_samples=4)
