"""One shortened MLPerf Endpoints curve, MLCommons' reference client against its echo server, and the client's own
figures printed next to ours (``mlperf_assets/endpoints/results.py``, the Endpoints checker's formulas): they must
agree within 1 %, else the exit code is 1.

    .venv/bin/python benchmarks/endpoints_figures.py [--samples 200] [--concurrency 1 4 16] [--keep DIR]

What runs: the pinned client (``tests/support/endpoints_client.py`` builds or reuses its Python 3.12 venv) with the
100 real CNN/DailyMail articles of ``../shared/testdata`` as its ``cnn_dailymail`` parquet, a locally trained
tokenizer (``tests/support/tiny_llama.py``; the hub is not reachable) for its token counts, one point per
concurrency plus a max-throughput (Offline) point. UNOFFICIAL: an echo server answers with the prompt, each point
issues a few hundred queries instead of 13,368, and no point lasts its 600 s / 1,200 s.

Compared per point: system TPS (client ``tps`` vs ours ``output tokens / duration``), QPS (client ``qps`` vs ours
``completed / duration``), TPOT P90 and TTFT P90 (client's percentiles vs what our reader takes), and
``tps_per_user = 1000 / TPOT P90`` (ours; the client reports none).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

TSV = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "cnndm_test_mini_100.tsv"
TOLERANCE = 0.01
# A chat template for the locally trained tokenizer: the client renders each answer through one to count tokens.
CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"


def write_dataset(venv: Path, work: Path) -> None:
    """``<work>/dataset_cache/cnn_dailymail/cnn_dailymail.parquet`` (article, highlights), where the client's
    ``cnn_dailymail`` loader looks when it runs in ``work``."""
    target = work / "dataset_cache" / "cnn_dailymail" / "cnn_dailymail.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    code = ("import sys, pandas as pd\n"
            "rows = [l.rstrip('\\n').split('\\t') for l in open(sys.argv[1], encoding='utf-8')]\n"
            "pd.DataFrame({'article': [r[0] for r in rows], 'highlights': [r[1] for r in rows]})"
            ".to_parquet(sys.argv[2])\n")
    subprocess.run([str(venv / "bin" / "python"), "-c", code, str(TSV), str(target)], check=True, timeout=120)


def write_tokenizer(work: Path) -> Path:
    from tests.support.tiny_llama import build_tokenizer

    folder = work / "tokenizer"
    build_tokenizer(folder)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = CHAT_TEMPLATE
    config.write_text(json.dumps(data))
    return folder


def client_yaml(url: str, tokenizer: Path, concurrency: int | None, samples: int, report: str) -> dict:
    pattern = {"type": "max_throughput"} if concurrency is None else {"type": "concurrency",
                                                                        "target_concurrency": concurrency}
    return {"name": report, "version": "1.0", "type": "offline" if concurrency is None else "online",
            "model_params": {"name": "echo-model", "tokenizer_name": str(tokenizer), "temperature": 0.0,
                             "max_new_tokens": 128, "streaming": "on"},
            "datasets": [{"name": "cnn_dailymail::llama3_8b", "type": "performance", "parser": {"input": "prompt"}}],
            "settings": {"runtime": {"min_duration_ms": 1000, "n_samples_to_issue": samples,
                                     "scheduler_random_seed": 10487924139932647040,
                                     "dataloader_random_seed": 586478644936801402},
                         "load_pattern": pattern, "client": {"num_workers": 1}},
            "endpoint_config": {"endpoints": [url], "api_type": "openai"},
            "report_dir": report}


def run_point(venv: Path, work: Path, url: str, tokenizer: Path, concurrency: int | None, samples: int) -> Path:
    """Run the client for one point; return a point run folder (the platform's layout) around its report."""
    import yaml

    from mlperf_assets.harness import run_folder as rf

    label = "offline" if concurrency is None else f"c{concurrency}"
    folder = work / "points" / label
    folder.mkdir(parents=True)
    report = folder / rf.CLIENT_REPORT_DIR
    config = folder / rf.CLIENT_YAML
    config.write_text(yaml.safe_dump(client_yaml(url, tokenizer, concurrency, samples, str(report))))
    with open(folder / "client.log", "wb") as log:
        proc = subprocess.run([str(venv / "bin" / "inference-endpoint"), "benchmark", "from-config", "-c",
                               str(config)], cwd=work, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: the client exited with {proc.returncode} (see {folder / 'client.log'})")
    (folder / rf.POINT_MANIFEST).write_text(json.dumps({
        "label": label, "node": "local", "concurrency": concurrency, "role": "offline" if concurrency is None
        else "free", "load_pattern": "max_throughput" if concurrency is None else "concurrency",
        "accuracy": False, "n_samples_to_issue": samples, "benchmark": "llama3_1-8b", "dataset_samples": 100}))
    return folder


def _pct(block: dict, pct: float) -> float | None:
    for key, value in (block or {}).get("percentiles", {}).items():
        if float(key) == pct and value is not None:
            return float(value) / 1e6
    return None


def compare(folder: Path) -> list[tuple[str, float | None, float | None]]:
    """(figure, the client's own, ours) for one point."""
    from mlperf_assets.endpoints.results import read_point

    point = read_point(folder)
    s, row = point.summary, point.row
    ours_qps = row["n_samples_completed"] / row["duration_s"] if row["duration_s"] else None
    return [("system TPS", s.get("tps"), row["system_tps"]), ("QPS", s.get("qps"), ours_qps),
            ("TPOT P90 ms", _pct(s.get("tpot"), 90), row["tpot_p90_ms"]),
            ("TTFT P90 ms", _pct(s.get("ttft"), 90), row["ttft_p90_ms"]),
            ("tps_per_user", None, row["tps_per_user"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="queries per point (default 200)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--keep", type=Path, default=None, help="keep the points in this folder")
    args = parser.parse_args(argv)
    if not TSV.is_file():
        print(f"missing {TSV}: the shared test data sits beside the project in ../shared", file=sys.stderr)
        return 2
    from tests.support.endpoints_client import echo_server, ensure_client

    venv = ensure_client()
    work = args.keep or Path(tempfile.mkdtemp(prefix="ep-figures-"))
    work.mkdir(parents=True, exist_ok=True)
    write_dataset(venv, work)
    tokenizer = write_tokenizer(work)
    worst = 0.0
    print("UNOFFICIAL shortened curve: reference client vs its echo server; the client's figures | ours | diff")
    with echo_server(venv, work / "echo.log") as url:
        for concurrency in [*args.concurrency, None]:
            folder = run_point(venv, work, url, tokenizer, concurrency, args.samples)
            print(f"{folder.name}:")
            for name, theirs, ours in compare(folder):
                if theirs is None or ours is None:
                    print(f"  {name:<13} {'-':>14} | {ours if ours is not None else '-':>14.6g} |")
                    continue
                diff = abs(theirs - ours) / max(abs(theirs), 1e-12)
                worst = max(worst, diff)
                print(f"  {name:<13} {theirs:>14.6g} | {ours:>14.6g} | {diff:.4%}")
    print(f"largest difference {worst:.4%} (must be <= {TOLERANCE:.0%}); points in {work}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
