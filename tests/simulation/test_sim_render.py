"""Spectra and sensors: LUTs, schedules, geometry, clouds and masks, radar, ERA5, frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

import simulation as sim
from schemas import sensors
from schemas.grid import Tile
from simulation import classes as C
from simulation import render as R
from simulation import spectra
from simulation import world as W


@pytest.fixture(scope="module")
def small():
    return sim.make_region(seed=0, years=[2023], size_km=1.28, cloud_cover=0.5)


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def _frame(region, source, time_ms):
    ((tile, granule),) = region.granules()
    return R.render_frame(region, source, time_ms, tile, granule), granule


def test_band_responses_and_library():
    r = spectra.response_matrix()
    assert r.shape == (2101, spectra.NUM_COLUMNS) == (2101, 16)
    np.testing.assert_allclose(r.sum(axis=0), 1.0, atol=1e-9)
    # The red band's response peaks at its registry centre wavelength.
    b04 = sensors.get_sensor("sentinel2_l2a").band("B04")
    assert spectra.WAVELENGTHS[np.argmax(r[:, 2])] == round(b04.center_nm)
    em = spectra.endmembers()
    s2 = spectra.BAND_COLUMNS["sentinel2_l2a"]
    water = em["water"][s2]
    assert water[6] < water[2] < water[1] and water[9] < 0.005  # NIR and SWIR absorbed
    assert em["rock"][s2][2] > 0.25 and em["char"][s2].max() < 0.11
    with pytest.raises(KeyError):
        spectra.library_spectrum("lava")


def test_prosail_lut_ndvi_grows_with_lai_and_lookup_interpolates():
    green, brown = spectra.canopy_luts("temperate")
    c = C.DECIDUOUS_FOREST
    red, nir = green[c, :, 2], green[c, :, 6]
    ndvi = (nir - red) / (nir + red)
    assert np.all(np.diff(ndvi) > -1e-4) and ndvi[0] < 0.3 and ndvi[-1] > 0.85
    # Brown leaves: much less NIR contrast than green ones at the same LAI.
    bndvi = (brown[c, 16, 6] - brown[c, 16, 2]) / (brown[c, 16, 6] + brown[c, 16, 2])
    assert bndvi < ndvi[16] - 0.2
    mid = spectra.lookup(green, np.array([c]), np.array([0.125]))[0]
    np.testing.assert_allclose(mid, 0.5 * (green[c, 0] + green[c, 1]), rtol=1e-6)


def test_schedules(small):
    s2 = np.array(sim.acquisition_times(small, "sentinel2_l2a"))
    ls = np.array(sim.acquisition_times(small, "landsat_c2l2"))
    s1 = np.array(sim.acquisition_times(small, "sentinel1"))
    day = W.MS_PER_DAY
    assert set(np.diff(s2) // day) == {5} and len(s2) == 73
    assert set(np.diff(ls) // day) == {8} and 45 <= len(ls) <= 46
    gaps = np.round(np.diff(s1) / day)
    assert set(gaps) <= {6.0, 12.0} or set(np.round(np.diff(s1) / day / 6)) <= {1.0, 2.0}
    assert 40 <= len(s1) <= 61
    states = [R.s1_orbit_state(small, t) for t in s1]
    assert {"ascending", "descending"} == set(states)
    era = sim.acquisition_times(small, "era5_land")
    assert len(era) == 12 and era[0] == _ms("2023-01-01T00:00:00")
    assert sim.acquisition_times(small, "cop_dem") == [sensors.STATIC_TIME_MS]
    # S2 overpass near 10:30 local solar time.
    lon, _ = small.center_lonlat
    local = (s2 % day) / 3_600_000 + lon / 15
    np.testing.assert_allclose(local, 10.5, atol=0.01)


def test_sun_angles_match_known_values():
    # Brussels, 2023-06-21 ~10:30 solar time: elevation ~57 deg, sun in the south-east.
    zen, az = R.sun_angles(4.35, 50.85, _ms("2023-06-21T10:13:00"))
    assert 30 < zen < 36 and 125 < az < 160
    zen_w, _ = R.sun_angles(4.35, 50.85, _ms("2023-12-21T10:13:00"))
    assert 73 < zen_w < 79


def test_s2_frame_assets_resolutions_and_truth(small):
    # A summer acquisition with some cloud but mostly clear.
    times = sim.acquisition_times(small, "sentinel2_l2a")[30:]
    t = next(x for x in times if 0.01 < R.cloud_fraction(small, "sentinel2_l2a", x) < 0.3)
    frame, g = _frame(small, "sentinel2_l2a", t)
    keys = [a.key for a in frame.assets]
    assert keys == [*sensors.get_sensor("sentinel2_l2a").band_names, "SCL"]
    by = {a.key: a for a in frame.assets}
    assert by["B04"].data.shape == g.shape and by["B04"].resolution_m == 10
    rw = R.render_window(g)
    assert by["B05"].data.shape == (rw.height // 2, rw.width // 2) and by["B05"].resolution_m == 20
    assert by["B05"].transform.a == 20 and (by["B05"].transform.c, by["B05"].transform.f) == (
        rw.x0,
        rw.y0,
    )
    assert by["SCL"].resolution_m == 20 and by["SCL"].data.dtype == np.uint8
    assert by["B02"].data.dtype == np.uint16
    props = frame.properties
    assert 0 < props["view:sun_elevation"] < 90 and 0 <= props["view:sun_azimuth"] < 360
    # On pixels free of cloud and shadow, files = truth + noise (sigma 0.004).
    cl = R.clouds(small, "sentinel2_l2a", t, rw, R.sun_angles(*W.window_lonlat_center(g), t))
    clear = R._crop((cl.alpha == 0) & (cl.shadow == 0) & (cl.cirrus == 0), rw, g)
    assert clear.sum() > 100
    enc = sensors.get_sensor("sentinel2_l2a").band("B04").encoding
    truth = sim.clear_sky_truth(small, "sentinel2_l2a", t, g)
    diff = enc.decode(by["B04"].data)[clear] - truth[..., 2][clear]
    assert abs(float(np.median(diff))) < 0.001 and 0.003 < float(diff.std()) < 0.005
    # 20 m bands are 2 x 2 means of the 10 m truth.
    t20 = R.block_mean(sim.clear_sky_truth(small, "sentinel2_l2a", t, rw)[..., 3], 2)
    c20 = R.block_mean(((cl.alpha == 0) & (cl.shadow == 0) & (cl.cirrus == 0)).astype(float), 2)
    d20 = enc.decode(by["B05"].data)[c20 == 1] - t20[c20 == 1]
    assert abs(float(np.median(d20))) < 0.001


def test_clouds_are_seamless_and_scl_has_realistic_mislabels(small):
    times = sim.acquisition_times(small, "sentinel2_l2a")
    g = small.windows[0]
    rw = R.render_window(g)
    missed_edges = false_clouds = cloud_px = 0
    for t in times[::3]:
        sun = R.sun_angles(*W.window_lonlat_center(g), t)
        cl = R.clouds(small, "sentinel2_l2a", t, rw, sun)
        part = rw.subwindow(10, 20, 30, 40)
        np.testing.assert_allclose(
            R.clouds(small, "sentinel2_l2a", t, part, sun).alpha, cl.alpha[10:40, 20:60], atol=1e-6
        )
        clear, water = R._optical(small, "sentinel2_l2a", rw, t)
        scl = R._scl(small, t, clear, water, cl, rw, 2, np.random.default_rng(0))
        a20 = R.block_mean(cl.alpha, 2)
        cloudy = np.isin(scl, (8, 9))
        cloud_px += int((a20 > 0.65).sum())
        assert (scl[a20 > 0.65] == 9).all()
        missed_edges += int(((a20 > 0.02) & (a20 < 0.45) & ~cloudy).sum())
        false_clouds += int((cloudy & (a20 == 0)).sum())
    assert cloud_px > 0 and missed_edges > 0 and false_clouds > 0


def test_cloud_cover_option_sets_mean_fraction():
    for cc in (0.1, 0.6):
        r = sim.make_region(seed=3, years=[2023], size_km=1.0, cloud_cover=cc)
        fr = [
            R.cloud_fraction(r, "sentinel2_l2a", t)
            for t in sim.acquisition_times(r, "sentinel2_l2a")
        ]
        assert abs(np.mean(fr) - cc) < 0.1
    r0 = sim.make_region(seed=3, years=[2023], size_km=1.0, cloud_cover=0.0)
    t = sim.acquisition_times(r0, "sentinel2_l2a")[3]
    frame, _ = _frame(r0, "sentinel2_l2a", t)
    scl = frame.assets[-1].data
    assert not np.isin(scl, (8, 9)).mean() > 0.1  # only a few false positives


def test_landsat_qa_bits(small):
    t = sim.acquisition_times(small, "landsat_c2l2")[20]
    frame, g = _frame(small, "landsat_c2l2", t)
    by = {a.key: a for a in frame.assets}
    assert list(by) == ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL"]
    assert by["SR_B4"].resolution_m == 30 and by["QA_PIXEL"].data.dtype == np.uint16
    qa = by["QA_PIXEL"].data.astype(np.int64)
    cloud, dilated, clear = (qa >> 3) & 1, (qa >> 1) & 1, (qa >> 6) & 1
    np.testing.assert_array_equal(clear, 1 - (cloud | dilated))
    assert not (qa & 1).any()  # no fill
    # 21824 is the real Collection 2 value of a clear land pixel with low confidences.
    assert (
        qa[clear.astype(bool) & ~((qa >> 7) & 1).astype(bool) & ~((qa >> 4) & 1).astype(bool)]
        == 21824
    ).all()


def test_s1_values_incidence_and_speckle(small):
    times = sim.acquisition_times(small, "sentinel1")
    g = small.windows[0]
    lc = sim.landcover(small, g, 2023)
    t = next(x for x in times if dt.datetime.fromtimestamp(x / 1000, dt.UTC).month == 7)
    frame, _ = _frame(small, "sentinel1", t)
    vv = frame.assets[0].encoding.decode(frame.assets[0].data)
    truth = sim.clear_sky_truth(small, "sentinel1", t, g)
    med = {c: np.median(truth[..., 0][lc == c]) for c in np.unique(lc)}
    if C.WATER in med:
        assert -27 < med[C.WATER] < -15
    assert med[C.BUILT_UP] > med[C.GRASSLAND]
    vh = truth[..., 1]
    # The volume term: a full summer canopy is brighter in VH than bare soil.
    veg = (C.EVERGREEN_FOREST, C.DECIDUOUS_FOREST, C.CROP_B, C.GRASSLAND, C.SHRUBLAND)
    dense = max(veg, key=lambda c: int((lc == c).sum()))
    assert np.median(vh[lc == dense]) > np.median(vh[lc == C.BARE_SOIL]) + 2.0
    # Gamma speckle with ENL 4.4: mean ratio 1, variance 1/ENL in linear power.
    ratio = 10 ** ((vv - truth[..., 0]) / 10)
    assert abs(ratio.mean() - 1.0) < 0.03
    assert abs(1.0 / ratio.var() - R.S1_ENL) < 0.4
    inc = frame.properties["view:incidence_angle"]
    assert 29 <= inc <= 46 and frame.properties["sat:orbit_state"] in ("ascending", "descending")
    theta = R.s1_incidence(small, g, frame.properties["sat:orbit_state"])
    assert theta.min() >= 29 and theta.max() <= 46 and theta[0, -1] != theta[0, 0]


def test_era5_grid_and_seasons(small):
    frame = R.render_era5(small, _ms("2023-07-01T00:00:00"))
    (tk, tp) = frame.assets
    assert tk.key == "temperature_2m" and tk.epsg == 4326 and tk.transform.a == pytest.approx(0.1)
    assert tk.transform.c == pytest.approx(round(small.bbox[0] - small.bbox[0] % 0.1, 6), abs=1e-6)
    jan = R.era5_values(small, _ms("2023-01-01T00:00:00"))
    jul = R.era5_values(small, _ms("2023-07-01T00:00:00"))
    assert (jul[0] - jan[0]).min() > 9.0
    assert 284 < jul[0].mean() < 296 and 270 < jan[0].mean() < 282
    assert 0.0005 < jul[1].mean() < 0.008
    np.testing.assert_allclose(tk.data, jul[0])


def test_frames_are_deterministic_per_seed(small):
    t = sim.acquisition_times(small, "sentinel2_l2a")[10]
    a, _ = _frame(small, "sentinel2_l2a", t)
    W.get_world.cache_clear()
    W.window_fields.cache_clear()
    b, _ = _frame(small, "sentinel2_l2a", t)
    for x, y in zip(a.assets, b.assets, strict=True):
        np.testing.assert_array_equal(x.data, y.data)
    other = sim.make_region(seed=1, years=[2023], size_km=1.28, cloud_cover=0.5)
    c, _ = _frame(other, "sentinel2_l2a", t)
    assert not np.array_equal(a.assets[0].data, c.assets[0].data)


def test_dem_frame(small):
    frame, g = _frame(small, "cop_dem", sensors.STATIC_TIME_MS)
    (a,) = frame.assets
    assert a.key == "elevation" and a.resolution_m == 30 and a.data.dtype == np.float32
    assert 0 < np.nanmin(a.data) and np.nanmax(a.data) < 500
    truth = sim.clear_sky_truth(small, "cop_dem", 0, R.render_window(g))
    np.testing.assert_allclose(a.data, R.block_mean(truth[..., 0], 3), rtol=1e-5)
    assert truth.shape[-1] == 2 and 0 <= truth[..., 1].min() and truth[..., 1].max() < 30
    assert frame.item_id == f"cop_dem_{Tile(g.epsg, *_tile_colrow(small)).id}"


def _tile_colrow(region):
    ((tile, _),) = region.granules()
    return tile.col, tile.row, tile.size
