"""simulate -> STAC catalog -> read_source: the reader returns registry units that match the
simulator's own clear-sky truth, for every source, on a tiny region."""

from __future__ import annotations

import numpy as np
import pytest

import simulation
from beam_jobs import simulate
from beam_jobs.io import stac
from schemas import sensors
from schemas.grid import GridWindow

YEAR = 2023


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp(
        "sim.v1"
    )  # a dot in the last name: pystac once mistook it for a file
    simulate.run(
        [
            "--out",
            str(out),
            "--sim-region",
            "demo",
            "--size-km",
            "1.28",
            "--years",
            str(YEAR),
            "--seed",
            "3",
            "--cloud-cover",
            "0.3",
        ]
    )
    region = simulation.load_region(out)
    catalog = stac.StacCatalog.open(str(out / "catalog.json"))
    return out, region, catalog


def _inner_window(catalog: stac.StacCatalog) -> GridWindow:
    """A 64 x 64 px window inside the simulated area, 10 m aligned, away from its edges."""
    ref = catalog.item_refs("sentinel2_l2a")[0]
    a = ref.assets["B04"]
    import rasterio

    with rasterio.open(a.href) as ds:
        t = ds.transform
        x0 = t.c + 16 * t.a
        y0 = t.f + 16 * t.e
        return GridWindow(ds.crs.to_epsg(), x0, y0, 64, 64)


def _clear_frames(frames, min_clear=0.5):
    frac = frames.valid.mean(axis=(1, 2))
    return [i for i in range(frames.num_frames) if frac[i] >= min_clear]


def test_sentinel2_read_matches_truth(sim):
    _, region, catalog = sim
    win = _inner_window(catalog)
    frames = stac.read_source(catalog, "sentinel2_l2a", win, *_year())
    assert frames.num_frames >= 60  # every 5 days over a year
    idx = _clear_frames(frames)
    assert idx, "no mostly-clear Sentinel-2 frame in a year"
    s2 = sensors.get_sensor("sentinel2_l2a")
    for i in idx[:3]:
        truth = simulation.clear_sky_truth(region, "sentinel2_l2a", int(frames.times_ms[i]), win)
        ok = frames.valid[i]
        for c, band in enumerate(s2.bands):
            diff = np.abs(frames.values[i, ..., c][ok] - truth[..., c][ok])
            if band.resolution_m == 10:
                # Sensor noise only (the reader is exact at 10 m): reflectance units.
                assert np.median(diff) < 0.01, (band.name, np.median(diff))
            else:
                # 20 m averaging, then bilinear back to 10 m: parcel edges blur.
                assert np.median(diff) < 0.03, (band.name, np.median(diff))
            assert 0.0 <= np.nanmedian(frames.values[i, ..., c][ok]) <= 1.0


def test_cloud_mask_flags_clouds(sim):
    _, region, catalog = sim
    win = _inner_window(catalog)
    frames = stac.read_source(catalog, "sentinel2_l2a", win, *_year())
    # Some frames are cloudy and flagged: the valid fraction varies over the year.
    frac = frames.valid.mean(axis=(1, 2))
    assert frac.min() < 0.5 < frac.max()
    # Over the year, pixels flagged invalid are far from the clear-sky truth (clouds are
    # bright, shadows dark) and pixels flagged clear agree with it; the simulator's deliberate
    # mislabels (a few % of cloud edges called clear) keep the clear error above zero.
    err_bad, err_ok = [], []
    for t in range(0, frames.num_frames, 4):
        truth = simulation.clear_sky_truth(region, "sentinel2_l2a", int(frames.times_ms[t]), win)
        d = np.abs(frames.values[t, ..., 0] - truth[..., 0])
        err_bad.append(d[~frames.valid[t]])
        err_ok.append(d[frames.valid[t]])
    err_bad, err_ok = np.concatenate(err_bad), np.concatenate(err_ok)
    assert np.nanmedian(err_bad) > 5 * np.nanmedian(err_ok)
    assert np.nanmedian(err_ok) < 0.01


def test_sentinel1_landsat_dem_era5_match_truth(sim):
    _, region, catalog = sim
    win = _inner_window(catalog)
    start, end = _year()

    s1 = stac.read_source(catalog, "sentinel1", win, start, end)
    assert 30 <= s1.num_frames <= 62  # every 6-12 days
    assert set(np.unique(s1.geometry["orbit_direction"])) <= {0.0, 1.0}
    assert np.all((s1.geometry["incidence_angle"] > 25) & (s1.geometry["incidence_angle"] < 50))
    truth = simulation.clear_sky_truth(region, "sentinel1", int(s1.times_ms[0]), win)
    # Speckle (gamma, ~4.4 looks) biases dB means by about -0.5 dB and spreads pixels by
    # several dB; window medians agree within 1.5 dB.
    for c in range(2):
        assert abs(np.nanmedian(s1.values[0, ..., c]) - np.median(truth[..., c])) < 1.5

    ls = stac.read_source(catalog, "landsat_c2l2", win, start, end)
    assert 35 <= ls.num_frames <= 50  # every 8 days
    i = _clear_frames(ls)[0]
    truth = simulation.clear_sky_truth(region, "landsat_c2l2", int(ls.times_ms[i]), win)
    ok = ls.valid[i]
    for c in range(6):
        assert np.median(np.abs(ls.values[i, ..., c][ok] - truth[..., c][ok])) < 0.04

    dem = stac.read_source(catalog, "cop_dem", win, start, end)
    assert dem.num_frames == 1 and dem.times_ms[0] == sensors.STATIC_TIME_MS
    truth = simulation.clear_sky_truth(region, "cop_dem", sensors.STATIC_TIME_MS, win)
    assert np.median(np.abs(dem.values[0, ..., 0] - truth[..., 0])) < 2.0  # m, 30 m bilinear
    assert np.median(np.abs(dem.values[0, ..., 1] - truth[..., 1])) < 3.0  # deg

    era = stac.read_source(catalog, "era5_land", win, start, end)
    assert era.num_frames == 12
    truth = simulation.clear_sky_truth(region, "era5_land", int(era.times_ms[6]), win)
    assert abs(np.nanmedian(era.values[6, ..., 0]) - np.median(truth[..., 0])) < 1.0  # K
    assert 250 < np.nanmedian(era.values[..., 0]) < 310


def _year() -> tuple[int, int]:
    from beam_jobs.runner import year_bounds_ms

    return year_bounds_ms(YEAR)
