"""A rank's start-up: how long this process has lived (``startup_s`` in metrics.json, from
process start to the first training step: interpreter start, imports, data, process group,
warm-up), and the garbage collector held off until then.

On Linux the start is the kernel's: ``/proc/self/stat`` gives it in clock ticks since boot and
``/proc/uptime`` gives now since boot, to 10 ms. Elsewhere the clock starts when the entry
point imports this module (``train`` does, first), which leaves out the interpreter's own
start. Torch-free, so the fallback clock starts before torch loads.
"""

from __future__ import annotations

import gc
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


# importing torch and torch._dynamo (which torch.optim and DDP import) makes 300,000 objects
# that live as long as the process, and triggers collection after collection over them: 0.6-0.7
# s of CPU in a short CPU run's 5-6 s (timed with gc.callbacks), every rank, every start; held
# off, then one pass at the end of the start-up: 0.25 s
_held = False


def hold_collection() -> None:
    """No garbage collection until ``end()`` (a doctor's rank: until it exits): for a process
    that lives for one run (the console scripts), not for a caller that goes on (tests call
    ``train.main`` in-process)."""
    global _held
    _held = True
    gc.disable()


def end() -> float:
    """The start-up is over, the first training step is next: collect again, leaving what the
    start-up built (alive until the process ends) out of every collection; the process's age."""
    global _held
    if _held:
        _held = False
        # one pass for the start-up's garbage (a warm-up's compile, a discarded CUDA graph),
        # so that only what is still alive is frozen
        gc.collect()
        gc.freeze()
        gc.enable()
    return process_age_s()
