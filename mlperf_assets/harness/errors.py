"""Errors the harness reports as one line on stderr: bad input the user can fix (exit code 2), and output that cannot
be written (exit code 1)."""

from __future__ import annotations

import errno
import os

from mlperf_assets.errors import UserError


class HarnessError(UserError):
    """Bad input to the harness (dataset, settings, tokenizer, backend choice, output path): one message saying what
    and where."""

    exit_code = 2


class DatasetError(HarnessError):
    pass


class SettingsError(HarnessError, ValueError):
    """A LoadGen setting or name that LoadGen would refuse or silently ignore (also a ValueError, for callers that
    validate specs before any harness runs)."""


class TokenizerError(HarnessError):
    pass


class OutputError(HarnessError):
    """A file the harness writes could not be written (disk full, quota, I/O error): one line naming the file, exit
    code 1 (the input was fine; a run that hits it is marked ``failed``)."""

    exit_code = 1

    def __init__(self, path: str | os.PathLike, exc: OSError) -> None:
        self.path = str(path)
        self.errno = exc.errno
        super().__init__(output_error_text(path, exc))


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def output_error_text(path: str | os.PathLike, exc: OSError) -> str:
    """``no space left on device writing PATH`` (or the quota / other OS reason)."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on device writing {path}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded writing {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


def say(line: str) -> None:
    """``line`` on stderr, written straight to file descriptor 2: when stderr is a file on a full disk the write is
    lost quietly, and nothing stays in Python's buffer to fail again (with a traceback) when the process exits."""
    import sys

    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass
