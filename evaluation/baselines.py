"""Designed baselines computed from raw observations: `median_composite`, `designed`,
`pca64`, `xy` (definitions: the evaluation package docstring)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from evaluation import PCA_DIMS, PERCENTILES
from evaluation.datasets import PixelSeries
from evaluation.probes import standardize
from schemas import sensors
from schemas.grid import utm_to_lonlat
from schemas.observations import Observations, SourceFrames


def select_pixels(obs: Observations, index: np.ndarray) -> Observations:
    """The pixels `index` (row-major into H * W) of a window or point set, as a point set."""
    index = np.asarray(index, dtype=np.int64)
    _, w = obs.spatial_shape
    rows, cols = np.divmod(index, w)
    sources = {
        sid: SourceFrames(
            sid,
            sf.values[:, rows, cols][:, :, None, :],
            sf.valid[:, rows, cols][:, :, None],
            sf.times_ms,
            dict(sf.geometry),
            sf.band_names,
        )
        for sid, sf in obs.sources.items()
    }
    lon, lat = pixel_lonlat(obs, index)
    if obs.point_ids is not None:
        ids = np.asarray(obs.point_ids)[index]
    else:
        ids = np.asarray([f"px{i}" for i in index])
    return Observations(sources, point_ids=ids, lon=lon, lat=lat, errors=list(obs.errors))


def pixel_lonlat(obs: Observations, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat of pixels `index` of a window (pixel centres) or a point set."""
    index = np.asarray(index, dtype=np.int64)
    if obs.window is None:
        return np.asarray(obs.lon, np.float64)[index], np.asarray(obs.lat, np.float64)[index]
    x, y = obs.window.pixel_centers()
    lon, lat = utm_to_lonlat(x.reshape(-1)[index], y.reshape(-1)[index], obs.window.epsg)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def _flat_series(sf: SourceFrames) -> np.ndarray:
    """(T, H, W, C) masked values -> (T, H * W, C)."""
    v = sf.masked_values()
    return v.reshape(v.shape[0], -1, v.shape[-1])


def _months(times_ms: np.ndarray) -> np.ndarray:
    """Calendar month (1-12, UTC) of each timestamp."""
    m = np.asarray(times_ms, np.int64).astype("datetime64[ms]").astype("datetime64[M]")
    return m.astype(np.int64) % 12 + 1


def series_features(values: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
    """One band's time series -> percentiles and calendar-monthly medians, per pixel.

    Args:
        values: (T, N) values, NaN where missing.
        times_ms: (T,) acquisition times.

    Returns:
        (N, 15) float32: the 10th, 50th, 90th percentiles (linear interpolation) over the
        valid values, then the medians of January .. December (NaN for a month with none).
    """
    values = np.asarray(values, np.float32)
    n = values.shape[1]
    out = np.full((n, len(PERCENTILES) + 12), np.nan, np.float32)
    if values.shape[0] == 0:
        return out
    months = _months(times_ms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels give NaN on purpose
        out[:, : len(PERCENTILES)] = np.nanpercentile(values, PERCENTILES, axis=0).T
        for m in range(1, 13):
            sel = months == m
            if sel.any():
                out[:, len(PERCENTILES) + m - 1] = np.nanmedian(values[sel], axis=0)
    return out


def _ordered_sources(obs: Observations) -> list[str]:
    """Sources in registry order, so feature columns are the same for every data set."""
    return [s for s in sensors.SOURCE_IDS if s in obs.sources]


def designed_feature_names(
    obs: Observations, extra_series: Mapping[str, PixelSeries] | None = None
) -> list[str]:
    """Column names of `designed_features(obs, extra_series)`."""
    stats = [f"p{int(p)}" for p in PERCENTILES] + [f"m{m:02d}" for m in range(1, 13)]
    names = []
    for sid in _ordered_sources(obs):
        sf = obs.sources[sid]
        for band in sf.band_names:
            if sensors.get_sensor(sid).is_static:
                names.append(f"{sid}.{band}")
            else:
                names.extend(f"{sid}.{band}.{s}" for s in stats)
    for name in extra_series or {}:
        names.extend(f"{name}.{s}" for s in stats)
    return names


def designed_features(
    obs: Observations, extra_series: Mapping[str, PixelSeries] | None = None
) -> np.ndarray:
    """Hand-designed per-pixel features from raw observations.

    For every band of every time-varying source (registry order, then the source's bands):
    the 10th/50th/90th percentiles and the 12 calendar-monthly medians of its valid values
    (`series_features`); static sources (DEM elevation and slope) contribute their value.
    Then the same 15 statistics of each extra series. Names: `designed_feature_names`.

    Args:
        obs: a window or point set.
        extra_series: pseudo-bands per pixel (N = H * W columns), e.g. NDVI.

    Returns:
        (H * W, F) float32, row-major pixels, NaN where a statistic has no valid value.
    """
    h, w = obs.spatial_shape
    cols = []
    for sid in _ordered_sources(obs):
        sf = obs.sources[sid]
        flat = _flat_series(sf)
        if sensors.get_sensor(sid).is_static:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                cols.append(np.nanmean(flat, axis=0))  # one frame: its value, NaN if invalid
            continue
        for c in range(flat.shape[-1]):
            cols.append(series_features(flat[..., c], sf.times_ms))
    for name, s in (extra_series or {}).items():
        if s.values.shape[1] != h * w:
            raise ValueError(f"extra series {name!r} has {s.values.shape[1]} px, not {h * w}")
        cols.append(series_features(s.values, s.times_ms))
    if not cols:
        return np.zeros((h * w, 0), np.float32)
    return np.concatenate(cols, axis=1).astype(np.float32)


def median_composite(obs: Observations, source: str = "sentinel2_l2a") -> np.ndarray:
    """Per-band median of the valid frames of one source (default Sentinel-2), per pixel.

    Returns:
        (H * W, C) float32 in registry band order (NaN where a pixel has no valid frame);
        (H * W, 0) when the observations lack the source.
    """
    h, w = obs.spatial_shape
    if source not in obs.sources:
        return np.zeros((h * w, 0), np.float32)
    flat = _flat_series(obs.sources[source].with_registry_bands())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(flat, axis=0).astype(np.float32)


def pca_features(features: np.ndarray, n_components: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """Standardize over all rows (NaN -> 0 after), then PCA to at most `n_components` dims."""
    from sklearn.decomposition import PCA

    x = standardize(features, features)
    k = min(n_components, x.shape[0], x.shape[1])
    if k == 0:
        return np.zeros((x.shape[0], 0), np.float32)
    return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


def baseline_features(
    obs: Observations,
    index: np.ndarray,
    extra_series: Mapping[str, PixelSeries] | None = None,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """All baselines for pixels `index` of `obs` (extra series: one column per index).

    Returns:
        {name: (len(index), F)} for `median_composite`, `designed`, `pca64`, `xy`.
    """
    pts = select_pixels(obs, index)
    designed = designed_features(pts, extra_series)
    lon, lat = pixel_lonlat(obs, index)
    return {
        "median_composite": median_composite(pts),
        "designed": designed,
        "pca64": pca_features(designed, PCA_DIMS, seed),
        "xy": np.stack([lon, lat], axis=1).astype(np.float32),
    }
