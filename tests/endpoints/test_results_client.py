"""The real reference client's report, read by our results reader: one echo point, figures equal to the client's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.endpoints_figures import TSV, compare, run_point, write_dataset, write_tokenizer
from tests.support.endpoints_client import echo_server, ensure_client


@pytest.mark.skipif(not TSV.is_file(), reason=f"{TSV} is absent (../shared/testdata)")
def test_real_client_point_reads_as_the_client_reports(tmp_path: Path) -> None:
    venv = ensure_client()
    write_dataset(venv, tmp_path)
    tokenizer = write_tokenizer(tmp_path)
    with echo_server(venv, tmp_path / "echo.log") as url:
        folder = run_point(venv, tmp_path, url, tokenizer, 4, 100)
    figures = {name: (theirs, ours) for name, theirs, ours in compare(folder)}
    for name in ("system TPS", "QPS", "TPOT P90 ms", "TTFT P90 ms"):
        theirs, ours = figures[name]
        assert theirs is not None and ours == pytest.approx(theirs, rel=1e-9), name
    assert figures["tps_per_user"][1] == pytest.approx(1000 / figures["TPOT P90 ms"][0])
