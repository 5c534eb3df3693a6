"""Shell snippets and parsers shared by the remote runners (SSH, Kubernetes): pure functions, no connection.

Both remote runners leave a run folder on the node (``<workdir>/<run_id>/<mode>``) holding the supervisor's
``pid`` and ``exit_code``, ``progress.jsonl`` and, after ``cancel``, ``cancel_requested``; they read and steer it
with the same POSIX ``sh`` code, run over SSH or with ``kubectl exec``:

- :func:`render_status_command` / :func:`parse_status_output`: one round trip giving whether the folder exists,
  whether the harness was launched and is alive, its exit code, and the tail of ``progress.jsonl``;
- :func:`render_cancel_command`: SIGINT to the harness's process group, then SIGTERM, then SIGKILL;
- :func:`render_list_command`: the run folders below a workdir that were launched and have not ended;
- :func:`render_free_space_command` / :func:`parse_free_space`: the bytes free where a write failed (a full disk
  is told apart from other refusals: SFTP's ``SSH_FX_FAILURE`` carries no errno).

Every value that reaches the shell goes through ``shlex.quote``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from mlperf_assets.harness.files import sha256_file  # noqa: F401 - re-exported: the dataset checksum both runners use
from mlperf_assets.harness.run_folder import CANCEL_REQUESTED, EXIT_CODE, PID, PROGRESS, RunProgress, progress_from_texts

DATASETS_DIR = "_datasets"  # below the workdir; "_" cannot start a run id, so it never clashes with a run
STATUS_MARK = "@@mlperf-status"
STATUS_END = "@@mlperf-status-end"  # last line: its absence means the command was killed midway


def _alive_snippet(run_dir: str) -> str:
    """Shell code setting ``a`` to 1 if the pid in ``pid`` runs (not a zombie) and belongs to this run folder
    (one of its arguments mentions the folder: the supervisor's, or ``docker run -v DIR:DIR``'s)."""
    q = shlex.quote(run_dir)
    return (
        f"p=$(cat {q}/{PID} 2>/dev/null); a=0; "
        'if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then '
        '  st=$(sed "s/.*) //" /proc/$p/stat 2>/dev/null | cut -d" " -f1); '
        f'  if [ "$st" != Z ] && tr "\\000" "\\n" < /proc/$p/cmdline 2>/dev/null | grep -qF -- {q}; then a=1; '
        f'  elif [ ! -e /proc/$p/cmdline ] && [ "$st" != Z ]; then a=1; fi; '
        "fi; "
    )


def render_status_command(run_dir: str) -> str:
    """One round trip: ``@@mlperf-status <dir-exists> <pid-file> <alive> <exit code|-> <cancel>`` then the
    tail of progress.jsonl, then ``@@mlperf-status-end``. ``alive`` is read before ``exit_code`` (the supervisor
    writes the file, then exits)."""
    q = shlex.quote(run_dir)
    return (
        f"if [ ! -d {q} ]; then echo '{STATUS_MARK} 0 0 0 - 0'; echo '{STATUS_END}'; exit 0; fi; "
        + _alive_snippet(run_dir)
        + f"e=$(cat {q}/{EXIT_CODE} 2>/dev/null | tr -d ' \\n'); [ -n \"$e\" ] || e=-; "
        f"c=0; [ -f {q}/{CANCEL_REQUESTED} ] && c=1; "
        f"f=0; [ -s {q}/{PID} ] && f=1; "
        f'echo "{STATUS_MARK} 1 $f $a $e $c"; '
        f"tail -c 8192 {q}/{PROGRESS} 2>/dev/null; printf '\\n%s\\n' '{STATUS_END}'"
    )


@dataclass(frozen=True)
class RemoteStatus:
    """A run folder's state on the node, as :func:`render_status_command` reports it."""

    exists: bool
    launched: bool  # a pid file exists: the harness was started at some point
    alive: bool
    exit_code_text: str | None
    cancel_requested: bool
    progress_text: str

    def progress(self) -> RunProgress:
        return progress_from_texts(
            self.progress_text or None,
            self.exit_code_text,
            alive=self.alive,
            cancel_requested=self.cancel_requested,
        )


class StatusCutShort(ValueError):
    """The status command was killed before its last line: in a container, it ran as the container stopped (the
    header may already say the harness exited, while the progress tail is missing). Ask again."""


def parse_status_output(text: str) -> RemoteStatus:
    """The output of :func:`render_status_command`; ValueError if it is something else (a shell error),
    :class:`StatusCutShort` if it stops before its end line."""
    head, _, rest = text.partition("\n")
    parts = head.split()
    if len(parts) != 6 or parts[0] != STATUS_MARK:
        raise ValueError(f"unexpected status output: {head[:200]!r}")
    rest, end, after = rest.rpartition(STATUS_END)
    if not end or after.strip():
        raise StatusCutShort(f"the status output stops before its end line (after {len(text)} bytes)")
    _, exists, launched, alive, exit_code, cancel = parts
    return RemoteStatus(
        exists=exists == "1",
        launched=launched == "1",
        alive=alive == "1",
        exit_code_text=None if exit_code == "-" else exit_code,
        cancel_requested=cancel == "1",
        progress_text=rest,
    )


def render_cancel_command(run_dir: str, *, grace_s: float, container: str | None = None, engine: str = "docker") -> str:
    """Mark the run cancelled and signal its process group: SIGINT, wait ``grace_s``; SIGTERM, 3 s; SIGKILL.

    Stops as soon as the supervisor has written ``exit_code`` or the group is gone. In container mode the
    container is killed too (the ``docker run`` client's group may not reach the container's processes)."""
    q = shlex.quote(run_dir)
    steps = max(1, int(grace_s / 0.2))
    script = (
        f"cd {q} 2>/dev/null || exit 0; "
        f"[ -f {EXIT_CODE} ] && exit 0; "
        f"[ -f {CANCEL_REQUESTED} ] || date +%s > {CANCEL_REQUESTED}; "
        f"p=$(cat {PID} 2>/dev/null); [ -n \"$p\" ] || exit 0; "
    )
    if container:
        script += f"{shlex.quote(engine)} kill --signal INT {shlex.quote(container)} > /dev/null 2>&1; "
    script += (
        f"for s in INT:{steps} TERM:15 KILL:10; do "
        "  sig=${s%%:*}; n=${s##*:}; "
        '  kill -$sig -$p 2>/dev/null || break; '
        "  i=0; while [ $i -lt $n ]; do "
        f"    [ -f {EXIT_CODE} ] && break 2; "
        '    kill -0 -$p 2>/dev/null || break 2; '
        "    sleep 0.2; i=$((i+1)); "
        "  done; "
        "done; "
    )
    if container:
        script += f"{shlex.quote(engine)} rm -f {shlex.quote(container)} > /dev/null 2>&1; "
    script += "true"
    return script


def render_free_space_command(path: str) -> str:
    """Bytes available to this user on the file system holding ``path`` (POSIX ``df -P``, in 1024-byte blocks)."""
    return f"df -Pk {shlex.quote(path)} 2>/dev/null | tail -n 1"


def parse_free_space(text: str) -> int | None:
    """Bytes available from :func:`render_free_space_command`'s output, or None if it is not a ``df -P`` line."""
    fields = text.split()
    if len(fields) < 6 or not fields[3].isdigit():
        return None
    return int(fields[3]) * 1024


def render_list_command(workdir: str) -> str:
    """Run folders below ``workdir`` that were launched and have no exit code yet, one ``<run_id>/<mode>`` a line."""
    return (
        f"cd {shlex.quote(workdir)} 2>/dev/null || exit 0; "
        f'for d in */*/; do [ -f "${{d}}{PID}" ] && [ ! -f "${{d}}{EXIT_CODE}" ] && echo "${{d%/}}"; done; true'
    )


__all__ = [
    "DATASETS_DIR",
    "STATUS_END",
    "STATUS_MARK",
    "StatusCutShort",
    "RemoteStatus",
    "parse_free_space",
    "parse_status_output",
    "render_cancel_command",
    "render_free_space_command",
    "render_list_command",
    "render_status_command",
    "sha256_file",
]
