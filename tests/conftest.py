"""Shared fixtures: the real test data in ../shared/testdata (never copied into the project)."""

from __future__ import annotations

import os
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
def sim_dataset(stories_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 CNN stories, prepared for llama3.1-8b with the byte tokenizer (the sim backend's runs)."""
    from mlperf_assets.harness.dataset import prepare_dataset

    out = tmp_path_factory.mktemp("simds") / "prepared.json"
    return prepare_dataset("stories", stories_dir, out, benchmark="llama3.1-8b", tokenizer="byte", max_samples=20)


@pytest.fixture(scope="module")
def sshd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A private OpenSSH server on 127.0.0.1 (tests/support/sshd.py) for one test module, with a client key it accepts
    (``client_key``; its passphrase is the module's ``SSH_KEY_PASSPHRASE``, none by default) and a known_hosts file
    holding its host key (``known_hosts``). Stopped at the end of the module."""
    from support.sshd import PrivateSSHD, keygen, sshd_available

    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("sshd")
    server = PrivateSSHD(root / "server")
    key = keygen(root / "id_ed25519", passphrase=getattr(request.module, "SSH_KEY_PASSPHRASE", ""))
    server.authorize(Path(f"{key}.pub"))
    server.client_key = key
    server.known_hosts = server.write_known_hosts(root / "known_hosts")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama checkpoint with a locally trained tokenizer (tests/support/tiny_llama.py), built once per session."""
    from support.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.getbasetemp() / "tiny_llama")



# CI sets MLPERF_DAGSTER_STRICT=1: there every real part (../shared, sshd, Chromium, vLLM) is installed, so a test
# that skips is a broken install, not a missing optional tool, and must fail the run instead of passing silently.
STRICT = os.environ.get("MLPERF_DAGSTER_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under MLPERF_DAGSTER_STRICT=1 (CI must run every test): {report.longrepr}"
