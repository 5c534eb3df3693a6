"""File helpers shared by the harness and the orchestrator: a file's sha256, atomic writes (a temporary file in
the same folder, then ``os.replace``, so a reader sees the old file or the new one, never half of one; a whole folder
likewise), and strict UTF-8 decoding that says where a file stops being text.

Standard library only (the node side imports it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from mlperf_assets.errors import UserError

# Files written here are read by other users and tools (mkstemp alone would leave them 0600).
DEFAULT_FILE_MODE = 0o644


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes. Remembered per (path, size, mtime), so asking again for an unchanged large file
    (a dataset uploaded to several nodes) costs one ``stat``."""
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size and mtime key the cache
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_writer(path: str | os.PathLike, *, text: bool = True, mode: int = DEFAULT_FILE_MODE,
                  before_commit: Callable[[], None] | None = None) -> Iterator[IO[Any]]:
    """``with atomic_writer(p) as fh: fh.write(...)``: ``p`` is replaced only when the block succeeds; the parent
    folder is created. ``before_commit`` runs just before the replace; if it raises, nothing is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as fh:
            yield fh
        os.chmod(tmp, mode)
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes, *, mode: int = DEFAULT_FILE_MODE) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_writer(path, text=isinstance(data, str), mode=mode) as fh:
        fh.write(data)
    return Path(path)


# The work folders beside a replaced folder ``NAME``: ``.NAME.tmp-<pid>-<hex>`` (being filled) and
# ``.NAME.old-<pid>-<hex>`` (the previous one, being removed). The pid lets a later writer tell a killed writer's
# leftovers from a live writer's folder.
_WORK = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}")


class NotReplaceable(UserError):
    """What is at a folder's place is not a folder this process may replace (a file, a symbolic link)."""


def _work_folder(dest: Path, kind: str) -> Path:
    return dest.with_name(f".{dest.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def sweep_work_folders(dest: str | os.PathLike) -> list[Path]:
    """Remove the work folders beside ``dest`` (``.NAME.tmp-*``, ``.NAME.old-*``) whose writer is gone (killed
    mid-write); returns what was removed. A live writer's folders and anything not named so are left alone."""
    dest = Path(os.path.abspath(dest))
    removed = []
    try:
        entries = list(dest.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _WORK.fullmatch(entry.name)
        if not m or m["name"] != dest.name or entry.is_symlink() or not entry.is_dir() or _pid_alive(int(m["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextmanager
def replacing_folder(dest_dir: str | os.PathLike) -> Iterator[Path]:
    """``with replacing_folder(dest) as tmp: <fill tmp>``: a temporary folder beside ``dest`` that replaces it when
    the block succeeds and is removed when it fails, so a folder (a collected run, a submission tree) is never seen
    half-written. The folder-sized :func:`atomic_writer`. Only a folder is replaced: a file or a symbolic link at
    ``dest`` is refused (:class:`NotReplaceable`), never moved aside or followed. Work folders a killed writer left
    beside ``dest`` are removed first (:func:`sweep_work_folders`); the new folder gets the umask's mode."""
    dest = Path(os.path.abspath(dest_dir))
    if dest.is_symlink():
        raise NotReplaceable(f"{dest}: is a symbolic link, not a folder; name the folder itself")
    if dest.exists() and not dest.is_dir():
        raise NotReplaceable(f"{dest}: is a file, not a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_work_folders(dest)
    tmp = _work_folder(dest, "tmp")
    tmp.mkdir()  # not mkdtemp: that makes it 0700 whatever the umask
    try:
        yield tmp
        if dest.exists():
            old = _work_folder(dest, "old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class NotUTF8(ValueError):
    """Bytes that are not UTF-8 text: the 1-based line, the offending byte and its offset."""

    def __init__(self, line: int, byte: int, offset: int) -> None:
        super().__init__(line, byte, offset)
        self.line, self.byte, self.offset = line, byte, offset

    def __str__(self) -> str:
        return f"not UTF-8 text (byte 0x{self.byte:02x} at offset {self.offset})"


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text, or :class:`NotUTF8` naming the line and byte where it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUTF8(data.count(b"\n", 0, exc.start) + 1, data[exc.start], exc.start) from None


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None,
                      before_commit: Callable[[], None] | None = None) -> Path:
    """``obj`` as JSON (UTF-8, not ASCII-escaped, a final newline), written atomically and streamed (a prepared
    dataset is tens of MB); ``before_commit`` as for :func:`atomic_writer`."""
    with atomic_writer(path, before_commit=before_commit) as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False)
        fh.write("\n")
    return Path(path)
