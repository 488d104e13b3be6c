"""Stop requests: the preemption signals (SIGTERM, SIGUSR1) and ``--time-limit``.

A request is only recorded here; the training loop honours it at the next step boundary, where
the ranks agree to stop, write a checkpoint and exit 75. Torch-free: the handlers are installed
before torch loads.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class StopRequest:
    """Set by SIGTERM/SIGUSR1 or by the time limit; honoured at the next step boundary."""

    signal_name: Optional[str] = None
    started: float = field(default_factory=time.monotonic)
    time_limit: Optional[float] = None
    longest_step: float = 0.0
    last_check: float = field(default_factory=time.monotonic)

    def handler(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def start_clock(self) -> None:
        """Time the next step from now: set-up and evaluation are not steps."""
        self.last_check = time.monotonic()

    def step_done(self) -> None:
        """Record the step that just ended: the time limit keeps room for three more."""
        now = time.monotonic()
        self.longest_step = max(self.longest_step, now - self.last_check)
        self.last_check = now

    def wanted(self, watches_clock: bool) -> bool:
        """Whether this rank asks to stop. Only the rank that ``watches_clock`` applies the
        time limit: the ranks' clocks differ, and one clock cannot disagree with itself."""
        return self.signal_name is not None or (watches_clock and self.out_of_time())

    def out_of_time(self) -> bool:
        """Stop while there is still room for a step, an evaluation and a checkpoint."""
        if self.time_limit is None:
            return False
        now = time.monotonic()
        reserve = max(5.0, min(60.0, 0.05 * self.time_limit)) + 3 * self.longest_step
        return now - self.started + reserve >= self.time_limit

    def reason(self) -> str:
        """Why this rank stopped; only rank 0 watches the clock, any rank may get a signal."""
        if self.signal_name:
            return f"signal {self.signal_name}"
        if self.out_of_time():
            return "time limit"
        return "a signal received by another rank"


def install_signal_handlers(stop: StopRequest) -> dict:
    """Route the preemption signals to ``stop``; returns the handlers they replace."""
    return {signum: signal.signal(signum, stop.handler) for signum in SIGNALS}


def restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        if handler is not None:  # None: installed outside Python, nothing we can put back
            signal.signal(signum, handler)
