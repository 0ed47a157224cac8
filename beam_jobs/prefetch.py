"""Work ahead of a DoFn's consumer in one background thread, in order, in bounded memory.

A Beam DoFn runs its downstream stages inside its own `yield` (the FnApiRunner and Dataflow
fuse them): while `embed`'s model runs a batch, the chip reader that fed it is paused, and
reading and preparing the next chips waits for the model. `Prefetcher` runs a generator
function over submitted jobs (embed: read blocks) in a thread of its own, so the next
chips are read and prepared while the model runs the last ones; numpy, GDAL and XLA release
the GIL for their work.

    feed = Prefetcher(work, max_ready=2)   # work(job) -> iterator of outputs
    feed.submit(job)                       # any number; queued, started in order
    for out in feed.take(until=job_count): # outputs in submission order, as they come
        ...
    feed.close()

Bounds: at most `max_ready` outputs wait to be taken (the thread blocks before it makes
another), plus what the job in progress holds. An exception the work raises ends the
thread and is raised again by `take` (after the outputs made before it). Metrics: Beam's
counters belong to the thread that processes the element, so the work returns what it
measured as outputs and the consumer counts them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()  # a job's outputs end here


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """`work(job)` for each submitted job, in a background thread, outputs taken in order."""

    def __init__(self, work: Callable[[Any], Iterable[Any]], *, max_ready: int, name: str = ""):
        if max_ready < 1:
            raise ValueError(f"max_ready must be >= 1; got {max_ready}")
        self._work = work
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: queue.Queue = queue.Queue(maxsize=max_ready)
        self._stop = threading.Event()
        self.submitted = 0  # jobs submitted
        self.finished = 0  # jobs whose outputs were all taken
        self._thread = threading.Thread(
            target=self._run, name=f"prefetch-{name}" if name else "prefetch", daemon=True
        )
        self._thread.start()

    def submit(self, job: Any) -> None:
        if self._stop.is_set():
            raise RuntimeError("submit after close")
        self.submitted += 1
        self._jobs.put(job)

    @property
    def pending(self) -> int:
        """Jobs submitted whose outputs have not all been taken."""
        return self.submitted - self.finished

    def take(self, until: int) -> Iterator[Any]:
        """Outputs, in order, until `until` jobs are finished (blocks for them)."""
        while self.finished < until:
            out = self._ready.get()
            if out is _DONE:
                self.finished += 1
            elif isinstance(out, _Failed):
                self.close()
                raise out.error
            else:
                yield out

    def close(self) -> None:
        """Stop the thread (it ends after its current output); what it made is dropped."""
        self._stop.set()
        self._jobs.put(_DONE)
        while self._thread.is_alive():
            try:  # unblock a put on a full queue
                self._ready.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is _DONE or self._stop.is_set():
                return
            try:
                for out in self._work(job):
                    if not self._put(out):
                        return
            except BaseException as e:  # handed to the consumer, raised again by take()
                self._put(_Failed(e))
                return
            if not self._put(_DONE):
                return
