"""Temporal composites of observations: monthly medians per source.

Many users' extractions, and the real samples in shared/realdata, hold monthly median
composites rather than single acquisitions. `monthly_composite` turns a source's frames into
that form so training data, the embed job and model/ can all see both. It lives in schemas/
(plain numpy, no Beam/TF/JAX) because model/ never imports beam_jobs/.

A month's composite frame: per pixel and band, the median of the valid, finite values of that
month's frames (NaN where there are none); valid where the pixel was valid in at least one of
them; time = the first instant of the month (UTC), as openEO/WorldCereal label composites;
geometry = the mean of the month's known values. Months without frames are left out. Static
sources are returned unchanged.
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


def monthly_composite(frames: SourceFrames) -> SourceFrames:
    """One frame per calendar month with observations: the per-pixel median of valid values."""
    if sensors.get_sensor(frames.source).is_static or frames.num_frames == 0:
        return frames
    month = month_start_ms(frames.times_ms)
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


def monthly_composites(obs: Observations) -> Observations:
    """`monthly_composite` applied to every source of an Observations."""
    return dataclasses.replace(
        obs, sources={k: monthly_composite(v) for k, v in obs.sources.items()}
    )
