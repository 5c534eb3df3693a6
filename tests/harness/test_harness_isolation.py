"""The node side stands alone: every harness module imports, and the harness prepares a dataset and runs LoadGen end
to end, in processes where the orchestrator's modules and libraries cannot be imported at all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# What a GPU node does not have: the orchestrator's packages and its CLI/config modules.
BLOCKED = ("dagster", "dagster_k8s", "dagster_webserver", "duckdb", "paramiko", "plotly", "pandas", "matplotlib",
           "yaml", "pydantic", "kubernetes", "resources", "jobs", "mlperf_assets.cli", "mlperf_assets.config",
           "mlperf_assets.commands", "mlperf_assets.assets", "mlperf_assets.store", "mlperf_assets.charts")

# Runs argv[1:] as python code after installing a meta-path finder that refuses the blocked modules and writes
# every attempt to $ATTEMPTS (so an import hidden behind `except ImportError` is still seen).
PRELUDE = textwrap.dedent("""\
    import importlib.abc, os, sys
    BLOCKED = {blocked!r}
    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                with open(os.environ["ATTEMPTS"], "a") as fh:
                    fh.write(name + "\\n")
                raise ImportError(f"{{name}} is blocked: not on a GPU node")
            return None
    sys.meta_path.insert(0, Refuse())
    """).format(blocked=BLOCKED)


def _python(tmp_path: Path, code: str, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    attempts = tmp_path / "attempts.txt"
    attempts.write_text("")
    r = subprocess.run([sys.executable, "-c", PRELUDE + code, *args], capture_output=True, text=True, cwd=PROJECT,
                       timeout=300, env={**__import__("os").environ, "ATTEMPTS": str(attempts)})
    return r, attempts.read_text().split()


def test_the_blocker_blocks(tmp_path: Path):
    r, attempts = _python(tmp_path, "import yaml")
    assert r.returncode != 0 and "yaml is blocked" in r.stderr and attempts == ["yaml"]


def test_every_harness_module_imports_without_the_orchestrator(tmp_path: Path):
    code = textwrap.dedent("""\
        import importlib, pkgutil
        import mlperf_assets.harness as h
        names = [m.name for m in pkgutil.walk_packages(h.__path__, "mlperf_assets.harness.")
                 if not m.name.endswith(".__main__")]  # (that one runs the CLI)
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """)
    r, attempts = _python(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert attempts == []
    assert int(r.stdout.strip()) >= 15  # cli, args, run, settings, benchmarks, dataset, sut, backends.*, ...


def test_prepare_and_run_end_to_end_without_the_orchestrator(tmp_path: Path, stories_dir: Path):
    main = "import sys\nfrom mlperf_assets.harness.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    dataset = tmp_path / "ds.json"
    r, attempts = _python(tmp_path, main, "prepare-dataset", "--source", "stories", "--path", str(stories_dir),
                          "--out", str(dataset), "--max-samples", "6")
    assert r.returncode == 0, r.stderr
    assert attempts == [] and len(json.loads(dataset.read_text())) == 6

    out = tmp_path / "run"
    r, attempts = _python(tmp_path, main, "run", "--scenario", "Offline", "--mode", "performance", "--backend",
                          "extractive", "--dataset", str(dataset), "--output-dir", str(out), "--min-duration-ms", "100",
                          "--min-query-count", "12", "--progress-interval-s", "0.1")
    assert r.returncode == 0, r.stderr
    assert attempts == []
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "completed" and manifest["backend"]["name"] == "extractive"
    assert "Result is" in (out / "mlperf_log_summary.txt").read_text()
