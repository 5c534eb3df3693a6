"""harness/files.replacing_folder, the writer of whole folders (a submission tree, a collected run): it replaces only a
folder (a file or a symbolic link at its place is refused, never hidden as .NAME.old-*), a killed writer's work
folder does not stay forever (G8), and the folder gets the umask's mode, not mkdtemp's 0700."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlperf_assets.harness.files import NotReplaceable, replacing_folder, sweep_work_folders


def _fill(dest: Path, text: str) -> None:
    with replacing_folder(dest) as tmp:
        (tmp / "f.txt").write_text(text)


def test_a_folder_is_replaced_and_no_work_folder_is_left(tmp_path):
    dest = tmp_path / "tree"
    _fill(dest, "one")
    _fill(dest, "two")
    assert (dest / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_a_file_at_the_place_is_refused_not_hidden(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(NotReplaceable) as exc:
        _fill(notes, "tree")
    assert str(exc.value) == f"{notes}: is a file, not a folder"
    assert notes.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_symlink_at_the_place_is_refused_and_its_target_untouched(tmp_path):
    real = tmp_path / "realdir"
    real.mkdir()
    (real / "keep.txt").write_text("kept")
    link = tmp_path / "linkout"
    link.symlink_to(real)
    with pytest.raises(NotReplaceable, match=r"linkout: is a symbolic link, not a folder; name the folder itself$"):
        _fill(link, "tree")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [p.name for p in real.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linkout", "realdir"]


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mlperf_assets.harness.files import replacing_folder
    with replacing_folder(sys.argv[1]) as tmp:
        (Path(tmp) / "partial.txt").write_text("half a tree")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writers_work_folder_is_swept_by_the_next_write(tmp_path):
    dest = tmp_path / "tree"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(dest)], check=False, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".tree.tmp-{proc_pid(left[0])}-")  # recognisable as ours
    _fill(dest, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def proc_pid(name: str) -> int:
    return int(name.split(".tmp-")[1].split("-")[0])


def test_a_live_writers_work_folder_and_foreign_names_are_kept(tmp_path):
    dest = tmp_path / "tree"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".tree.tmp-{live.pid}-0123abcd"
        busy.mkdir()
        other = tmp_path / ".tree.tmp-backup"  # not our pattern
        other.mkdir()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        stale = tmp_path / f".tree.old-{dead}-89abcdef"
        stale.mkdir()
        assert sweep_work_folders(dest) == [stale]
        assert busy.is_dir() and other.is_dir() and not stale.exists()
    finally:
        live.kill()
        live.wait()


def test_the_written_folder_has_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        _fill(tmp_path / "tree", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "tree").stat().st_mode & 0o777 == 0o755
