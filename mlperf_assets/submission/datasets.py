"""Whether a result's prepared dataset is MLPerf's official evaluation set, for the tree's README and the submission
command. The run manifest names the file the harness read (its path on the node, and its sha256); the file is found
here by that path or by its name in the config's dataset folder (a remote node's copy of a file prepared here), and
used only when its sha256 is the manifest's. Pure: no Dagster, no DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from mlperf_assets.harness.dataset import load_prepared, official_set
from mlperf_assets.harness.errors import HarnessError
from mlperf_assets.harness.files import sha256_file


class DatasetNotes:
    """``note(manifest, benchmark)``: why a run's dataset is not the official set of ``benchmark`` (a line for the
    README), or None when it is, when the run used a subset (a smoke set by choice, said elsewhere), or when no
    file of the manifest's sha256 is found. Each file is hashed and read once."""

    def __init__(self, dataset_dir: Path | None, extra: Iterable[Path] = ()) -> None:
        self._dir = dataset_dir
        self._extra = [Path(p) for p in extra]
        self._sha: dict[Path, str | None] = {}
        self._notes: dict[tuple[Path, int | None, str], str | None] = {}

    def _digest(self, path: Path) -> str | None:
        if path not in self._sha:
            try:
                self._sha[path] = sha256_file(path) if path.is_file() else None
            except OSError:
                self._sha[path] = None
        return self._sha[path]

    def find(self, dataset: Mapping[str, Any]) -> Path | None:
        """The local file of the manifest's ``dataset`` record (path, sha256), or None."""
        where, sha = dataset.get("path"), dataset.get("sha256")
        if not isinstance(where, str) or not isinstance(sha, str):
            return None
        candidates = [Path(where)]
        if self._dir is not None:
            candidates.append(self._dir / Path(where).name)
        for path in dict.fromkeys(candidates + self._extra):
            if self._digest(path) == sha:
                return path
        return None

    def note(self, manifest: Mapping[str, Any], benchmark: str) -> str | None:
        dataset = manifest.get("dataset")
        path = self.find(dataset) if isinstance(dataset, dict) else None
        if path is None:
            return None
        used = dataset.get("samples") if isinstance(dataset.get("samples"), int) else None
        key = (path, used, benchmark)
        if key not in self._notes:
            try:
                samples = load_prepared(path).samples
            except HarnessError:
                self._notes[key] = None
                return None
            if used is not None:
                samples = samples[:used]  # the run read the file's first `used` samples (--max-samples)
            official, meta = official_set(samples, benchmark, used)  # fewer than the official size: not checked
            self._notes[key] = None if official else f"the dataset {path.name}: {meta['note']}"
        return self._notes[key]
