"""Find the harness's exit-code supervisors among this machine's processes (the test "nodes" are this machine).

The runners launch ``python -c "import os, signal, subprocess ..." <harness argv>``; one live supervisor means one
running harness. Zombies are skipped: finished jobs linger as zombies for seconds here.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Iterator


def live_supervisors() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every live harness supervisor."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"-c" in argv and argv[argv.index(b"-c") + 1].startswith(b"import os, signal"):
            yield int(entry.name), argv


def counting_python(folder: Path) -> tuple[Path, Path]:
    """(a `python` for the node that logs each harness launch and then runs this venv's python, its log)."""
    log = folder / "launches.log"
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$3" = run ]; then echo "$*" >> {shlex.quote(str(log))}; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log
