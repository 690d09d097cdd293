"""One worker thread owns the model and runs requests in batches.

Requests (:class:`~proseco.serving.protocol.Job`) queue up while a batch runs; when it ends the
worker takes every waiting job, groups those with the same decoding settings and length (a
seeded job runs alone) and samples each group as one batch of ragged, left-padded prompts, at
most ``max_batch_size`` rows at a time. So requests that arrive while a batch runs join the next
batch. After every block the worker streams new text to the jobs that asked for it, and rows of
a job whose client left (``job.cancelled``) stop sampling: no later model call includes them and
their results are dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from proseco.serving.protocol import Job

__all__ = ["Batcher", "BatchStats"]

log = logging.getLogger("proseco.serve")


@dataclass
class BatchStats:
    """Counters of the worker (read them for monitoring and tests)."""

    batches: int = 0  # sampler calls
    rows: int = 0  # rows sampled, all batches
    jobs: int = 0  # requests answered (or failed) by a batch
    cancelled: int = 0  # requests whose client left before the end
    largest_batch: int = 0
    busy_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Batcher:
    """The worker: :meth:`submit` jobs from any thread; :meth:`close` stops it.

    Args:
        engine: a :class:`~proseco.serving.engine.Engine`.
        max_batch_size: most rows per sampler call.
        seed: seeds the generator of unseeded requests (one stream for the server's life).
        batching: ``False`` runs one job per sampler call (sequential serving, for comparison).
    """

    def __init__(self, engine: Any, *, max_batch_size: int = 16, seed: int = 0,
                 batching: bool = True) -> None:  # fmt: skip
        self.engine, self.max_batch_size, self.batching = engine, max_batch_size, batching
        self.stats = BatchStats()
        self.generator = torch.Generator(device=engine.device).manual_seed(seed)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="proseco-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def close(self, timeout: float | None = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # -- worker -------------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """Block for one job, then take every job already waiting (None: closing)."""
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is None:
                self._queue.put(None)  # close after this round
                return jobs
            jobs.append(job)

    def _batches(self, jobs: list[Job]) -> list[list[Job]]:
        """Groups of compatible jobs, in arrival order, split to ``max_batch_size`` rows."""
        if not self.batching:
            return [[job] for job in jobs]
        groups: OrderedDict[Any, list[Job]] = OrderedDict()
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        batches = []
        for group in groups.values():
            current: list[Job] = []
            rows = 0
            for job in group:
                if current and rows + len(job.prompts) > self.max_batch_size:
                    batches.append(current)
                    current, rows = [], 0
                current.append(job)
                rows += len(job.prompts)
            batches.append(current)
        return batches

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            for batch in self._batches(jobs):
                batch = [job for job in batch if not self._gone(job)]
                if batch:
                    self._run(batch)

    def _gone(self, job: Job) -> bool:
        if job.cancelled.is_set():
            self.stats.cancelled += 1
            return True
        return False

    def _run(self, jobs: list[Job]) -> None:
        engine, first = self.engine, jobs[0]
        prompts, owner = [], []  # owner[row] = (job, row within the job)
        for job in jobs:
            for i, prompt in enumerate(job.prompts):
                prompts.append(prompt)
                owner.append((job, i))
        generator = self.generator
        if first.seed is not None:
            generator = torch.Generator(device=engine.device).manual_seed(first.seed)
        streaming = any(job.stream for job in jobs)

        def on_text(row: int, delta: str) -> None:
            job, i = owner[row]
            if job.stream and not job.cancelled.is_set():
                job.send("text", i, delta)

        def cancelled(row: int) -> bool:
            return owner[row][0].cancelled.is_set()

        started = time.perf_counter()
        try:
            results, _ = engine.generate(
                prompts, first.config, first.length, generator=generator,
                stop=[job.stop for job, _ in owner], on_text=on_text if streaming else None,
                cancelled=cancelled, ignore_eos=first.ignore_eos,
            )  # fmt: skip
        except Exception as err:  # answered as an error; the server stays up
            if not isinstance(err, ValueError):
                log.exception("sampling failed")
            for job in jobs:
                job.send("error", err)
            return
        finally:
            self.stats.batches += 1
            self.stats.rows += len(prompts)
            self.stats.jobs += len(jobs)
            self.stats.largest_batch = max(self.stats.largest_batch, len(prompts))
            self.stats.busy_seconds += time.perf_counter() - started
        for job in jobs:
            if job.cancelled.is_set():
                self.stats.cancelled += 1
                continue
            job.send("done", [r for (j, _), r in zip(owner, results) if j is job])
