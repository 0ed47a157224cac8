"""Speed benchmarks: time a callable over fixed inputs after warm-up.

Runbook:

    python -m benchmarks.speed                 # every registered speed benchmark
    python -m benchmarks.speed designed_features --runs 7

A benchmark builds its inputs once (outside the timing), calls the function `warmup` times
(imports, caches, JIT compilation), then times `runs` calls; the figure is the median call
and items per second at the median. `make bench` runs them through benchmarks/run_all.py.
Later issues register the model's embed step here (pixels/s per chip batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds per call of one benchmark (after warm-up)."""

    name: str
    items: int  # items processed per call (pixels, samples)
    unit: str  # what an item is
    runs: int
    median_s: float
    min_s: float
    max_s: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.median_s > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "items_per_s": self.items_per_s}


def time_callable(
    fn: Callable[..., Any],
    *args: Any,
    items: int,
    unit: str = "items",
    warmup: int = 1,
    runs: int = 5,
    name: str = "",
    clock: Callable[[], float] = time.perf_counter,
    **kwargs: Any,
) -> Timing:
    """Time `fn(*args, **kwargs)`: `warmup` untimed calls, then the median of `runs` calls.

    Args:
        fn: the callable; its inputs are fixed, built by the caller outside the timing.
        *args: positional inputs.
        items: how many items one call processes (for items/s).
        unit: what an item is ("pixels", "samples").
        warmup: untimed calls first (imports, caches, compilation).
        runs: timed calls (>= 1).
        name: the benchmark's name.
        clock: seconds clock (tests pass a fake one).
        **kwargs: keyword inputs.

    Returns:
        The Timing.
    """
    if runs < 1 or warmup < 0 or items < 0:
        raise ValueError(f"need runs >= 1, warmup >= 0, items >= 0; got {runs}, {warmup}, {items}")
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(runs):
        t0 = clock()
        fn(*args, **kwargs)
        times.append(clock() - t0)
    return Timing(
        name or getattr(fn, "__name__", "fn"),
        items,
        unit,
        runs,
        statistics.median(times),
        min(times),
        max(times),
    )


# ---------------------------------------------------------------------------------- registered


def synthetic_window_observations(size: int = 64, seed: int = 0):
    """A year of every registry source over a size x size window, at realistic frame counts."""
    from schemas import sensors
    from schemas.grid import GridWindow
    from schemas.observations import Observations, SourceFrames

    rng = np.random.default_rng(seed)
    start = int(dt.datetime(2023, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    day = 86_400_000
    frames = {}
    for sid, n in (
        ("sentinel2_l2a", 73),
        ("sentinel1", 61),
        ("landsat_c2l2", 45),
        ("era5_land", 12),
    ):
        c = len(sensors.get_sensor(sid).bands)
        times = start + (np.arange(n) * (365 // n) * day)
        values = rng.random((n, size, size, c), dtype=np.float32)
        valid = rng.random((n, size, size)) > 0.3
        frames[sid] = SourceFrames(sid, values, valid, times)
    dem = rng.random((1, size, size, 2), dtype=np.float32) * 100
    frames["cop_dem"] = SourceFrames("cop_dem", dem, np.ones((1, size, size), bool), [0])
    window = GridWindow(32633, 465180.0, 5080260.0, size, size)
    return Observations(frames, window=window)


def bench_designed_features(runs: int = 5) -> Timing:
    """The `designed` baseline over a 64 x 64 window with every source (pixels/s)."""
    from evaluation.baselines import designed_features

    obs = synthetic_window_observations(64)
    return time_callable(
        designed_features, obs, items=64 * 64, unit="pixels", runs=runs, name="designed_features"
    )


def bench_probes(runs: int = 5) -> Timing:
    """All three probes at 10 per class: 8 classes, 64-d features, 4000 test samples."""
    from evaluation.probes import run_probes

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 510)
    feats = rng.normal(size=(len(labels), 64)) + labels[:, None] * 0.1
    train = np.concatenate([np.flatnonzero(labels == c)[:10] for c in range(8)])
    test = np.concatenate([np.flatnonzero(labels == c)[10:] for c in range(8)])
    return time_callable(
        run_probes, feats, labels, train, test, items=len(test), unit="test samples",
        runs=runs, name="probes_10_per_class",
    )  # fmt: skip


SPEED_BENCHMARKS: dict[str, Callable[..., Timing]] = {
    "designed_features": bench_designed_features,
    "probes": bench_probes,
}


def timings_markdown(timings: list[Timing]) -> str:
    """A markdown table of timings."""
    lines = ["| benchmark | items / call | median s | min s | max s | items/s |", "|---" * 6 + "|"]
    for t in timings:
        lines.append(
            f"| {t.name} | {t.items} {t.unit} | {t.median_s:.4f} | {t.min_s:.4f} | "
            f"{t.max_s:.4f} | {t.items_per_s:,.0f} |"
        )
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.speed [NAME ...] [--runs N]`: print the timings."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed")
    p.add_argument("names", nargs="*", help=f"subset of {sorted(SPEED_BENCHMARKS)}")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    unknown = set(args.names) - set(SPEED_BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmarks {sorted(unknown)}; known {sorted(SPEED_BENCHMARKS)}")
    timings = [SPEED_BENCHMARKS[n](runs=args.runs) for n in args.names or SPEED_BENCHMARKS]
    print(timings_markdown(timings))
    return 0


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
