"""``benchmark.compliance`` takes only the tests the benchmark's LoadGen model lists in the registry
(``LoadGenModel.compliance_tests``, harness/benchmarks.py): TEST06 for gpt-j or llama3.1-8b-edge is refused at load,
one line naming the file and the field, before a run spends a benchmark's time on it (issue 24 G13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import ConfigError, parse_config
from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS

MLC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mlcommons_inference"
pytestmark = pytest.mark.skipif(not (MLC / "compliance" / "TEST06" / "audit.config").is_file(),
                                reason=f"no MLCommons checkout at {MLC} (TEST06's audit.config)")


def _text(tmp_path: Path, model: str, *, lg: str | None = None, compliance: str = "[TEST06]") -> str:
    return ("nodes: [{name: box, runner: local}]\n"
            "dataset: {source: huggingface}\n"
            f"storage: {{artifact_root: '{tmp_path}/art', duckdb_path: '{tmp_path}/r.duckdb'}}\n"
            f"mlcommons_inference: '{MLC}'\n"
            f"benchmark:\n  model: {model}\n  backend: extractive\n  checkpoint: null\n"
            + (f"  lg_model_name: {lg}\n" if lg else "")
            + f"  compliance: {compliance}\n"
            "  scenarios:\n    Offline: {min_duration_ms: 1000}\n")


@pytest.mark.parametrize(("model", "lg"), [(b.name, b.default_lg_model_name) for b in BENCHMARKS.values()]
                         + [("llama3.1-8b", "llama3_1-8b-interactive")])
def test_compliance_follows_the_registry(tmp_path: Path, model: str, lg: str):
    takes = LOADGEN_MODELS[lg].compliance_tests
    text = _text(tmp_path, model, lg=lg if lg != BENCHMARKS[model].default_lg_model_name else None)
    if "TEST06" in takes:
        assert parse_config(text, tmp_path / "c.yaml").benchmark.compliance == ["TEST06"]
        return
    with pytest.raises(ConfigError) as exc:
        parse_config(text, tmp_path / "c.yaml")
    assert exc.value.problems == [f"{tmp_path / 'c.yaml'}: benchmark.compliance: TEST06 does not apply to {lg} "
                                  f"(a {LOADGEN_MODELS[lg].submission_name} submission takes no compliance test)"]


def test_gptj_with_test06_fails_validate_config_in_one_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(_text(tmp_path, "gptj", compliance="[TEST06, TEST06]"))
    proc = subprocess.run([sys.executable, "-m", "mlperf_assets.cli", "validate-config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{path}: benchmark.compliance: TEST06 does not apply to gptj (a gptj-99 "
                                   "submission takes no compliance test)"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
