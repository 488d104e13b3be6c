"""Stop requests: the preemption signals, delivered for real, and the time limit's reserve."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mnist_hpc import train
from mnist_hpc.errors import EXIT_FAILURE, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE
from mnist_hpc.job.preemption import (
    StopRequest,
    install_signal_handlers,
    restore_signal_handlers,
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_signal_is_recorded_not_fatal(signum):
    stop = StopRequest()
    previous = install_signal_handlers(stop)
    try:
        assert not stop.wanted(watches_clock=True)
        os.kill(os.getpid(), signum)  # delivered to this (main) thread before kill returns
        assert stop.signal_name == signal.Signals(signum).name
        assert stop.wanted(watches_clock=False)  # every rank that got a signal asks to stop
        assert stop.reason() == f"signal {signal.Signals(signum).name}"
    finally:
        restore_signal_handlers(previous)
    assert signal.getsignal(signum) is previous[signum]


def test_restoring_puts_back_the_handlers_that_were_there():
    seen = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        stop = StopRequest()
        restore_signal_handlers(install_signal_handlers(stop))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1] and stop.signal_name is None
    finally:
        signal.signal(signal.SIGUSR1, before)


def started_ago(seconds: float, time_limit: float) -> StopRequest:
    return StopRequest(started=time.monotonic() - seconds, time_limit=time_limit)


def test_no_time_limit_never_runs_out():
    stop = started_ago(10 ** 6, time_limit=None)
    assert not stop.out_of_time() and not stop.wanted(watches_clock=True)


def test_the_time_limit_keeps_a_reserve_of_5_to_60_seconds():
    # 5 % of the limit, at least 5 s and at most 60 s, before any step was timed
    assert not started_ago(94, time_limit=100).out_of_time()
    assert started_ago(96, time_limit=100).out_of_time()
    assert not started_ago(375, time_limit=400).out_of_time()  # 5 %: 20 s
    assert started_ago(385, time_limit=400).out_of_time()
    assert not started_ago(9930, time_limit=10000).out_of_time()  # capped at 60 s
    assert started_ago(9950, time_limit=10000).out_of_time()


def test_the_reserve_grows_by_three_of_the_longest_steps():
    stop = started_ago(90, time_limit=100)
    assert not stop.out_of_time()
    stop.last_check = time.monotonic() - 2.0  # a step of 2 s just ended
    stop.step_done()
    assert stop.longest_step >= 2.0
    assert stop.out_of_time()  # 90 + 5 + 3 * 2 >= 100
    assert stop.reason() == "time limit"


def test_only_the_rank_that_watches_the_clock_applies_the_time_limit():
    stop = started_ago(99, time_limit=100)
    assert stop.wanted(watches_clock=True)
    assert not stop.wanted(watches_clock=False)
    # a rank that stops with neither reason of its own was told by another rank
    assert StopRequest().reason() == "a signal received by another rank"


def test_start_clock_leaves_set_up_out_of_the_step_time():
    stop = StopRequest()
    stop.last_check = time.monotonic() - 30  # set-up and evaluation took 30 s
    stop.start_clock()
    stop.step_done()
    assert stop.longest_step < 1


class _Left(Exception):
    pass


@pytest.mark.parametrize("code, shutdown", [(EXIT_OK, False), (EXIT_PREEMPTED, False),
                                            (EXIT_USAGE, False), (EXIT_FAILURE, True)])
def test_only_a_failure_leaves_through_the_interpreters_shutdown(monkeypatch, code, shutdown):
    """The console script's exit: ``os._exit`` (no c10d destructors, no second of shutdown)
    unless a rank failed, whose slower exit lets its peers print their lines first."""
    def fast_exit(exit_code):
        raise _Left(exit_code)

    monkeypatch.setattr(os, "_exit", fast_exit)
    with pytest.raises((SystemExit, _Left)) as left:
        train.leave(code)
    assert isinstance(left.value, SystemExit) is shutdown
    assert left.value.args[0] == code
