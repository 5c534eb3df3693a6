"""Shared fixtures: the real test data in ../shared/testdata (never copied into the project)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(PROJECT_ROOT.parent / "shared")
TESTDATA = SHARED / "testdata"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared test data sits beside the project in ../shared (CI provides it)")
    return path


@pytest.fixture(scope="session")
def mlperf_logs_dir() -> Path:
    """Real MLPerf submission logs, with MANIFEST.json / MANIFEST.md of expected values."""
    return _need(TESTDATA / "mlperf_logs")


@pytest.fixture(scope="session")
def cnn_dir() -> Path:
    """Real CNN/DailyMail data: stories/*.story, cnndm_test_mini_100.tsv, cnndm_test_mini_100.bart_output.txt."""
    return _need(TESTDATA / "cnn_dailymail")


@pytest.fixture(scope="session")
def stories_dir(cnn_dir: Path) -> Path:
    return _need(cnn_dir / "stories")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama checkpoint with a locally trained tokenizer (tests/tiny_llama.py), built once per session."""
    from tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.getbasetemp() / "tiny_llama")

