"""Temporal composites of observations: monthly or dekadal medians per source.

Many users' extractions, and the real samples in shared/realdata, hold monthly (or dekadal:
10-day) median composites rather than single acquisitions. `composite` turns a source's
frames into that form so training data, the embed job and model/ can all see both. It lives
in schemas/ (plain numpy, no Beam/TF/JAX) because model/ never imports beam_jobs/.

A step's composite frame: per pixel and band, the median of the valid, finite values of that
step's frames (NaN where there are none); valid where the pixel was valid in at least one of
them; time = the first instant of the step (UTC), as openEO/WorldCereal label composites;
geometry = the mean of the step's known values. Steps without frames are left out. Static
sources are returned unchanged. Steps: calendar months (`monthly`), or dekads (`dekadal`,
the agro-meteorological 10-day periods: days 1-10, 11-20 and 21 to the month's end, 36 a
year, as FAO/WMO products and openEO's `dekad` use).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from schemas import sensors
from schemas.observations import Observations, SourceFrames


def month_start_ms(times_ms: np.ndarray) -> np.ndarray:
    """ms since epoch -> the first instant (UTC) of each time's calendar month, in ms."""
    t = np.asarray(times_ms, dtype=np.int64)
    months = t.astype("datetime64[ms]").astype("datetime64[M]")
    return months.astype("datetime64[ms]").astype(np.int64)


def month_bounds_ms(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The calendar months (UTC) overlapping [start_ms, end_ms), clipped to it."""
    out = []
    month = np.datetime64(int(start_ms), "ms").astype("datetime64[M]")
    while True:
        a = max(int(month.astype("datetime64[ms]").astype(np.int64)), int(start_ms))
        b = min(int((month + 1).astype("datetime64[ms]").astype(np.int64)), int(end_ms))
        if a >= end_ms:
            return out
        out.append((a, b))
        month += 1


def dekad_start_ms(times_ms: np.ndarray) -> np.ndarray:
    """ms since epoch -> the first instant (UTC) of each time's dekad (day 1, 11 or 21)."""
    t = np.asarray(times_ms, dtype=np.int64)
    days = t.astype("datetime64[ms]").astype("datetime64[D]")
    month = days.astype("datetime64[M]")
    day_of_month = (days - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    start = month.astype("datetime64[D]") + np.minimum(day_of_month // 10, 2) * 10
    return start.astype("datetime64[ms]").astype(np.int64)


STEPS = {"monthly": month_start_ms, "dekadal": dekad_start_ms}


def composite(frames: SourceFrames, step: str = "monthly") -> SourceFrames:
    """One frame per step (`monthly` or `dekadal`) with observations: the per-pixel median
    of valid values."""
    if step not in STEPS:
        raise ValueError(f"composite step must be one of {sorted(STEPS)}; got {step!r}")
    if sensors.get_sensor(frames.source).is_static or frames.num_frames == 0:
        return frames
    month = STEPS[step](frames.times_ms)
    months = np.unique(month)
    masked = frames.masked_values()
    t, h, w, c = masked.shape
    values = np.full((len(months), h, w, c), np.nan, dtype=np.float32)
    valid = np.zeros((len(months), h, w), dtype=bool)
    geometry = {k: np.full((len(months),), np.nan, np.float32) for k in frames.geometry}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels and empty means
        for i, m in enumerate(months):
            sel = month == m
            values[i] = np.nanmedian(masked[sel], axis=0)
            valid[i] = frames.valid[sel].any(axis=0) & np.isfinite(values[i]).any(axis=-1)
            for k, g in frames.geometry.items():
                geometry[k][i] = np.nanmean(g[sel])
    return SourceFrames(
        frames.source,
        values,
        valid,
        months.astype(np.int64),
        geometry,
        frames.band_names,
    )


def composites(obs: Observations, step: str = "monthly") -> Observations:
    """`composite` applied to every source of an Observations."""
    return dataclasses.replace(obs, sources={k: composite(v, step) for k, v in obs.sources.items()})


def monthly_composite(frames: SourceFrames) -> SourceFrames:
    """One frame per calendar month with observations (`composite(frames, "monthly")`)."""
    return composite(frames, "monthly")


def monthly_composites(obs: Observations) -> Observations:
    """`monthly_composite` applied to every source of an Observations."""
    return composites(obs, "monthly")
