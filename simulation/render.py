"""Sensors: acquisition schedules, geometry and the rendering of one acquisition over a granule.

- Sentinel-2 L2A: every 5 days at ~10:30 local solar time; 10 m and 20 m bands; clouds and
  displaced shadows from OpenSimplex fields in absolute zone coordinates (seamless across
  tiles); SCL at 20 m with realistic mislabels; Gaussian noise.
- Landsat 8/9 C2 L2: every 8 days at ~10:10; 30 m bands and QA_PIXEL bits.
- Sentinel-1 GRD: a 6-day slot grid alternating ascending (~18:00) and descending (~06:00)
  passes, some slots missed (6-12 days apart); VV/VH from a water-cloud model, incidence
  29-46 deg across the swath per pixel, gamma speckle (ENL 4.4) in linear power.
- Copernicus DEM: static 30 m elevation.
- ERA5-Land: monthly means on the 0.1 degree EPSG:4326 grid.

`*_truth` functions return noise-free, cloud-free values on any 10 m window (the truth API);
`render_frame` / `render_era5` return what the files hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math

import numpy as np
from affine import Affine
from scipy import ndimage

from schemas import sensors
from schemas.grid import GridWindow, Tile, lonlat_to_utm, utm_epsg, utm_to_lonlat
from simulation import classes as C
from simulation import spectra
from simulation import world as W

MS_PER_HOUR = 3_600_000
# Revisit intervals come from the registry (Sensor.revisit_days).
S1_SLOT_DAYS = int(sensors.SENTINEL1.revisit_days)
S1_MISS_PROB = 0.25
S2_LOCAL_HOUR = 10.5
LANDSAT_LOCAL_HOUR = 10.17
S1_ASC_LOCAL_HOUR = 18.0
S1_DESC_LOCAL_HOUR = 6.0
S1_INCIDENCE_RANGE = (29.0, 46.0)
S1_SWATH_M = 250_000.0
S1_ENL = 4.4
S2_NOISE = 0.004
LANDSAT_NOISE = 0.005
ERA5_STEP_DEG = 0.1

# Quality layers: not registry bands, but assets the registry's Mask names.
SCL = {
    "nodata": 0,
    "dark": 2,
    "shadow": 3,
    "vegetation": 4,
    "not_vegetated": 5,
    "water": 6,
    "cloud_medium": 8,
    "cloud_high": 9,
    "cirrus": 10,
}
# Fraction of direct light a band keeps in full cloud shadow (diffuse skylight is blue).
_SHADE_S2 = np.array([0.45, 0.35, 0.30, 0.28, 0.25, 0.25, 0.25, 0.25, 0.20, 0.20], np.float32)
_SHADE_LS = np.array([0.45, 0.35, 0.30, 0.25, 0.20, 0.20], np.float32)


# ---------------------------------------------------------------------------------- geometry


def sun_angles(lon: float, lat: float, time_ms: int) -> tuple[float, float]:
    """(zenith, azimuth) of the sun in degrees (NOAA approximation; azimuth from north)."""
    t = dt.datetime.fromtimestamp(time_ms / 1000.0, tz=dt.UTC)
    doy = t.timetuple().tm_yday
    hour = t.hour + t.minute / 60.0 + t.second / 3600.0
    g = 2 * math.pi / 365.0 * (doy - 1 + (hour - 12) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    tst = hour * 60.0 + eqtime + 4.0 * lon
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.degrees(math.acos(max(-1.0, min(1.0, cosz))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return zen, (az + 180.0) % 360.0


def _local_time_ms(day_ms: int, local_hour: float, lon: float) -> int:
    utc_hour = local_hour - lon / 15.0
    return int(day_ms + round(utc_hour * MS_PER_HOUR / 1000.0) * 1000)


def acquisition_times(region: W.SimRegion, source_id: str) -> list[int]:
    """Acquisition times (ms) of a source over the region's years, sorted."""
    sensor = sensors.get_sensor(source_id)
    if sensor.is_static:
        return [sensors.STATIC_TIME_MS]
    years = sorted(set(region.years))
    if source_id == "era5_land":
        return [
            int(dt.datetime(y, m, 1, tzinfo=dt.UTC).timestamp() * 1000)
            for y in years
            for m in range(1, 13)
        ]
    lon, _ = region.center_lonlat
    start = W.year_start_ms(years[0])
    end = W.year_start_ms(years[-1] + 1)
    ndays = (end - start) // W.MS_PER_DAY
    out: list[int] = []
    if source_id in ("sentinel2_l2a", "landsat_c2l2"):
        step = int(sensors.get_sensor(source_id).revisit_days)
        hour = S2_LOCAL_HOUR if source_id == "sentinel2_l2a" else LANDSAT_LOCAL_HOUR
        phase = W.stable_seed(region.seed, source_id, "phase") % step
        for d in range(phase, ndays, step):
            out.append(_local_time_ms(start + d * W.MS_PER_DAY, hour, lon))
    elif source_id == "sentinel1":
        phase = W.stable_seed(region.seed, source_id, "phase") % S1_SLOT_DAYS
        missed_last = False
        for k, d in enumerate(range(phase, ndays, S1_SLOT_DAYS)):
            u = W.hash_uniform(W.stable_seed(region.seed, "s1-miss"), np.array([k]))[0]
            if u < S1_MISS_PROB and not missed_last:
                missed_last = True
                continue
            missed_last = False
            hour = S1_ASC_LOCAL_HOUR if k % 2 == 0 else S1_DESC_LOCAL_HOUR
            out.append(_local_time_ms(start + d * W.MS_PER_DAY, hour, lon))
    else:
        raise ValueError(f"no schedule for source {source_id!r}")
    year_set = set(years)
    return sorted(t for t in out if dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC).year in year_set)


def s1_orbit_state(region: W.SimRegion, time_ms: int) -> str:
    """'ascending' for evening passes, 'descending' for morning ones (local solar time)."""
    lon, _ = region.center_lonlat
    local = (time_ms / MS_PER_HOUR + lon / 15.0) % 24.0
    return "ascending" if local >= 12.0 else "descending"


def s1_center_incidence(region: W.SimRegion, orbit_state: str) -> float:
    """Incidence angle at the region centre for the region's ascending or descending track."""
    u = W.hash_uniform(W.stable_seed(region.seed, "s1-track", orbit_state), np.array([0]))[0]
    return 32.0 + 12.0 * float(u)


def s1_incidence(region: W.SimRegion, window: GridWindow, orbit_state: str) -> np.ndarray:
    """(H, W) incidence angle (deg): growing away from the track, eastward when ascending."""
    lon, lat = region.center_lonlat
    cx, _ = lonlat_to_utm(lon, lat, window.epsg)
    xs = window.x0 + (np.arange(window.width) + 0.5) * window.pixel_size
    sign = 1.0 if orbit_state == "ascending" else -1.0
    span = S1_INCIDENCE_RANGE[1] - S1_INCIDENCE_RANGE[0]
    theta = s1_center_incidence(region, orbit_state) + sign * span * (xs - cx) / S1_SWATH_M
    theta = np.clip(theta, *S1_INCIDENCE_RANGE).astype(np.float32)
    return np.broadcast_to(theta[None, :], window.shape).copy()


def platform(source_id: str, time_ms: int) -> str:
    k = (time_ms // W.MS_PER_DAY) // 5
    if source_id == "sentinel2_l2a":
        return "sentinel-2a" if k % 2 == 0 else "sentinel-2b"
    if source_id == "landsat_c2l2":
        return "landsat-8" if (time_ms // W.MS_PER_DAY // 8) % 2 == 0 else "landsat-9"
    if source_id == "sentinel1":
        return "sentinel-1a"
    return {"cop_dem": "tandem-x", "era5_land": "era5-land"}[source_id]


# ---------------------------------------------------------------------------------- truth


def _reflectance(biome: str, st: W.SurfaceState, cols: slice) -> np.ndarray:
    green, brown = spectra.canopy_luts(biome)
    em = spectra.endmembers()
    g = spectra.lookup(green[:, :, cols], st.cls, st.lai)
    b = spectra.lookup(brown[:, :, cols], st.cls, st.lai)
    canopy = (1.0 - st.brown[:, None]) * g + st.brown[:, None] * b
    other = (st.water + st.impervious + st.char + st.rock)[:, None]
    out = (
        (1.0 - other) * canopy
        + st.water[:, None] * em["water"][cols]
        + st.impervious[:, None] * em["urban"][cols]
        + st.char[:, None] * em["char"][cols]
        + st.rock[:, None] * em["rock"][cols]
    )
    return out.astype(np.float32)


def _optical(
    region: W.SimRegion, source_id: str, window: GridWindow, time_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Clear-sky reflectance (H, W, C) and open-water fraction (H, W) on a 10 m window."""
    world = W.get_world(region, window.epsg)
    f = W.window_fields(region, window)
    cols = spectra.BAND_COLUMNS[source_id]
    st = W.surface_state(region, world, f, None, time_ms)
    refl = _reflectance(region.biome, st, cols)
    water = st.water.copy()
    e = f.edge
    if e.size:
        st2 = W.surface_state(region, world, f, e, time_ms, second=True)
        w = f.frac1[e]
        refl[e] = w[:, None] * refl[e] + (1.0 - w[:, None]) * _reflectance(region.biome, st2, cols)
        water[e] = w * water[e] + (1.0 - w) * st2.water
    h, wd = window.shape
    return refl.reshape(h, wd, -1), water.reshape(h, wd).astype(np.float32)


@functools.cache
def _wcm_coefficients(biome: str) -> np.ndarray:
    """(NUM_CLASSES, 4) water-cloud coefficients a_vv, b_vv, a_vh, b_vh per class."""
    out = np.zeros((C.NUM_CLASSES, 4))
    for c in C.get_biome(biome).classes:
        out[c.id] = (c.a_vv, c.b_vv, c.a_vh, c.b_vh)
    return out


def s1_conditions(region: W.SimRegion, time_ms: int) -> tuple[float, float]:
    """(soil moisture 0-1, water-surface roughness offset dB) of an acquisition, region-wide."""
    b = region.biome_preset
    _, doy = W.time_to_year_doy(time_ms)
    r = W.rng_for(region.seed, "s1-conditions", time_ms)
    # Soils are wetter in the wet season (winter in Belgium) and after rain.
    season = 0.5 + 0.2 * math.cos(2 * math.pi * (doy - b.wet_peak_doy) / 365.25)
    moisture = float(np.clip(season + r.normal(0.0, 0.15), 0.05, 0.95))
    wind_db = float(r.uniform(-3.0, 6.0))
    return moisture, wind_db


def _backscatter_linear(
    region: W.SimRegion,
    st: W.SurfaceState,
    theta: np.ndarray,
    urban_u: np.ndarray,
    rough_db: np.ndarray,
    moisture: float,
    wind_db: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(VV, VH) linear sigma0 of surface states at incidence theta (deg)."""
    coef = _wcm_coefficients(region.biome)[st.cls]
    cos_t = np.cos(np.radians(theta))
    soil_vv_db = -12.0 + 5.0 * (moisture - 0.5) - 0.2 * (theta - 37.0) + rough_db
    soil_vh_db = soil_vv_db - 9.0
    # Dry, brown leaves hold less water and scatter less than green ones.
    lai = st.lai * (0.5 + 0.5 * st.moisture_veg)
    out = []
    for a, b, soil_db in (
        (coef[:, 0], coef[:, 1], soil_vv_db),
        (coef[:, 2], coef[:, 3], soil_vh_db),
    ):
        tau2 = np.exp(-2.0 * b * lai / cos_t)
        out.append(a * cos_t * (1.0 - tau2) + tau2 * 10.0 ** (soil_db / 10.0))
    vv_can, vh_can = out
    water_vv = 10.0 ** ((-23.0 + wind_db - 0.3 * (theta - 37.0)) / 10.0)
    water_vh = water_vv * 10.0 ** (-0.7)
    # Double bounce off buildings depends on their orientation to the look direction.
    urban_vv = 10.0 ** ((-2.0 + 8.0 * (urban_u - 0.5)) / 10.0)
    urban_vh = 10.0 ** ((-11.0 + 4.0 * (urban_u - 0.5)) / 10.0)
    rock_vv = 10.0 ** ((-10.0 - 0.15 * (theta - 37.0)) / 10.0)
    rock_vh = rock_vv * 10.0 ** (-0.8)
    rest = 1.0 - st.water - st.impervious - st.rock
    vv = rest * vv_can + st.water * water_vv + st.impervious * urban_vv + st.rock * rock_vv
    vh = rest * vh_can + st.water * water_vh + st.impervious * urban_vh + st.rock * rock_vh
    return vv, vh


def s1_linear_truth(region: W.SimRegion, window: GridWindow, time_ms: int) -> np.ndarray:
    """(H, W, 2) noise-free VV, VH in linear power on a 10 m window."""
    world = W.get_world(region, window.epsg)
    f = W.window_fields(region, window)
    theta = s1_incidence(region, window, s1_orbit_state(region, time_ms)).ravel()
    moisture, wind = s1_conditions(region, time_ms)
    st = W.surface_state(region, world, f, None, time_ms)
    urb, rough = world.urban_s1.ravel(), world.soil_rough_db.ravel()
    vv, vh = _backscatter_linear(region, st, theta, urb[f.p1], rough[f.p1], moisture, wind)
    e = f.edge
    if e.size:
        st2 = W.surface_state(region, world, f, e, time_ms, second=True)
        vv2, vh2 = _backscatter_linear(
            region, st2, theta[e], urb[f.p2[e]], rough[f.p2[e]], moisture, wind
        )
        w = f.frac1[e]
        vv[e] = w * vv[e] + (1 - w) * vv2
        vh[e] = w * vh[e] + (1 - w) * vh2
    return np.stack([vv, vh], axis=-1).reshape(*window.shape, 2).astype(np.float32)


def era5_grid(region: W.SimRegion) -> tuple[float, float, int, int]:
    """(lon0, lat1, nx, ny): the 0.1 degree cells covering the region (north-up)."""
    minx, miny, maxx, maxy = region.bbox
    step = ERA5_STEP_DEG
    lon0 = math.floor(minx / step + 1e-9) * step
    lat0 = math.floor(miny / step + 1e-9) * step
    lon1 = math.ceil(maxx / step - 1e-9) * step
    lat1 = math.ceil(maxy / step - 1e-9) * step
    return (
        round(lon0, 6),
        round(lat1, 6),
        max(1, int(round((lon1 - lon0) / step))),
        max(1, int(round((lat1 - lat0) / step))),
    )


@functools.lru_cache(maxsize=4)
def _era5_cell_elevation(region: W.SimRegion) -> np.ndarray:
    """(ny, nx) mean terrain height of each ERA5 cell (5 x 5 samples)."""
    lon0, lat1, nx, ny = era5_grid(region)
    out = np.zeros((ny, nx))
    offs = (np.arange(5) + 0.5) / 5 * ERA5_STEP_DEG
    for r in range(ny):
        for c in range(nx):
            lons = lon0 + c * ERA5_STEP_DEG + offs
            lats = lat1 - r * ERA5_STEP_DEG - offs
            lo, la = np.meshgrid(lons, lats)
            epsg = utm_epsg(float(lo.mean()), float(la.mean()))
            x, y = lonlat_to_utm(lo.ravel(), la.ravel(), epsg)
            out[r, c] = W.elevation_points(region, np.asarray(x), np.asarray(y)).mean()
    return out


def era5_values(region: W.SimRegion, time_ms: int) -> np.ndarray:
    """(2, ny, nx) float32 monthly temperature_2m (K) and total_precipitation (m/day)."""
    b = region.biome_preset
    lon0, lat1, nx, ny = era5_grid(region)
    t = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)
    mid = dt.datetime(t.year, t.month, 15, tzinfo=dt.UTC)
    doy = mid.timetuple().tm_yday - 1
    lats = lat1 - (np.arange(ny) + 0.5) * ERA5_STEP_DEG
    elev = _era5_cell_elevation(region)
    r = W.rng_for(region.seed, "era5", t.year, t.month)
    temp = W.temperature_k(b, lats[:, None], elev, doy) + r.normal(0.0, 1.0)
    precip = W.precipitation_m_day(b, doy) * math.exp(r.normal(0.0, 0.35))
    precip = np.broadcast_to(precip, temp.shape)
    return np.stack([temp, precip]).astype(np.float32)


def clear_sky_truth(
    region: W.SimRegion, source_id: str, time_ms: int, window: GridWindow
) -> np.ndarray:
    """Noise-free, cloud-free values (H, W, C) float32 in registry units on a 10 m window.

    Bands are the registry's bands of the source, in order (derived bands included: cop_dem
    gives elevation and slope). Optical sources: surface reflectance before clouds, shadows,
    noise and 20/30 m aggregation. sentinel1: VV/VH dB before speckle, at the acquisition's
    incidence angles. era5_land: the value of the 0.1 degree cell holding each pixel.
    """
    sensors.get_sensor(source_id)
    if source_id in spectra.BAND_COLUMNS:
        return _optical(region, source_id, window, time_ms)[0]
    if source_id == "sentinel1":
        return (10.0 * np.log10(s1_linear_truth(region, window, time_ms))).astype(np.float32)
    if source_id == "cop_dem":
        elev = W.elevation_grid(region, window)
        return np.stack([elev, sensors.slope_degrees(elev, window.pixel_size)], axis=-1)
    if source_id == "era5_land":
        lon0, lat1, nx, ny = era5_grid(region)
        x, y = window.pixel_centers()
        lon, lat = utm_to_lonlat(x, y, window.epsg)
        c = np.clip(((np.asarray(lon) - lon0) / ERA5_STEP_DEG).astype(int), 0, nx - 1)
        r = np.clip(((lat1 - np.asarray(lat)) / ERA5_STEP_DEG).astype(int), 0, ny - 1)
        vals = era5_values(region, time_ms)
        return np.stack([vals[0][r, c], vals[1][r, c]], axis=-1).astype(np.float32)
    raise ValueError(f"no truth for source {source_id!r}")


# ---------------------------------------------------------------------------------- clouds


@dataclasses.dataclass
class Clouds:
    """Cloud cover (0-1 per pixel), the shadow it casts, and thin cirrus, on a 10 m window."""

    alpha: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray
    brightness: float
    fraction: float  # the acquisition's target cloud fraction


def cloud_fraction(region: W.SimRegion, source_id: str, time_ms: int) -> float:
    """The acquisition's cloud fraction: U-shaped around the mean, cloudier in the wet season."""
    b = region.biome_preset
    _, doy = W.time_to_year_doy(time_ms)
    mean = region.cloud_cover * (
        1.0 + 0.3 * math.cos(2 * math.pi * (doy - b.wet_peak_doy) / 365.25)
    )
    mean = float(np.clip(mean, 0.0, 0.95))
    if mean <= 0.0:
        return 0.0
    r = W.rng_for(region.seed, source_id, time_ms, "cloud-fraction")
    return float(r.beta(max(mean, 1e-3) * 0.9, max(1.0 - mean, 1e-3) * 0.9))


def clouds(
    region: W.SimRegion, source_id: str, time_ms: int, window: GridWindow, sun: tuple[float, float]
) -> Clouds:
    """Cloud fields of an acquisition on a window; they depend on no tile, so tiles join."""
    frac = cloud_fraction(region, source_id, time_ms)
    xs = window.x0 + (np.arange(window.width) + 0.5) * window.pixel_size
    ys = window.y0 - (np.arange(window.height) + 0.5) * window.pixel_size
    zero = np.zeros(window.shape, np.float32)
    r = W.rng_for(region.seed, source_id, time_ms, "clouds")
    height, brightness = r.uniform(800.0, 3000.0), r.uniform(0.75, 1.1)
    has_cirrus = r.uniform() < 0.2
    seed = W.stable_seed(region.seed, source_id, time_ms, "cloud-field")
    if frac > 0.002:
        thr = W.fbm_threshold(frac, 5)
        z = W.fbm(xs, ys, seed=seed, wavelength=5000.0, octaves=5)
        alpha = np.clip((z - thr) / 0.6, 0.0, 1.0) ** 0.7
        # The shadow falls away from the sun: the cloud over p + h tan(zenith) toward the sun.
        zen, az = sun
        d = height * math.tan(math.radians(min(zen, 80.0)))
        dx, dy = d * math.sin(math.radians(az)), d * math.cos(math.radians(az))
        zs = W.fbm(xs + dx, ys + dy, seed=seed, wavelength=5000.0, octaves=5)
        shadow = np.clip((zs - thr) / 0.6, 0.0, 1.0) ** 0.7
    else:
        alpha, shadow = zero, zero
    if has_cirrus:
        zc = W.fbm(xs, ys, seed=seed + 1, wavelength=9000.0, octaves=3)
        cirrus = 0.12 * np.clip((zc - 0.5) / 1.5, 0.0, 1.0)
    else:
        cirrus = zero
    return Clouds(
        alpha.astype(np.float32),
        shadow.astype(np.float32),
        cirrus.astype(np.float32),
        float(brightness),
        frac,
    )


# ---------------------------------------------------------------------------------- frames


@dataclasses.dataclass
class Asset:
    """One single-band raster of a frame, as stored (already encoded)."""

    key: str
    data: np.ndarray  # (H, W) stored dtype
    transform: Affine
    epsg: int
    encoding: sensors.Encoding
    unit: str
    resolution_m: float
    categorical: bool = False
    title: str = ""


@dataclasses.dataclass
class Frame:
    """One acquisition of one source over one granule (or the whole region for ERA5)."""

    source: str
    time_ms: int
    tile_id: str
    assets: list[Asset]
    properties: dict
    footprint_lonlat: list[tuple[float, float]]

    @property
    def item_id(self) -> str:
        t = dt.datetime.fromtimestamp(self.time_ms / 1000, tz=dt.UTC)
        if self.source == "cop_dem":
            return f"cop_dem_{self.tile_id}"
        if self.source == "era5_land":
            return f"era5_land_{t:%Y%m}"
        return f"{self.source}_{self.tile_id}_{t:%Y%m%dT%H%M%S}"


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of the leading two axes (shape divisible by k)."""
    if k == 1:
        return a
    h, w = a.shape[:2]
    return a.reshape(h // k, k, w // k, k, *a.shape[2:]).mean(axis=(1, 3))


def render_window(granule: GridWindow) -> GridWindow:
    """The granule grown to the 60 m lattice, so 20 m and 30 m pixels nest in it."""
    return W.align_window(granule)


def _crop(a: np.ndarray, outer: GridWindow, inner: GridWindow) -> np.ndarray:
    r0 = int(round((outer.y0 - inner.y0) / outer.pixel_size))
    c0 = int(round((inner.x0 - outer.x0) / outer.pixel_size))
    return a[r0 : r0 + inner.height, c0 : c0 + inner.width]


def _transform(window: GridWindow, res: float) -> Affine:
    return Affine(res, 0.0, window.x0, 0.0, -res, window.y0)


def _footprint(window: GridWindow) -> list[tuple[float, float]]:
    minx, miny, maxx, maxy = window.bounds
    xs = [minx, maxx, maxx, minx, minx]
    ys = [miny, miny, maxy, maxy, miny]
    lon, lat = utm_to_lonlat(np.array(xs), np.array(ys), window.epsg)
    return [(float(a), float(b)) for a, b in zip(lon, lat, strict=True)]


def _band_asset(band: sensors.Band, values: np.ndarray, window: GridWindow, res: float, epsg: int):
    return Asset(
        key=band.name,
        data=band.encoding.encode(values),
        transform=_transform(window, res),
        epsg=epsg,
        encoding=band.encoding,
        unit=band.unit,
        resolution_m=res,
        title=band.description,
    )


def _scl(
    region: W.SimRegion,
    time_ms: int,
    clear: np.ndarray,
    water: np.ndarray,
    cl: Clouds,
    window: GridWindow,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scene classification at k x 10 m, with omissions at cloud edges and false clouds."""
    alpha, shadow, cirrus = (block_mean(a, k) for a in (cl.alpha, cl.shadow, cl.cirrus))
    c = block_mean(clear, k)
    wat = block_mean(water, k)
    red, nir = c[..., 2], c[..., 6]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.full(alpha.shape, SCL["not_vegetated"], np.uint8)
    scl[ndvi > 0.4] = SCL["vegetation"]
    scl[wat > 0.5] = SCL["water"]
    scl[(c[..., :3].mean(-1) < 0.025) & (wat <= 0.5)] = SCL["dark"]
    scl[cirrus > 0.05] = SCL["cirrus"]
    scl[(shadow > 0.45) & (alpha < 0.2)] = SCL["shadow"]
    cloud = alpha > 0.25
    # Sen2Cor misses part of the thin cloud edge ...
    missed = cloud & (alpha < 0.45) & (rng.random(alpha.shape) < 0.06)
    scl[cloud & ~missed] = SCL["cloud_medium"]
    scl[alpha > 0.65] = SCL["cloud_high"]
    # ... and flags bright built-up and bare surfaces as cloud in patches.
    xs = window.x0 + (np.arange(alpha.shape[1]) + 0.5) * 10.0 * k
    ys = window.y0 - (np.arange(alpha.shape[0]) + 0.5) * 10.0 * k
    blob = W.fbm(
        xs, ys, seed=W.stable_seed(region.seed, time_ms, "scl-false"), wavelength=400.0, octaves=2
    )
    bright = (c[..., :3].mean(-1) > 0.11) & (alpha < 0.05) & (blob > W.fbm_threshold(0.08, 2))
    scl[bright] = SCL["cloud_medium"]
    return scl


def _qa_pixel(cl: Clouds, water: np.ndarray, k: int) -> np.ndarray:
    """Landsat QA_PIXEL bits at k x 10 m (fill 0, dilated 1, cirrus 2, cloud 3, shadow 4...)."""
    alpha, shadow, cirrus = (block_mean(a, k) for a in (cl.alpha, cl.shadow, cl.cirrus))
    wat = block_mean(water, k)
    cloud = alpha > 0.3
    dilated = ndimage.binary_dilation(cloud, iterations=3) & ~cloud
    shad = (shadow > 0.45) & ~cloud
    cir = cirrus > 0.05
    qa = np.zeros(alpha.shape, np.uint16)
    qa |= dilated.astype(np.uint16) << 1
    qa |= cir.astype(np.uint16) << 2
    qa |= cloud.astype(np.uint16) << 3
    qa |= shad.astype(np.uint16) << 4
    qa |= (~(cloud | dilated)).astype(np.uint16) << 6
    qa |= (wat > 0.5).astype(np.uint16) << 7
    conf = np.where(alpha > 0.6, 3, np.where(alpha > 0.15, 2, 1)).astype(np.uint16)
    qa |= conf << 8
    qa |= np.where(shad, 3, 1).astype(np.uint16) << 10
    qa |= np.uint16(1) << 12
    qa |= np.where(cir, 3, 1).astype(np.uint16) << 14
    return qa


def _optical_frame(
    region: W.SimRegion, source_id: str, time_ms: int, tile: Tile, granule: GridWindow
) -> Frame:
    sensor = sensors.get_sensor(source_id)
    rw = render_window(granule)
    lon, lat = W.window_lonlat_center(granule)
    zen, az = sun_angles(lon, lat, time_ms)
    clear, water = _optical(region, source_id, rw, time_ms)
    cl = clouds(region, source_id, time_ms, rw, (zen, az))
    em = spectra.endmembers()
    cols = spectra.BAND_COLUMNS[source_id]
    shade = _SHADE_S2 if source_id == "sentinel2_l2a" else _SHADE_LS
    obs = clear * (1.0 - cl.shadow[..., None] * (1.0 - shade))
    cloud_refl = cl.brightness * em["cloud"][cols]
    obs = obs * (1.0 - cl.alpha[..., None]) + cl.alpha[..., None] * cloud_refl
    # Cirrus adds a thin haze, bright in the visible, weak in the SWIR.
    obs = obs + cl.cirrus[..., None] * em["cloud"][cols] * np.linspace(1.0, 0.4, obs.shape[-1])
    rng = W.rng_for(region.seed, source_id, time_ms, tile.id, "noise")
    noise = S2_NOISE if source_id == "sentinel2_l2a" else LANDSAT_NOISE
    assets = []
    by_res: dict[int, np.ndarray] = {}
    for i, band in enumerate(sensor.stored_bands):
        k = int(round(band.resolution_m / 10.0))
        if k not in by_res:
            by_res[k] = block_mean(obs, k)
        v = by_res[k][..., i]
        v = v + rng.normal(0.0, noise, v.shape).astype(np.float32)
        if k == 1:
            assets.append(_band_asset(band, _crop(v, rw, granule), granule, 10.0, granule.epsg))
        else:
            assets.append(_band_asset(band, v, rw, 10.0 * k, granule.epsg))
    if source_id == "sentinel2_l2a":
        k = 2
        q = _scl(region, time_ms, clear, water, cl, rw, k, rng)
        qkey, qenc, bad = "SCL", sensor.mask.encoding, np.isin(q, sensor.mask.invalid_values)
    else:
        k = 3
        q = _qa_pixel(cl, water, k)
        qkey, qenc = "QA_PIXEL", sensor.mask.encoding
        bad = ~sensors.mask_from_quality(sensor, q)
    assets.append(
        Asset(
            qkey,
            q,
            _transform(rw, 10.0 * k),
            granule.epsg,
            qenc,
            "",
            10.0 * k,
            categorical=True,
            title="scene classification" if qkey == "SCL" else "pixel quality bits",
        )
    )
    props = {
        "view:sun_azimuth": round(az, 4),
        "view:sun_elevation": round(90.0 - zen, 4),
        "sat:orbit_state": "descending",
        "platform": platform(source_id, time_ms),
        "eo:cloud_cover": round(100.0 * float(bad.mean()), 3),
        "sim:cloud_fraction": round(float(cl.alpha.mean()), 5),
    }
    return Frame(source_id, time_ms, tile.id, assets, props, _footprint(granule))


def _s1_frame(region: W.SimRegion, time_ms: int, tile: Tile, granule: GridWindow) -> Frame:
    sensor = sensors.get_sensor("sentinel1")
    lin = s1_linear_truth(region, granule, time_ms)
    rng = W.rng_for(region.seed, "sentinel1", time_ms, tile.id, "speckle")
    # Multiplicative gamma speckle of a multi-looked GRD (ENL ~4.4), in linear power.
    speck = rng.gamma(S1_ENL, 1.0 / S1_ENL, lin.shape).astype(np.float32)
    db = 10.0 * np.log10(np.maximum(lin * speck, 1e-6))
    assets = [
        _band_asset(b, db[..., i], granule, 10.0, granule.epsg) for i, b in enumerate(sensor.bands)
    ]
    orbit = s1_orbit_state(region, time_ms)
    theta = s1_incidence(region, granule, orbit)
    props = {
        "view:incidence_angle": round(float(theta.mean()), 4),
        "sat:orbit_state": orbit,
        "platform": platform("sentinel1", time_ms),
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
    }
    return Frame("sentinel1", time_ms, tile.id, assets, props, _footprint(granule))


def _dem_frame(region: W.SimRegion, tile: Tile, granule: GridWindow) -> Frame:
    band = sensors.get_sensor("cop_dem").band("elevation")
    rw = render_window(granule)
    elev = block_mean(W.elevation_grid(region, rw), 3)
    asset = _band_asset(band, elev, rw, 30.0, granule.epsg)
    return Frame(
        "cop_dem",
        sensors.STATIC_TIME_MS,
        tile.id,
        [asset],
        {"platform": "tandem-x"},
        _footprint(granule),
    )


def render_frame(
    region: W.SimRegion, source_id: str, time_ms: int, tile: Tile, granule: GridWindow
) -> Frame:
    """Render one acquisition of a source over one granule, as its files will hold it.

    Args:
        region: the simulation.
        source_id: a registry id other than era5_land (see `render_era5`).
        time_ms: the acquisition time (one of `acquisition_times`).
        tile: the grid tile the granule belongs to (names the item).
        granule: the part of the region inside the tile (10 m window).
    """
    if source_id in spectra.BAND_COLUMNS:
        return _optical_frame(region, source_id, time_ms, tile, granule)
    if source_id == "sentinel1":
        return _s1_frame(region, time_ms, tile, granule)
    if source_id == "cop_dem":
        return _dem_frame(region, tile, granule)
    raise ValueError(f"render_frame cannot render {source_id!r}")


def render_era5(region: W.SimRegion, time_ms: int) -> Frame:
    """One month of ERA5-Land over the region on the 0.1 degree EPSG:4326 grid."""
    sensor = sensors.get_sensor("era5_land")
    lon0, lat1, nx, ny = era5_grid(region)
    vals = era5_values(region, time_ms)
    step = ERA5_STEP_DEG
    tr = Affine(step, 0.0, lon0, 0.0, -step, lat1)
    assets = [
        Asset(
            b.name,
            b.encoding.encode(vals[i]),
            tr,
            4326,
            b.encoding,
            b.unit,
            9000.0,
            title=b.description,
        )
        for i, b in enumerate(sensor.bands)
    ]
    lat0, lon1 = lat1 - ny * step, lon0 + nx * step
    fp = [(lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1), (lon0, lat0)]
    return Frame("era5_land", time_ms, "global", assets, {"platform": "era5-land"}, fp)
