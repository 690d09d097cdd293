"""StopRequests turns the first SIGTERM / Ctrl-C into a flag and lets a second one through."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from proseco.training.interrupt import StopRequests, TrainingInterrupted

ONE_PROCESS = SimpleNamespace(num_processes=1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_recorded_and_a_repeat_is_absorbed(sig):
    """SLURM and torchrun deliver one stop twice within milliseconds: still one clean stop."""
    before = signal.getsignal(sig)
    with StopRequests() as stops:
        assert stops.requested(ONE_PROCESS) is None
        os.kill(os.getpid(), sig)  # delivered to the main thread before the next bytecode
        assert stops.requested(ONE_PROCESS) == sig.name
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGTERM if sig == signal.SIGINT else signal.SIGINT)
        assert stops.requested(ONE_PROCESS) == sig.name  # the first one names the stop
    assert signal.getsignal(sig) == before


def test_a_later_second_ctrl_c_interrupts_for_real():
    with pytest.raises(KeyboardInterrupt), StopRequests(repeat_window=0.0) as stops:
        os.kill(os.getpid(), signal.SIGINT)
        assert stops.requested(ONE_PROCESS) == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)


def test_a_later_sigterm_is_still_absorbed():
    """A scheduler ends a stuck run with SIGKILL after its grace period; repeats change nothing."""
    with StopRequests(repeat_window=0.0) as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested(ONE_PROCESS) == "SIGTERM"


def test_the_handlers_are_restored_even_when_the_run_fails():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError), StopRequests():
        assert signal.getsignal(signal.SIGTERM) != before
        raise ValueError("a failing step")
    assert signal.getsignal(signal.SIGTERM) == before


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():
        with StopRequests():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_the_exit_code_follows_the_shell_convention(name, code):
    stop = TrainingInterrupted(name, 12, Path("run/checkpoints/step-00000012"))
    assert stop.exit_code == code
    assert "after step 12" in str(stop) and "step-00000012" in str(stop)
