"""The MLCommons submission rule for accuracy logs, implemented here (MLCommons' ``truncate_accuracy_log.py`` is a
judge we never copy): ``accuracy.txt`` gets ``hash=<sha256 of the full mlperf_log_accuracy.json>`` and the log is
cut to its first and last 4 KiB with ``\\n\\n...\\n\\n`` between them. A log under 4 KiB stays whole."""

from __future__ import annotations

import re
from pathlib import Path

from mlperf_assets.harness.files import sha256_file
from mlperf_assets.harness.run_folder import ACCURACY_LOG, ACCURACY_TXT

VIEWABLE_BYTES = 4096  # kept from each end of the log
MAX_SUBMITTED_BYTES = 10 * 1024  # the checker refuses a longer mlperf_log_accuracy.json ("is not truncated")
_HASH_LINE = re.compile(r"^hash=([\w\d]+)$", re.MULTILINE)


def truncated_bytes(data: bytes) -> bytes:
    """The submitted copy of an accuracy log: whole when shorter than 4 KiB, else first and last 4 KiB."""
    if len(data) < VIEWABLE_BYTES:
        return data
    return data[:VIEWABLE_BYTES] + b"\n\n...\n\n" + data[len(data) - VIEWABLE_BYTES:]


def accuracy_txt_with_hash(text: str, log_sha256: str) -> str:
    """``accuracy.txt`` carrying exactly one ``hash=`` line, the full log's sha256, after a blank line, as MLCommons'
    truncation writes it (an existing ``hash=`` line, for this log or another, is replaced: the file must describe
    the log it travels with, in the one layout)."""
    body = _HASH_LINE.sub("", text).rstrip("\n")
    return f"{body}\n\nhash={log_sha256}\n"


def write_truncated(log: Path, accuracy_txt: Path, dest_dir: Path) -> str:
    """Write ``dest_dir/mlperf_log_accuracy.json`` (truncated) and ``dest_dir/accuracy.txt`` (with the hash);
    returns the hash."""
    digest = sha256_file(log)
    (dest_dir / ACCURACY_LOG).write_bytes(truncated_bytes(log.read_bytes()))
    text = accuracy_txt.read_text(encoding="utf-8") if accuracy_txt.is_file() else ""
    (dest_dir / ACCURACY_TXT).write_text(accuracy_txt_with_hash(text, digest), encoding="utf-8")
    return digest
