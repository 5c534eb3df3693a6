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
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

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


@contextmanager
def replacing_folder(dest_dir: str | os.PathLike) -> Iterator[Path]:
    """``with replacing_folder(dest) as tmp: <fill tmp>``: a temporary folder beside ``dest`` that replaces it when
    the block succeeds and is removed when it fails, so a folder (a collected run, a submission tree) is never seen
    half-written. The folder-sized :func:`atomic_writer`."""
    dest = Path(dest_dir).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
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
