"""What this machine says about itself (CPU model, sockets, frequency, cache, memory, OS), from /proc and
``platform``: the machine facts a local runner reports for a submission's ``systems/<system>.json``.

Standard library only: a runner imports it without importing the submission package.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any


def this_machine() -> dict[str, Any]:
    """CPU model, sockets, MHz, cache and memory (GB) of this machine, and its OS; a fact /proc lacks is left out."""
    facts: dict[str, Any] = {}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if models:
            facts["cpu_model"] = models[0].strip()
        sockets = set(re.findall(r"^physical id\s*:\s*(\d+)$", cpuinfo, re.MULTILINE))
        facts["cpu_sockets"] = max(len(sockets), 1)
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", cpuinfo, re.MULTILINE)
        if mhz:
            facts["cpu_mhz"] = round(max(float(m) for m in mhz))
        cache = re.findall(r"^cache size\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if cache:
            facts["cpu_cache"] = cache[0].strip()
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text()
        m = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
        if m:
            facts["memory_gb"] = round(int(m.group(1)) / 1024 / 1024)
    except OSError:
        pass
    facts["os"] = platform.platform()
    return facts
