"""How long this process has lived: ``startup_s`` in metrics.json, from process start to the
first training step (interpreter start, imports, data, process group, warm-up).

On Linux the start is the kernel's: ``/proc/self/stat`` gives it in clock ticks since boot and
``/proc/uptime`` gives now since boot, to 10 ms. Elsewhere the clock starts when the entry
point imports this module (``train`` does, first), which leaves out the interpreter's own
start. Torch-free, so the fallback clock starts before torch loads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

IMPORTED = time.monotonic()


def _linux_age_s() -> float:
    stat = Path("/proc/self/stat").read_text()
    # field 22 is the start time; the name (field 2, in parentheses) may itself hold spaces
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")


def process_age_s() -> float:
    """Seconds since this process started (see the module's note for the clock)."""
    try:
        return _linux_age_s()
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - IMPORTED
