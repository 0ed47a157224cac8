"""Progress lines for long jobs: done / total, rate and ETA, at most every few seconds.

    tracker = progress.tracker(run_id, "embed", total=40, unit="chips", groups=(3, "tiles"))
    tracker.add(1, pixels=9216)   # a chip done: logs when `every_s` has passed since the last line
    tracker.add_group()           # a tile done

The driver knows the totals when it builds the pipeline and hands them (with a run id) to the
DoFns; each DoFn asks `tracker(...)` for its process's tracker. With the in-process FnApiRunner
(the default locally) every DoFn shares one tracker, so the lines count the whole run. With
`--direct_running_mode multi_processing`, or on Dataflow, each worker process keeps its own
tracker and logs its own share against the run's totals (its ETA assumes it works alone).
Progress never touches the data: it only counts and logs.

Stdlib only, so it costs nothing to import.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 5.0


def format_duration(seconds: float) -> str:
    """12 -> '12s', 72 -> '1m12s', 3725 -> '1h02m'; '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_progress(
    done: int,
    total: int,
    unit: str,
    elapsed_s: float,
    *,
    skipped: int = 0,
    pixels: int | None = None,
    groups: tuple[int, int, str] | None = None,
) -> str:
    """One progress line.

    Args:
        done: units finished by this run (they set the rate).
        total: units planned, `skipped` included.
        unit: what a unit is ('chips').
        elapsed_s: seconds since the work started.
        skipped: units already complete from an earlier run (count as done, not in the rate).
        pixels: valid pixels so far; adds a px/s rate.
        groups: (done, total, name) of the units' groups ('tiles').

    Returns:
        e.g. '12/40 chips (30%), 1/3 tiles; 0.40 chips/s, 3686 px/s; ETA 1m10s'.
    """
    finished = done + skipped
    pct = 100.0 * finished / total if total else 100.0
    parts = [f"{finished}/{total} {unit} ({pct:.0f}%)"]
    if groups is not None:
        parts.append(f"{groups[0]}/{groups[1]} {groups[2]}")
    rate = done / elapsed_s if elapsed_s > 0 else math.nan
    rates = [f"{rate:.2f} {unit}/s" if math.isfinite(rate) else f"? {unit}/s"]
    if pixels is not None:
        rates.append(f"{pixels / elapsed_s:.0f} px/s" if elapsed_s > 0 else "? px/s")
    remaining = max(total - finished, 0)
    eta = 0.0 if remaining == 0 else (remaining / rate if rate > 0 else math.nan)
    return f"{', '.join(parts)}; {', '.join(rates)}; ETA {format_duration(eta)}"


class Progress:
    """Counts of one job in one process, logged at most every `every_s` seconds."""

    def __init__(
        self,
        name: str,
        total: int,
        unit: str,
        *,
        groups: tuple[int, str] | None = None,
        pixels: bool = False,
        every_s: float = DEFAULT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ):
        self.name = name
        self.total = int(total)
        self.unit = unit
        self.done = 0
        self.skipped = 0
        self.pixels = 0 if pixels else None
        self.groups_total, self.groups_name = groups if groups else (0, "")
        self.groups_done = 0 if groups else None
        self._every_s = every_s
        self._clock = clock
        self._log = logger
        self._started = clock()
        self._last: float | None = None
        self._lock = threading.Lock()

    def line(self) -> str:
        groups = None
        if self.groups_done is not None:
            groups = (self.groups_done, self.groups_total, self.groups_name)
        return f"{self.name}: " + format_progress(
            self.done,
            self.total,
            self.unit,
            self._clock() - self._started,
            skipped=self.skipped,
            pixels=self.pixels,
            groups=groups,
        )

    def add(self, n: int = 1, *, pixels: int = 0, skipped: int = 0) -> None:
        """`n` units done now (`skipped`: complete before); logs if due."""
        with self._lock:
            before = self.done + self.skipped
            self.done += n
            self.skipped += skipped
            if self.pixels is not None:
                self.pixels += pixels
            self._maybe_log(force=before < self.total <= self.done + self.skipped)

    def add_group(self, n: int = 1) -> None:
        """`n` groups (tiles) finished; always logs when the last one is."""
        with self._lock:
            if self.groups_done is None:
                return
            before = self.groups_done
            self.groups_done += n
            self._maybe_log(force=before < self.groups_total <= self.groups_done)

    def _maybe_log(self, force: bool = False) -> None:
        now = self._clock()
        if force or self._last is None or now - self._last >= self._every_s:
            self._last = now
            self._log.info("%s", self.line())


_TRACKERS: dict[str, Progress] = {}
_TRACKERS_LOCK = threading.Lock()


def tracker(run_id: str, name: str, total: int, unit: str, **kwargs) -> Progress:
    """This process's tracker of run `run_id`, made on first use."""
    with _TRACKERS_LOCK:
        if run_id not in _TRACKERS:
            _TRACKERS[run_id] = Progress(name, total, unit, **kwargs)
        return _TRACKERS[run_id]
