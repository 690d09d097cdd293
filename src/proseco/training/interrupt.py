"""Stop a training run cleanly on SIGTERM or Ctrl-C: finish the step, checkpoint, exit.

A cluster scheduler (SLURM, Kubernetes) sends SIGTERM before it kills a job, and a person presses
Ctrl-C (SIGINT). Without this the run would lose everything since its last ``save_every``
checkpoint. With it, :class:`StopRequests` records the signal, the loop finishes the optimizer
step it is in, writes a checkpoint at that step (atomically, like every other) and raises
:class:`TrainingInterrupted`; ``proseco train ... --resume`` then continues exactly where it
stopped. Launchers deliver one stop several times (SLURM signals every process of the job and
torchrun forwards its own SIGTERM to the workers, both within milliseconds), so repeats are
absorbed: a stuck run is ended by the scheduler's SIGKILL after its grace period, and by hand
with a second Ctrl-C at least :data:`REPEAT_WINDOW` seconds after the first, which raises
``KeyboardInterrupt`` at once (nothing is saved then). torchrun kills its workers 30 s after
forwarding a SIGTERM (``--shutdown_timeout``); a step plus a checkpoint must fit in that.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch

__all__ = ["StopRequests", "TrainingInterrupted", "STOP_SIGNALS", "REPEAT_WINDOW"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_WINDOW = 1.0  # seconds: a signal this soon after the first is the same stop, delivered twice


class TrainingInterrupted(RuntimeError):
    """The run was asked to stop by a signal; a resumable checkpoint was written first.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
        step: optimizer steps done (the checkpoint's step).
        checkpoint: the checkpoint directory written for ``step``.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"stopped by {signal_name} after step {step}; the checkpoint {checkpoint} holds it"
        )

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal (143, 130)."""
        return 128 + int(getattr(signal, self.signal_name))


class StopRequests:
    """Context manager: while inside, SIGTERM / SIGINT only set a flag (see the module doc).

    Handlers can only be installed from the main thread; elsewhere (a notebook worker thread)
    this does nothing and signals keep their usual meaning. The previous handlers are restored
    on exit, so a ``train()`` call inside a larger program leaves its signal setup as it was.
    """

    def __init__(self, repeat_window: float = REPEAT_WINDOW) -> None:
        self.received: int | None = None
        self.repeat_window = repeat_window
        self._first = 0.0  # time.monotonic() of the first signal
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self._first = signum, now
        elif signum == signal.SIGINT and now - self._first >= self.repeat_window:
            raise KeyboardInterrupt  # a person pressed Ctrl-C again: stop now, unsaved

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def requested(self, accelerator: Any) -> str | None:
        """The signal's name if any process received one, else None (the same on all processes).

        With several processes the flag is reduced across them every call, so all stop after
        the same step even where the launcher delivered the signal to only some of them.
        """
        received = self.received
        if accelerator.num_processes > 1:
            flag = torch.tensor([float(received or 0)], device=accelerator.device)
            received = int(accelerator.gather(flag).max().item()) or None
        return signal.Signals(received).name if received else None
