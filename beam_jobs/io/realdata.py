"""Readers for the two real samples in shared/realdata, into the in-memory Observations form.

Unit decisions, checked on the files themselves (see tests/beam_jobs/io/test_realdata.py):

WorldCereal Belgium 2021 (`inputs.nc`, 12 monthly composites, labelled by the first day of
the month, which is what `times_ms` holds; variables int16 flagged `_Unsigned`, so read as
uint16 with 65535 = no data):
- Sentinel-2 L2A: reflectance = DN / 10000. No -0.1 offset: these composites are harmonized
  (dark pixels go down to DN 0, which the L2A offset would make negative). No B8A (NaN).
- Sentinel-1: dB = 20 log10(DN) - 83; the VV median is then -9.9 dB, as it should be for
  farmland.
- AgERA5 TMEAN: 0.01 K (monthly means 275.5-291.5 K). PRECIP: 0.01 mm summed over the
  month (36-161 mm per month, 1188 mm over the year; as daily means these would be 36-161
  mm/day), so m/day = DN / 100 / 1000 / days in the month.
- elevation m, slope whole degrees, repeated in every frame: read from the first.

eo-learn Slovenia (TestEOPatch + REFERENCE_SCENES.npy): 101 x 100 px at (nearly) 10 m in
EPSG:32633. The reference scenes are Sentinel-2 L1C top-of-atmosphere reflectance (13 bands);
they fill the registry's sentinel2_l2a bands as the closest stand-in (an approximation: no
atmospheric correction). The DEM is in m; slope is derived as the STAC reader derives it.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import xarray as xr

from beam_jobs.io.points import observations_to_point_table
from beam_jobs.io.stac import datetime_to_ms
from schemas import sensors
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

__all__ = [
    "EolearnSample",
    "LULC_CLASSES",
    "WORLDCEREAL_WINDOW",
    "observations_to_point_table",
    "read_eolearn",
    "read_worldcereal",
]

WORLDCEREAL_WINDOW = GridWindow(32631, x0=664000.0, y0=5612120.0, width=100, height=100)
_WC_NODATA = 65535
_WC_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")

# eo-learn LULC reference classes (mask_timeless/LULC.npy).
LULC_CLASSES: dict[int, str] = {
    0: "no data",
    1: "cultivated land",
    2: "forest",
    3: "grassland",
    4: "shrubland",
    5: "water",
    6: "wetlands",
    7: "tundra",
    8: "artificial surface",
    9: "bare land",
    10: "snow and ice",
}
# REFERENCE_SCENES.npy band order (Sentinel-2 L1C, all 13 bands).
_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
              "B11", "B12")  # fmt: skip
_PIXEL_TOLERANCE = 0.01  # relative: eo-learn sizes pixels as bbox / shape, about 10 m


# ---------------------------------------------------------------------------------- worldcereal


def wc_raw(ds: xr.Dataset, name: str) -> np.ndarray:
    """A variable's stored values as uint16 (the file's int16 carries `_Unsigned`)."""
    if name not in ds:
        raise KeyError(f"worldcereal file has no variable {name!r}; it has {sorted(ds.data_vars)}")
    a = ds[name].values
    if a.dtype == np.int16:  # opened without CF decoding: apply `_Unsigned` ourselves
        a = a.view(np.uint16)
    if a.dtype != np.uint16:
        raise ValueError(f"worldcereal {name}: expected uint16 (int16 _Unsigned), got {a.dtype}")
    return a


def wc_window(ds: xr.Dataset) -> GridWindow:
    """The file's grid, checked against WORLDCEREAL_WINDOW's pixel centres."""
    w = WORLDCEREAL_WINDOW
    x, y = w.pixel_centers()
    if not (
        np.allclose(ds["x"].values, x[0]) and np.allclose(ds["y"].values, y[:, 0])
    ):  # a different extraction would need its own window
        raise ValueError(
            f"worldcereal x/y centres {ds['x'].values[[0, -1]]}, {ds['y'].values[[0, -1]]} "
            f"do not match {w}"
        )
    return w


def read_worldcereal(path: str | Path) -> Observations:
    """Read the WorldCereal Belgium 2021 sample into Observations over its window.

    Args:
        path: the `inputs.nc` file.

    Returns:
        Observations with sentinel2_l2a, sentinel1, era5_land (12 monthly frames each, at the
        first day of the month) and cop_dem (one static frame), in registry units; geometry
        is NaN (composites carry none).
    """
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        window = wc_window(ds)
        times = (ds["t"].values.astype("datetime64[ms]").astype(np.int64)).astype(np.int64)
        t = len(times)
        h, w = window.shape
        frames: dict[str, SourceFrames] = {}

        s2 = sensors.get_sensor("sentinel2_l2a")
        values = np.full((t, h, w, len(s2.bands)), np.nan, dtype=np.float32)
        valid = np.ones((t, h, w), dtype=bool)
        for band in _WC_S2_BANDS:
            raw = wc_raw(ds, f"S2-L2A-{band}")
            missing = raw == _WC_NODATA
            values[..., s2.band_index(band)] = np.where(missing, np.nan, raw / 10000.0)
            valid &= ~missing
        frames[s2.id] = SourceFrames(s2.id, values, valid, times)

        s1 = sensors.get_sensor("sentinel1")
        values = np.full((t, h, w, len(s1.bands)), np.nan, dtype=np.float32)
        valid = np.ones((t, h, w), dtype=bool)
        for band in ("VV", "VH"):
            raw = wc_raw(ds, f"S1-SIGMA0-{band}")
            # DN 0 would be -inf dB: no data as much as 65535 is.
            missing = (raw == _WC_NODATA) | (raw == 0)
            with np.errstate(divide="ignore"):
                db = 20.0 * np.log10(raw.astype(np.float64)) - 83.0
            values[..., s1.band_index(band)] = np.where(missing, np.nan, db)
            valid &= ~missing
        frames[s1.id] = SourceFrames(s1.id, values, valid, times)

        era5 = sensors.get_sensor("era5_land")
        tmean, precip = wc_raw(ds, "AGERA5-TMEAN"), wc_raw(ds, "AGERA5-PRECIP")
        days = np.asarray(
            [calendar.monthrange(*_year_month(ms))[1] for ms in times], dtype=np.float64
        )
        values = np.full((t, h, w, len(era5.bands)), np.nan, dtype=np.float32)
        values[..., era5.band_index("temperature_2m")] = np.where(
            tmean == _WC_NODATA, np.nan, tmean / 100.0
        )
        values[..., era5.band_index("total_precipitation")] = np.where(
            precip == _WC_NODATA, np.nan, precip / 100.0 / 1000.0 / days[:, None, None]
        )
        valid = (tmean != _WC_NODATA) & (precip != _WC_NODATA)
        frames[era5.id] = SourceFrames(era5.id, values, valid, times)

        dem = sensors.get_sensor("cop_dem")
        elev, slope = wc_raw(ds, "elevation")[0], wc_raw(ds, "slope")[0]
        values = np.full((1, h, w, len(dem.bands)), np.nan, dtype=np.float32)
        values[0, ..., dem.band_index("elevation")] = np.where(elev == _WC_NODATA, np.nan, elev)
        values[0, ..., dem.band_index("slope")] = np.where(slope == _WC_NODATA, np.nan, slope)
        valid = ((elev != _WC_NODATA) & (slope != _WC_NODATA))[None]
        frames[dem.id] = SourceFrames(dem.id, values, valid, [sensors.STATIC_TIME_MS])
    return Observations(sources=frames, window=window)


def _year_month(ms: int) -> tuple[int, int]:
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return d.year, d.month


# ---------------------------------------------------------------------------------- eo-learn


@dataclasses.dataclass
class EolearnSample:
    """The eo-learn Slovenia patch: observations plus NDVI series and a land-cover map."""

    observations: Observations  # sentinel2_l2a (first 5 dates, L1C TOA) and cop_dem
    window: GridWindow
    ndvi: np.ndarray  # (T, H, W) float32, all 68 dates
    ndvi_times_ms: np.ndarray  # (T,) int64
    ndvi_valid: np.ndarray  # (T, H, W) bool: IS_VALID & ~CLM
    lulc: np.ndarray  # (H, W) uint16 class codes
    lulc_classes: dict[int, str] = dataclasses.field(default_factory=lambda: dict(LULC_CLASSES))


def _eolearn_window(bbox_path: Path, height: int, width: int) -> GridWindow:
    doc = json.loads(bbox_path.read_text())
    epsg = int(doc["crs"]["properties"]["name"].rsplit(":", 1)[-1])
    xs = [p[0] for p in doc["coordinates"][0]]
    ys = [p[1] for p in doc["coordinates"][0]]
    minx, maxx, miny, maxy = min(xs), max(xs), min(ys), max(ys)
    res_x, res_y = (maxx - minx) / width, (maxy - miny) / height
    for res in (res_x, res_y):
        if abs(res / 10.0 - 1.0) > _PIXEL_TOLERANCE:
            raise ValueError(f"{bbox_path}: pixel size {res_x:.3f} x {res_y:.3f} m is not 10 m")
    # The patch is not aligned to our grid and its pixels are 9.995 m: a 10 m window at its
    # corner is off by at most half a metre at the far edge.
    return GridWindow(epsg, x0=minx, y0=maxy, width=width, height=height)


def _match_scene_dates(values: np.ndarray, ndvi: np.ndarray, s2: sensors.Sensor) -> np.ndarray:
    """The NDVI frame each reference scene belongs to.

    The scenes are the patch's first five dates but not stored in date order (scene 0 is the
    third date); their NDVI from B04/B08 equals the patch's NDVI frame exactly, which finds it.
    """
    red, nir = values[..., s2.band_index("B04")], values[..., s2.band_index("B08")]
    with np.errstate(divide="ignore", invalid="ignore"):
        scene_ndvi = (nir - red) / (nir + red)
    err = np.nanmean(np.abs(scene_ndvi[:, None] - ndvi[None]), axis=(2, 3))  # (scenes, T)
    t_idx = np.argmin(err, axis=1)
    if (err[np.arange(len(t_idx)), t_idx] > 1e-3).any() or len(set(t_idx)) != len(t_idx):
        raise ValueError(f"REFERENCE_SCENES do not match NDVI dates one to one: {err.min(1)}")
    return t_idx


def read_eolearn(directory: str | Path) -> EolearnSample:
    """Read the eo-learn Slovenia sample.

    Args:
        directory: the `eolearn_slovenia` folder (holding TestEOPatch/ and
            REFERENCE_SCENES.npy).

    Returns:
        An EolearnSample; its observations hold sentinel2_l2a (the first five dates, each
        scene matched to its date by its NDVI, valid where IS_VALID and not CLM) and cop_dem
        (elevation and derived slope).
    """
    root = Path(directory)
    patch = root / "TestEOPatch"
    stamps = json.loads((patch / "timestamps.json").read_text())
    times = np.asarray(
        [datetime_to_ms(dt.datetime.fromisoformat(s)) for s in stamps], dtype=np.int64
    )
    ndvi = np.load(patch / "data" / "NDVI.npy")[..., 0].astype(np.float32)
    is_valid = np.load(patch / "mask" / "IS_VALID.npy")[..., 0].astype(bool)
    clm = np.load(patch / "mask" / "CLM.npy")[..., 0].astype(bool)
    ndvi_valid = is_valid & ~clm
    lulc = np.load(patch / "mask_timeless" / "LULC.npy")[..., 0].astype(np.uint16)
    dem = np.load(patch / "data_timeless" / "DEM.npy")[..., 0].astype(np.float32)
    t, h, w = ndvi.shape
    if len(times) != t:
        raise ValueError(f"{patch}: {len(times)} timestamps but NDVI has {t} frames")
    window = _eolearn_window(patch / "bbox.geojson", h, w)

    s2 = sensors.get_sensor("sentinel2_l2a")
    ref = np.load(root / "REFERENCE_SCENES.npy")
    if ref.shape[1:] != (h, w, len(_L1C_BANDS)):
        raise ValueError(f"REFERENCE_SCENES.npy shape {ref.shape}, expected (T, {h}, {w}, 13)")
    values = ref[..., [_L1C_BANDS.index(b) for b in s2.band_names]].astype(np.float32)
    t_idx = _match_scene_dates(values, ndvi, s2)
    order = np.argsort(t_idx)
    values, t_idx = values[order], t_idx[order]
    valid = ndvi_valid[t_idx] & np.isfinite(values).all(axis=-1)
    frames = {s2.id: SourceFrames(s2.id, values, valid, times[t_idx])}

    cop = sensors.get_sensor("cop_dem")
    dem_values = np.stack([dem, sensors.slope_degrees(dem, window.pixel_size)], axis=-1)[None]
    dem_values = dem_values[..., [("elevation", "slope").index(b) for b in cop.band_names]]
    frames[cop.id] = SourceFrames(
        cop.id, dem_values, np.isfinite(dem)[None], [sensors.STATIC_TIME_MS]
    )
    return EolearnSample(
        observations=Observations(sources=frames, window=window),
        window=window,
        ndvi=ndvi,
        ndvi_times_ms=times,
        ndvi_valid=ndvi_valid,
        lulc=lulc,
    )


# ---------------------------------------------------------------------------------- fuel moisture

# presto_fuel_moisture/s1_s2_era5_srtm.npy channel order (the README beside the files).
FUEL_MOISTURE_CHANNELS = ("VV", "VH", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                          "B09", "B11", "B12", "temperature_2m", "total_precipitation",
                          "elevation", "slope", "NDVI")  # fmt: skip
# The steps carry a calendar month but no year; 2021 (a year with both Sentinel-1 satellites,
# not a leap year, so the 30-day spacing below fits every month pattern of the file) is ours.
FUEL_MOISTURE_YEAR = 2021
_FM_STEP_DAYS = 30


@dataclasses.dataclass
class FuelMoistureSample:
    """The presto live fuel moisture set: a point set, its target and its site split."""

    observations: Observations  # point set: sentinel1, sentinel2_l2a, era5_land, cop_dem
    target: np.ndarray  # (N,) live fuel moisture, %
    is_test: np.ndarray  # (N,) bool, the given split (by site)
    site: np.ndarray  # (N,) site names
    step_times_ms: np.ndarray  # (N, 3) int64: each sample's steps, in step order


def fuel_moisture_step_times(months: np.ndarray, year: int = FUEL_MOISTURE_YEAR) -> np.ndarray:
    """0-based calendar months of consecutive 30-day steps -> one timestamp per step (ms).

    Each month pattern (m0, m1, ...) gets the days d, d + 30, d + 60, ... (00:00 UTC) with d
    the middle of every start day of `year` whose steps fall in months m0, m1, ... in turn
    (so a repeated month is two steps 30 days apart inside it). A step past December 31 is
    folded back 365 days into January of the same year: the year is unknown, and keeping every
    sample in one calendar year keeps its steps at their day of year for a yearly model.

    Raises:
        ValueError: a pattern no start day satisfies (naming it).
    """
    months = np.asarray(months, np.int64)
    jan1 = np.datetime64(f"{year}-01-01", "D")
    steps = np.arange(months.shape[1]) * _FM_STEP_DAYS
    out = np.zeros(months.shape, np.int64)
    for pattern in np.unique(months, axis=0):
        days = jan1 + np.arange(365)[:, None] + steps[None, :]  # (start day, step)
        month_of = days.astype("datetime64[M]").astype(np.int64) % 12
        ok = np.flatnonzero((month_of == pattern[None, :]).all(axis=1))
        if not len(ok):
            raise ValueError(f"fuel moisture: no {_FM_STEP_DAYS}-day steps fit months {pattern}")
        day = ok[len(ok) // 2] + steps
        day = np.where(day >= 365, day - 365, day)
        ms = (jan1 + day).astype("datetime64[ms]").astype(np.int64)
        out[(months == pattern[None, :]).all(axis=1)] = ms
    return out


def read_fuel_moisture(directory: str | Path, year: int = FUEL_MOISTURE_YEAR) -> FuelMoistureSample:
    """Read presto's live fuel moisture set into a point set in registry units.

    Each of the N samples is one point (id `fm0000`.., its site's lon/lat) with three 30-day
    composites at `fuel_moisture_step_times`: Sentinel-1 VV, VH in dB as stored (values below
    the registry's valid range, a -50 dB no-signal floor, become NaN); Sentinel-2 B02..B12
    reflectance = stored / 10000 (B09 left out: the registry has no B09); ERA5 temperature in
    K and precipitation in m/day as stored (a monthly mean of daily totals); elevation (m) and
    slope (deg) as cop_dem's static frame (the same in every step). The file's NDVI is left
    out (the registry has none; the model derives what it needs from the bands).

    Args:
        directory: the `presto_fuel_moisture` folder.
        year: the calendar year the steps are placed in.

    Returns:
        A FuelMoistureSample.
    """
    root = Path(directory)
    x = np.load(root / "s1_s2_era5_srtm.npy")
    months = np.load(root / "month.npy")
    latlon = np.load(root / "latlon.npy")
    target = np.load(root / "target.npy").astype(np.float64)
    is_test = np.load(root / "is_test.npy").astype(bool)
    site = np.load(root / "site.npy", allow_pickle=True).astype(str)
    n, t, c = x.shape
    if c != len(FUEL_MOISTURE_CHANNELS) or months.shape != (n, t):
        raise ValueError(
            f"{root}: s1_s2_era5_srtm.npy {x.shape} / month.npy {months.shape}; expected "
            f"(N, T, {len(FUEL_MOISTURE_CHANNELS)}) / (N, T)"
        )
    for name, a in (("target", target), ("is_test", is_test), ("site", site)):
        if len(a) != n:
            raise ValueError(f"{root}: {name}.npy has {len(a)} rows, not {n}")
    times = fuel_moisture_step_times(months, year)
    uniq, t_idx = np.unique(times, return_inverse=True)
    t_idx = t_idx.reshape(n, t)
    rows = np.repeat(np.arange(n)[:, None], t, axis=1)
    scale = {"sentinel2_l2a": 1e-4}
    frames = {}
    for sid in ("sentinel2_l2a", "sentinel1", "era5_land"):
        sensor = sensors.get_sensor(sid)
        values = np.full((len(uniq), n, 1, len(sensor.bands)), np.nan, np.float32)
        valid = np.zeros((len(uniq), n, 1), bool)
        for b, band in enumerate(sensor.bands):
            if band.name not in FUEL_MOISTURE_CHANNELS:
                continue
            v = x[..., FUEL_MOISTURE_CHANNELS.index(band.name)] * scale.get(sid, 1.0)
            lo, hi = band.valid_range
            v = np.where((v >= lo) & (v <= hi), v, np.nan)
            values[t_idx, rows, 0, b] = v
        valid[t_idx, rows, 0] = True
        valid &= np.isfinite(values).any(axis=-1)
        frames[sid] = SourceFrames(sid, values, valid, uniq)
    dem = sensors.get_sensor("cop_dem")
    static = np.stack(
        [x[:, 0, FUEL_MOISTURE_CHANNELS.index(b)] for b in dem.band_names], axis=-1
    ).astype(np.float32)
    frames[dem.id] = SourceFrames(
        dem.id, static[None, :, None, :], np.ones((1, n, 1), bool), [sensors.STATIC_TIME_MS]
    )
    obs = Observations(
        sources=frames,
        point_ids=np.asarray([f"fm{i:04d}" for i in range(n)], object),
        lon=latlon[:, 1].astype(np.float64),
        lat=latlon[:, 0].astype(np.float64),
    )
    return FuelMoistureSample(obs, target, is_test, site, times)
