"""The check every writer of an output folder makes before it writes anything (``submission --out``, the demo's and
``submission_package``'s tree, ``verify-compliance --out``): the folder may not be, contain or lie inside what the
writer reads (the artifact root, the run folders), may not be or contain what must survive it (the results store,
the config file, the current directory, the project, $HOME, /), and a writer that replaces its folder replaces only
one it wrote itself (it carries :data:`OUTPUT_MARKER`). One line on refusal (:class:`UserError`), nothing touched.

Standard library only (the node side imports it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

from mlperf_assets.errors import UserError

# Written at the top of every folder a replacing writer builds: what lets a later run replace it.
OUTPUT_MARKER = ".mlperf-dagster-output"
_PROJECT = Path(__file__).resolve().parents[2]

Named = Mapping[str, "str | os.PathLike | None"] | Iterable[tuple[str, "str | os.PathLike | None"]]


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _items(named: Named | None) -> list[tuple[str, Path]]:
    pairs = named.items() if isinstance(named, Mapping) else (named or [])
    return [(label, _real(p)) for label, p in pairs if p is not None and os.fspath(p) != ""]


def _kept_places() -> list[tuple[str, Path]]:
    places = [("the current directory", os.getcwd()), ("the project", _PROJECT), ("the file system root", "/")]
    home = os.environ.get("HOME")
    if home:
        places.append(("your home folder", home))
    return _items(places)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_folder(out: str | os.PathLike, *, option: str, reads: Named | None = None,
                        keeps: Named | None = None, replaces: bool = True,
                        written_by_us: Callable[[Path], bool] | None = None) -> Path:
    """``out`` (absolute, symlinks resolved) when a writer may write there, else :class:`UserError` naming
    ``option``, the folder and why. ``reads``: label -> path the writer reads (``out`` may not be, contain or lie
    inside one); ``keeps``: label -> path that must survive (``out`` may not be or contain one; the current
    directory, the project, $HOME and / always count). ``replaces``: the writer replaces the whole folder, so an
    existing non-empty one must carry :data:`OUTPUT_MARKER` or satisfy ``written_by_us`` (a tree of an earlier
    version without the marker)."""
    given = Path(os.path.expanduser(os.fspath(out)))
    where = f"{option} {given}"
    if given.is_symlink():
        raise UserError(f"{where}: is a symbolic link; name the folder itself")
    if given.exists() and not given.is_dir():
        raise UserError(f"{where}: is a file, not a folder")
    real = _real(given)
    for label, path in _items(reads):
        if _within(real, path) or _within(path, real):
            how = "is" if real == path else "is inside" if _within(real, path) else "contains"
            raise UserError(f"{where}: {how} {label} {path}, which it is built from; choose a folder outside it")
    for label, path in [*_items(keeps), *_kept_places()]:
        if _within(path, real):
            how = "is" if real == path else "contains"
            raise UserError(f"{where}: {how} {label} {path}, which writing it would destroy; choose a folder of "
                            "its own")
    if replaces and real.is_dir() and any(real.iterdir()) and not (real / OUTPUT_MARKER).is_file() and not (
            written_by_us is not None and written_by_us(real)):
        raise UserError(f"{where}: is a folder with other content (not one mlperf-dagster wrote); name a new or "
                        "empty folder")
    _check_writable(real, where, replaces)
    return real


def _check_writable(real: Path, where: str, replaces: bool) -> None:
    """The folder the writer creates entries in (``real`` itself, its parent when it replaces ``real``, or the
    nearest existing folder above a new ``real``) must be a folder this process may write in."""
    probe = real if not replaces else real.parent if real.exists() else real
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{where}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{where}: cannot write in {probe} (permission denied or a read-only file system)")


def mark_output(folder: str | os.PathLike) -> None:
    """Mark ``folder`` (a writer's finished output, before it is moved into place) as one mlperf-dagster wrote."""
    (Path(folder) / OUTPUT_MARKER).write_text("written by mlperf-dagster; a later run may replace this folder\n")
