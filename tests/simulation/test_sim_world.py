"""The simulated world: regions, parcels, classes, change events, phenology, determinism."""

from __future__ import annotations

import numpy as np
import pytest

import simulation as sim
from schemas.grid import GridWindow
from simulation import classes as C
from simulation import labels
from simulation import world as W

YEARS = (2023, 2024)


@pytest.fixture(scope="module")
def demo():
    return sim.make_region(seed=0, years=YEARS)


def _clear_caches():
    W.get_world.cache_clear()
    W.window_fields.cache_clear()


def test_demo_region_is_tile_aligned_and_one_granule(demo):
    (w,) = demo.windows
    assert (w.epsg, w.x0, w.y0, w.width, w.height) == (32631, 614400.0, 5606400.0, 512, 256)
    # 512 x 256 px starting on the 2.56 km lattice: exactly two 256 px grid tiles.
    assert w.x0 % 2560 == 0 and w.y0 % 2560 == 0
    granules = demo.granules()
    assert len(granules) == 1 and granules[0][1] == w
    lon, lat = demo.center_lonlat
    assert abs(lon - 4.65) < 0.1 and abs(lat - 50.59) < 0.1


def test_region_options_and_errors():
    r = sim.make_region(seed=1, years=[2023], size_km="1.28", tile_size=64)
    assert r.windows[0].shape == (128, 128)
    assert r.windows[0].x0 % 60 == 0 and r.windows[0].y0 % 60 == 0
    g = r.granules()
    assert len(g) > 1
    assert sum(w.width * w.height for _, w in g) == 128 * 128
    trop = sim.make_region(seed=0, years=[2023], biome="tropical", size_km=1.0)
    assert trop.windows[0].epsg == 32722  # Para, southern hemisphere
    with pytest.raises(ValueError, match="biome"):
        sim.make_region(seed=0, years=[2023], biome="arctic")
    with pytest.raises(ValueError, match="size-km"):
        sim.make_region(seed=0, years=[2023], size_km="1xq")
    with pytest.raises(ValueError, match="cloud-cover"):
        sim.make_region(seed=0, years=[2023], cloud_cover=1.5)
    assert sim.SimRegion.from_params(r.to_params()) == r


def test_bbox_across_utm_zones_gives_one_window_per_zone():
    r = sim.make_region(seed=0, years=[2023], bbox="5.985,50.60,6.015,50.61")
    assert [w.epsg for w in r.windows] == [32631, 32632]
    for w in r.windows:
        lc = sim.landcover(r, w, 2023)
        assert lc.shape == w.shape and lc.min() >= 1


def test_hash_uniform_is_pure_and_uniform():
    a = W.hash_uniform(42, np.arange(10000), np.zeros(10000, int))
    b = W.hash_uniform(42, np.arange(10000), np.zeros(10000, int))
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.01
    assert not np.array_equal(a, W.hash_uniform(43, np.arange(10000), np.zeros(10000, int)))
    assert W.stable_seed(0, "x", 5) == W.stable_seed(0, "x", 5) != W.stable_seed(1, "x", 5)


def test_fbm_is_unit_scaled_and_seamless():
    xs = np.arange(200) * 10.0 + 600000.0
    ys = 5600000.0 - np.arange(100) * 10.0
    full = W.fbm(xs, ys, seed=3, wavelength=500.0, octaves=3)
    left = W.fbm(xs[:120], ys, seed=3, wavelength=500.0, octaves=3)
    np.testing.assert_allclose(full[:, :120], left, atol=1e-6)
    pts = W.fbm_points(xs[[5, 150]], ys[[7, 7]], seed=3, wavelength=500.0, octaves=3)
    np.testing.assert_allclose(pts, full[7, [5, 150]], atol=1e-5)
    big = W.fbm(np.arange(300) * 97.0, np.arange(300) * 97.0, seed=9, wavelength=1000, octaves=4)
    assert 0.8 < big.std() < 1.2
    assert abs(float((big > W.fbm_threshold(0.2, 4)).mean()) - 0.2) < 0.05


def test_at_least_ten_classes_in_demo_landcover(demo):
    lc = sim.landcover(demo, demo.windows[0], 2023)
    present = set(np.unique(lc).tolist())
    assert len(present) >= 10
    assert {C.WATER, C.EVERGREEN_FOREST, C.DECIDUOUS_FOREST, C.CROP_A, C.CROP_B} <= present
    assert {C.DOUBLE_CROP, C.GRASSLAND, C.SHRUBLAND, C.WETLAND, C.BUILT_UP, C.BARE_SOIL} <= present
    # No class swallows the region.
    assert np.bincount(lc.ravel()).max() / lc.size < 0.3


def test_all_five_event_types_and_landcover_changes_inside_events(demo):
    w = demo.windows[0]
    codes = sim.event_codes(demo, w, 2023)
    a, b = sim.landcover(demo, w, 2023), sim.landcover(demo, w, 2024)
    assert set(np.unique(codes[codes > 0]).tolist()) == {1, 2, 3, 4, 5}
    np.testing.assert_array_equal(codes > 0, a != b)
    names = np.array(("",) + C.EVENT_TYPES)
    moved = {n: (a[codes == k], b[codes == k]) for k, n in enumerate(names) if k}
    assert set(np.unique(moved["deforestation"][0])) <= set(C.FORESTS)
    assert set(np.unique(moved["deforestation"][1])) == {C.BARE_SOIL}
    assert set(np.unique(moved["urban_expansion"][1])) == {C.BUILT_UP}
    assert set(np.unique(moved["fire_regrowth"][1])) == {C.BURNED}
    assert set(np.unique(moved["crop_rotation"][0])) == {C.CROP_A, C.CROP_B}
    assert set(np.unique(np.concatenate(moved["reservoir_change"]))) == {C.WATER, C.BARE_SOIL}
    gdf = labels.change_polygons(demo)
    assert set(gdf.event_type) == set(C.EVENT_TYPES)
    assert (gdf.year_from == 2023).all() and (gdf.year_to == 2024).all()
    assert (gdf.class_from != gdf.class_to).all()
    assert gdf.crs.to_epsg() == 4326
    # Polygon areas add up to the changed pixels.
    assert abs(gdf.area_m2.sum() - 100.0 * (codes > 0).sum()) < 1.0


def test_fire_then_regrowth_over_three_years():
    r = sim.make_region(seed=0, years=[2023, 2025])
    w = r.windows[0]
    c23, c24 = sim.event_codes(r, w, 2023), sim.event_codes(r, w, 2024)
    burned = sim.landcover(r, w, 2024) == C.BURNED
    assert burned.any()
    # The year after the fire the burned parcels regrow into shrubland.
    assert (sim.landcover(r, w, 2025)[burned] == C.SHRUBLAND).all()
    assert (c24[burned] == 1 + C.EVENT_TYPES.index("fire_regrowth")).all()
    assert (c23[burned] == 1 + C.EVENT_TYPES.index("fire_regrowth")).all()


def test_truth_is_seamless_across_windows(demo):
    w = demo.windows[0]
    t = sim.acquisition_times(demo, "sentinel2_l2a")[40]
    full = sim.clear_sky_truth(demo, "sentinel2_l2a", t, w)
    part = w.subwindow(37, 101, 50, 70)
    np.testing.assert_allclose(
        sim.clear_sky_truth(demo, "sentinel2_l2a", t, part), full[37:87, 101:171], atol=1e-6
    )
    np.testing.assert_array_equal(
        sim.landcover(demo, part, 2024), sim.landcover(demo, w, 2024)[37:87, 101:171]
    )


def test_windows_outside_the_region_are_refused(demo):
    far = GridWindow(32631, 700000.0, 5700000.0, 10, 10)
    with pytest.raises(ValueError, match="outside the simulated region"):
        sim.landcover(demo, far, 2023)


def test_determinism_same_seed_same_values_other_seed_differs():
    r0 = sim.make_region(seed=5, years=[2023], size_km=1.0)
    t = sim.acquisition_times(r0, "sentinel2_l2a")[30]
    a = sim.clear_sky_truth(r0, "sentinel2_l2a", t, r0.windows[0])
    lc = sim.landcover(r0, r0.windows[0], 2023)
    _clear_caches()
    np.testing.assert_array_equal(a, sim.clear_sky_truth(r0, "sentinel2_l2a", t, r0.windows[0]))
    np.testing.assert_array_equal(lc, sim.landcover(r0, r0.windows[0], 2023))
    r1 = sim.make_region(seed=6, years=[2023], size_km=1.0)
    assert not np.array_equal(lc, sim.landcover(r1, r1.windows[0], 2023))
    assert np.abs(a - sim.clear_sky_truth(r1, "sentinel2_l2a", t, r1.windows[0])).mean() > 0.005


def _ndvi_by_class(region, window, lc, time_ms):
    x = sim.clear_sky_truth(region, "sentinel2_l2a", time_ms, window)
    ndvi = (x[..., 6] - x[..., 2]) / (x[..., 6] + x[..., 2])
    return {int(c): float(np.median(ndvi[lc == c])) for c in np.unique(lc)}


def test_phenology_crops_differ_in_timing_and_forests_in_winter(demo):
    w = demo.windows[0]
    lc = sim.landcover(demo, w, 2023)

    def at(month, day=15):
        return int(np.datetime64(f"2023-{month:02d}-{day:02d}T10:30", "ms").astype(np.int64))

    may, aug, jan = (_ndvi_by_class(demo, w, lc, at(m)) for m in (5, 8, 1))
    # Winter cereal is green in May and harvested by August; maize the other way round.
    assert may[C.CROP_A] > 0.75 and aug[C.CROP_A] < 0.4
    assert may[C.CROP_B] < 0.4 and aug[C.CROP_B] > 0.75
    # Deciduous forest is leafless in January, evergreen is not.
    assert jan[C.DECIDUOUS_FOREST] < jan[C.EVERGREEN_FOREST] - 0.1
    assert jan[C.EVERGREEN_FOREST] > 0.65
    assert max(may[C.WATER], aug[C.WATER]) < 0.0
    assert aug[C.BUILT_UP] < 0.45 and aug[C.ROCK] < 0.1


def test_water_extent_is_seasonal():
    r = sim.make_region(seed=0, years=[2023])
    w = r.windows[0]
    world = W.get_world(r, w.epsg)
    f = W.window_fields(r, w)
    lake = W.parcel_class(world, f.p1, 2023) == C.WATER

    def water_pixels(month):
        t = int(np.datetime64(f"2023-{month:02d}-15T10:30", "ms").astype(np.int64))
        return float(W.surface_state(r, world, f, None, t).water[lake].sum())

    # Lakes are fuller in late winter than at the end of the summer.
    assert water_pixels(2) > water_pixels(9) * 1.05
    assert water_pixels(9) > 0.3 * lake.sum()


def test_elevation_delays_greenup():
    r = sim.make_region(seed=0, years=[2023])
    b = r.biome_preset
    assert b.delay_per_100m > 0
    world = W.get_world(r, r.windows[0].epsg)
    f = W.window_fields(r, r.windows[0])
    t = int(np.datetime64("2023-04-25T10:30", "ms").astype(np.int64))
    base = W.surface_state(r, world, f, None, t)
    f.elevation += 400.0  # the same pixels 400 m higher
    try:
        high = W.surface_state(r, world, f, None, t)
    finally:
        f.elevation -= 400.0
    decid = base.cls == C.DECIDUOUS_FOREST
    assert high.lai[decid].mean() < base.lai[decid].mean() - 0.5


def test_points_are_stratified(demo):
    pts = labels.sample_points(demo, 2023, per_class=50)
    assert list(pts.columns) == list(labels.POINT_COLUMNS)
    assert pts.crs.to_epsg() == 4326
    counts = pts.class_id.value_counts()
    assert len(counts) >= 10 and (counts <= 50).all() and counts.max() == 50
    # Every point's label is the land cover under it.
    w = demo.windows[0]
    lc = sim.landcover(demo, w, 2023)
    rows = ((w.y0 - pts.y) / 10 - 0.5).round().astype(int)
    cols = ((pts.x - w.x0) / 10 - 0.5).round().astype(int)
    np.testing.assert_array_equal(lc[rows, cols], pts.class_id)
    assert set(pts.class_name) <= set(demo.biome_preset.class_names.values())


def test_tropical_preset():
    r = sim.make_region(seed=0, years=[2023], biome="tropical", size_km=2.56)
    names = r.biome_preset.class_names
    assert names[C.EVERGREEN_FOREST] == "evergreen_broadleaf_rainforest"
    assert {names[C.CROP_A], names[C.CROP_B]} == {"sugarcane", "oil_palm"}
    w = r.windows[0]
    lc = sim.landcover(r, w, 2023)
    for month in (3, 9):
        t = int(np.datetime64(f"2023-{month:02d}-15T10:30", "ms").astype(np.int64))
        nd = _ndvi_by_class(r, w, lc, t)
        assert nd[C.EVERGREEN_FOREST] > 0.8
    temps = [
        sim.clear_sky_truth(r, "era5_land", t, w.subwindow(0, 0, 2, 2))[0, 0, 0]
        for t in sim.acquisition_times(r, "era5_land")
    ]
    assert 295 < min(temps) and max(temps) - min(temps) < 5.0
