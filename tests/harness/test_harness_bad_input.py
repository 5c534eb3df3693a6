"""F6: bad input files and unusable output paths give one line naming the file, exit 2, and no partial output.

Each case runs the real harness command line (``python -m mlperf_assets.harness``) in a subprocess. Before the fix
each of them ended in a traceback (UnicodeDecodeError, FileExistsError, NotADirectoryError, FileNotFoundError,
IsADirectoryError, UnicodeEncodeError: surrogates not allowed) with exit code 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.harness.dataset import prepare_dataset

PROJECT = Path(__file__).resolve().parents[2]
RUN = ["--scenario", "Offline", "--mode", "performance", "--backend", "extractive", "--min-duration-ms", "100",
       "--min-query-count", "5"]


def harness(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.harness", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one line on stderr (``error: ...``) holding every needle, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def good(stories_dir: Path, tmp_path_factory) -> Path:
    return prepare_dataset("stories", stories_dir, tmp_path_factory.mktemp("ds") / "good.json", tokenizer="byte",
                           max_samples=5)


# ----------------------------------------------------------------------------------------- prepare-dataset input
@pytest.mark.parametrize("source, name, content, needles", [
    ("jsonl", "bad.jsonl", b'{"id": "x", "article": "caf\xe9 text.", "highlights": "h"}\n',
     [":1: not UTF-8 text (byte 0xe9 at offset 27)"]),
    ("jsonl", "late.jsonl", b'{"id": "1", "article": "A.", "highlights": "B."}\n\n{"id": "2", "article": "\xff"}\n',
     [":3: not UTF-8 text (byte 0xff"]),
    ("mlcommons-json", "cnn_eval.json", b'[{"input": "caf\xe9", "output": "x"}]', [":1: not UTF-8 text (byte 0xe9"]),
    ("jsonl", "s.jsonl", b'{"id": "1", "article": "A \\ud800 b.", "highlights": "B."}\n',
     [":1: 'article' holds an unpaired surrogate '\\ud800' at character 2"]),
    ("jsonl", "hs.jsonl", b'{"id": "1", "article": "A.", "highlights": "B \\udfff."}\n',
     [":1: 'highlights' holds an unpaired surrogate"]),
    ("mlcommons-json", "deep.json", b"[" * 100000, ["JSON nested too deeply"]),
])
def test_prepare_refuses_undecodable_input(tmp_path: Path, source: str, name: str, content: bytes, needles: list):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out" / "x.json"
    r = harness("prepare-dataset", "--source", source, "--path", str(src), "--out", str(out))
    one_error_line(r, str(src), *needles)
    assert not out.parent.exists()  # nothing written, not even the folder


def test_prepare_refuses_a_binary_story(tmp_path: Path, stories_dir: Path):
    folder = tmp_path / "stories"
    folder.mkdir()
    for p in sorted(stories_dir.glob("*.story"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "zz.story"
    bad.write_bytes(os.urandom(3000).replace(b"\n", b"\x80"))
    out = tmp_path / "x.json"
    r = harness("prepare-dataset", "--source", "stories", "--path", str(folder), "--out", str(out))
    one_error_line(r, str(bad), ":1: not UTF-8 text", "expected a CNN .story file")
    assert listing(tmp_path) == ["stories"]


def test_prepare_out_must_be_a_writable_file_path(tmp_path: Path, stories_dir: Path):
    base = ["prepare-dataset", "--source", "stories", "--path", str(stories_dir)]
    before = listing(tmp_path)
    one_error_line(harness(*base, "--out", "."), "--out . is a folder")  # cwd: PROJECT, nothing changes there
    one_error_line(harness(*base, "--out", str(tmp_path)), f"--out {tmp_path} is a folder")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    one_error_line(harness(*base, "--out", str(afile / "x.json")), f"{afile} is a file, not a folder")
    one_error_line(harness(*base, "--out", "/proc/x/y.json"), "--out /proc/x/y.json: cannot write it")
    assert listing(tmp_path) == sorted([*before, "afile"]) and afile.read_text() == "keep me"
    assert not [p for p in PROJECT.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------- run input
def test_run_refuses_random_bytes_as_dataset(tmp_path: Path):
    ds = tmp_path / "ds.json"
    ds.write_bytes(b"\x80" + os.urandom(5000))
    out = tmp_path / "o2"
    one_error_line(harness("run", *RUN, "--dataset", str(ds), "--output-dir", str(out)),
                   str(ds), ":1: not UTF-8 text (byte 0x80 at offset 0)", "expected a prepared dataset")
    assert not out.exists()


def test_run_refuses_surrogates_in_a_prepared_file(tmp_path: Path, good: Path):
    doc = json.loads(good.read_text())
    doc[1]["input"] = "An article \ud83d without its pair."
    ds = tmp_path / "sur.json"
    ds.write_text(json.dumps(doc))  # ensure_ascii: the lone surrogate is written as the escape \ud83d
    out = tmp_path / "o"
    one_error_line(harness("run", *RUN, "--dataset", str(ds), "--output-dir", str(out)),
                   f"{ds} sample 1: 'input' holds an unpaired surrogate '\\ud83d'")
    assert not out.exists()


def test_run_refuses_a_non_utf8_user_conf(tmp_path: Path, good: Path):
    uc = tmp_path / "uc"
    uc.write_bytes(b"# fine\n*.Offline.min_duration = 100 \xff\n")
    out = tmp_path / "o1"
    one_error_line(harness("run", *RUN, "--dataset", str(good), "--user-conf", str(uc), "--output-dir", str(out)),
                   f"{uc}:2: not UTF-8 text (byte 0xff", "expected a LoadGen user.conf")
    assert not out.exists()


def test_run_refuses_unusable_output_dirs(tmp_path: Path, good: Path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    base = ["run", *RUN, "--dataset", str(good)]
    one_error_line(harness(*base, "--output-dir", str(afile)), f"--output-dir {afile} is a file, not a folder")
    one_error_line(harness(*base, "--output-dir", str(afile / "sub")),
                   f"--output-dir {afile / 'sub'} is under {afile}, which is a file")
    one_error_line(harness(*base, "--output-dir", "/proc/x"), "--output-dir /proc/x cannot be created")
    # relative, as typed (the message names the resolved path)
    one_error_line(harness(*base, "--output-dir", "afile", cwd=tmp_path), f"--output-dir {afile} is a file")
    assert listing(tmp_path) == ["afile"] and afile.read_text() == "keep me"


@pytest.fixture()
def read_only_dir(tmp_path: Path):
    """A read-only tmpfs (root only), holding one empty folder."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the read-only case needs root")
    try:
        (mnt / "existing").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_run_refuses_a_read_only_output_dir(read_only_dir: Path, good: Path):
    base = ["run", *RUN, "--dataset", str(good)]
    one_error_line(harness(*base, "--output-dir", str(read_only_dir / "new")),
                   f"--output-dir {read_only_dir / 'new'} cannot be created (Read-only file system)")
    one_error_line(harness(*base, "--output-dir", str(read_only_dir / "existing")),
                   f"--output-dir {read_only_dir / 'existing'} is not writable (Read-only file system)")
    assert listing(read_only_dir) == ["existing"] and listing(read_only_dir / "existing") == []


# ----------------------------------------------------------------------------------------------- through the asset
def test_dataset_asset_failure_names_the_file(tmp_path: Path):
    """The pipeline's message (dataset asset) is the harness's one line: it names the file."""
    import dagster as dg

    from mlperf_assets.assets.dataset import _prepare
    from mlperf_assets.config import DatasetConfig, load_config

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "x", "article": "caf\xe9 text.", "highlights": "h"}\n')
    config = load_config(None, use_env_dataset=False)
    config = config.model_copy(update={"dataset": DatasetConfig(source="jsonl", path=bad)})
    with pytest.raises(dg.Failure) as failure:
        _prepare(config, tmp_path / "prepared.json")
    assert failure.value.description == (f"cannot prepare the dataset: {bad}:1: not UTF-8 text (byte 0xe9 at offset "
                                         "27); expected JSON lines")
    assert listing(tmp_path) == ["bad.jsonl"]
