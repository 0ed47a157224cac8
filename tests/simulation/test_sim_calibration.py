"""Calibration of the temperate preset against real data (acceptance).

- WorldCereal Belgium 2021 monthly composites: percentiles of S2 reflectance, S1 VV/VH dB
  (vegetated pixels, NDVI > 0.3 in both) and AgERA5 mean temperature.
- eo-learn Slovenia 2016-2017: monthly median NDVI of forest and grassland; the simulator's
  curves must follow the real seasonal shape (Pearson r over the months with data).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

import simulation as sim
from simulation import classes as C

PERCENTILES = (5, 50, 95)
REFL_ABS_TOL = 0.05  # a reflectance percentile may differ by 0.05 ...
REFL_REL_TOL = 0.35  # ... or by 35% of the real value
DB_TOL = 3.0
TEMP_TOL_K = 4.0
MIN_NDVI_CORR = 0.8
NODATA_U16 = 65535
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
SIM_S2 = (
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B11",
    "B12",
)


def _ms(y: int, m: int, d: int = 15) -> float:
    return dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000


@pytest.fixture(scope="module")
def belgium(realdata_dir):
    xr = pytest.importorskip("xarray")
    ds = xr.open_dataset(
        realdata_dir / "worldcereal_belgium_2021" / "inputs.nc",
        engine="h5netcdf",
        mask_and_scale=False,
    )

    def u16(name):  # int16 flagged _Unsigned: reinterpret as uint16
        return (ds[name].values.astype(np.int64) & 0xFFFF).astype(np.float64)

    refl = {b: u16(f"S2-L2A-{b}") for b in S2_BANDS}
    valid = np.all([v != NODATA_U16 for v in refl.values()], axis=0)
    refl = {b: np.where(valid, v / 10000.0, np.nan) for b, v in refl.items()}
    ndvi = (refl["B08"] - refl["B04"]) / (refl["B08"] + refl["B04"])
    veg = valid & (ndvi > 0.3)
    vv = 20 * np.log10(u16("S1-SIGMA0-VV")) - 83
    vh = 20 * np.log10(u16("S1-SIGMA0-VH")) - 83
    # AgERA5 TMEAN is stored in 0.01 K (values ~27500-29200 = 2-19 C: Belgium).
    temp = u16("AGERA5-TMEAN") / 100.0
    return {
        "refl": {b: v[veg] for b, v in refl.items()},
        "vv": vv[veg],
        "vh": vh[veg],
        "vv_all": vv,
        "temp": temp[:, 0, 0],
    }


@pytest.fixture(scope="module")
def simulated():
    """One clear-sky frame per month of 2021 over the demo window (vegetated pixels)."""
    region = sim.make_region(seed=0, years=[2021])
    win = region.windows[0]
    s2t = sim.acquisition_times(region, "sentinel2_l2a")
    s1t = sim.acquisition_times(region, "sentinel1")
    refl, vv, vh = [], [], []
    for m in range(1, 13):
        t2 = min(s2t, key=lambda t, m=m: abs(t - _ms(2021, m)))
        t1 = min(s1t, key=lambda t, m=m: abs(t - _ms(2021, m)))
        x = sim.clear_sky_truth(region, "sentinel2_l2a", t2, win)[::2, ::2]
        s = sim.clear_sky_truth(region, "sentinel1", t1, win)[::2, ::2]
        nd = (x[..., 6] - x[..., 2]) / (x[..., 6] + x[..., 2])
        keep = nd > 0.3
        refl.append(x[keep])
        vv.append(s[..., 0][keep])
        vh.append(s[..., 1][keep])
    era = sim.acquisition_times(region, "era5_land")
    temp = [
        sim.clear_sky_truth(region, "era5_land", t, win.subwindow(0, 0, 1, 1))[0, 0, 0] for t in era
    ]
    return {
        "refl": np.concatenate(refl),
        "vv": np.concatenate(vv),
        "vh": np.concatenate(vh),
        "temp": np.array(temp),
    }


def test_real_sample_decodes_as_documented(belgium):
    assert abs(np.median(belgium["vv_all"]) - (-10.0)) < 1.0  # dB = 20 log10(DN) - 83
    assert 270 < belgium["temp"].min() < belgium["temp"].max() < 295


@pytest.mark.parametrize("band", S2_BANDS)
def test_s2_reflectance_percentiles_match_belgium(belgium, simulated, band):
    real = np.percentile(belgium["refl"][band], PERCENTILES)
    mine = np.percentile(simulated["refl"][:, SIM_S2.index(band)], PERCENTILES)
    tol = np.maximum(REFL_ABS_TOL, REFL_REL_TOL * real)
    assert np.all(np.abs(mine - real) <= tol), f"{band}: sim {mine.round(4)} real {real.round(4)}"


@pytest.mark.parametrize("pol", ["vv", "vh"])
def test_s1_db_percentiles_match_belgium(belgium, simulated, pol):
    real = np.percentile(belgium[pol], PERCENTILES)
    mine = np.percentile(simulated[pol], PERCENTILES)
    assert np.all(np.abs(mine - real) <= DB_TOL), f"{pol}: sim {mine.round(2)} real {real.round(2)}"


def test_temperature_percentiles_match_belgium(belgium, simulated):
    real = np.percentile(belgium["temp"], PERCENTILES)
    mine = np.percentile(simulated["temp"], PERCENTILES)
    assert np.all(np.abs(mine - real) <= TEMP_TOL_K), f"sim {mine.round(1)} real {real.round(1)}"


@pytest.fixture(scope="module")
def slovenia(realdata_dir):
    p = realdata_dir / "eolearn_slovenia" / "TestEOPatch"
    ndvi = np.load(p / "data" / "NDVI.npy")[..., 0]
    lulc = np.load(p / "mask_timeless" / "LULC.npy")[..., 0]
    clear = np.load(p / "mask" / "IS_VALID.npy")[..., 0].astype(bool) & ~np.load(
        p / "mask" / "CLM.npy"
    )[..., 0].astype(bool)
    stamps = [dt.datetime.fromisoformat(s) for s in json.loads((p / "timestamps.json").read_text())]
    return ndvi, lulc, clear, stamps


MONTHS = [(y, m) for y in (2016, 2017) for m in range(1, 13)]


def _real_curve(slovenia, lulc_class):
    ndvi, lulc, clear, stamps = slovenia
    out = []
    for y, m in MONTHS:
        vals = [
            ndvi[i][clear[i] & (lulc == lulc_class)]
            for i, t in enumerate(stamps)
            if (t.year, t.month) == (y, m)
        ]
        vals = np.concatenate(vals) if vals else np.array([])
        out.append(np.median(vals) if vals.size > 100 else np.nan)
    return np.array(out)


@pytest.fixture(scope="module")
def sim_curves():
    region = sim.make_region(seed=0, years=[2016, 2017])
    win = region.windows[0]
    lc = {y: sim.landcover(region, win, y) for y in (2016, 2017)}
    classes = (C.DECIDUOUS_FOREST, C.EVERGREEN_FOREST, C.GRASSLAND)
    per_month = {(y, m): {c: [] for c in classes} for y, m in MONTHS}
    for t in sim.acquisition_times(region, "sentinel2_l2a")[::2]:
        d = dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC)
        x = sim.clear_sky_truth(region, "sentinel2_l2a", t, win)
        nd = (x[..., 6] - x[..., 2]) / (x[..., 6] + x[..., 2])
        for c in classes:
            per_month[(d.year, d.month)][c].append(nd[lc[d.year] == c])
    return {
        c: np.array([np.median(np.concatenate(per_month[k][c])) for k in MONTHS]) for c in classes
    }


@pytest.mark.parametrize(
    "sim_class,lulc_class",
    [(C.DECIDUOUS_FOREST, 2), (C.EVERGREEN_FOREST, 2), (C.GRASSLAND, 3)],
    ids=["deciduous-vs-forest", "evergreen-vs-forest", "grassland-vs-grassland"],
)
def test_ndvi_seasonality_correlates_with_slovenia(slovenia, sim_curves, sim_class, lulc_class):
    real = _real_curve(slovenia, lulc_class)
    mine = sim_curves[sim_class]
    ok = np.isfinite(real)
    assert ok.sum() >= 15
    r = np.corrcoef(real[ok], mine[ok])[0, 1]
    assert r >= MIN_NDVI_CORR, f"r = {r:.3f}; sim {mine.round(2)}; real {real.round(2)}"
