"""Training example layout: build -> serialize -> parse (TF and numpy) round trips."""

from __future__ import annotations

import numpy as np
import pytest

from model import input_pipeline
from schemas import examples, sensors
from schemas.grid import GridWindow, lonlat_to_utm
from schemas.observations import Observations, SourceFrames

DAY = 86_400_000
T0 = 1_672_531_200_000  # 2023-01-01T00:00:00Z


def _frames(source: str, t: int, p: int, rng: np.random.Generator, **kw) -> SourceFrames:
    c = len(sensors.get_sensor(source).bands)
    values = rng.uniform(0.01, 0.5, size=(t, p, p, c)).astype(np.float32)
    valid = rng.random((t, p, p)) > 0.3
    times = T0 + np.arange(t, dtype=np.int64)[::-1] * 5 * DAY  # deliberately not sorted
    geometry = {g: np.arange(t, dtype=np.float32) + 10 for g in sensors.get_sensor(source).geometry}
    return SourceFrames(source, values, valid, times, geometry, **kw)


def _obs(p: int = 4, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    s2 = _frames("sentinel2_l2a", 20, p, rng)
    s1 = _frames("sentinel1", 3, p, rng)
    era = _frames("era5_land", 12, p, rng)
    dem_vals = rng.uniform(100, 200, size=(1, p, p, 2)).astype(np.float32)
    dem = SourceFrames("cop_dem", dem_vals, np.ones((1, p, p), bool), [sensors.STATIC_TIME_MS])
    window = GridWindow(32631, 664000.0, 5612120.0, p, p)
    return Observations({s.source: s for s in (s2, s1, era, dem)}, window=window)


def _build(obs: Observations, max_frames: int = 8, **kw) -> dict[str, np.ndarray]:
    loc = (
        examples.location_for_window(obs.window)
        if obs.window is not None
        else examples.location_for_point(4.5, 50.6, "pt")
    )
    args = dict(
        t_start_ms=T0,
        t_end_ms=T0 + 365 * DAY,
        max_frames=max_frames,
        location=loc,
        support_ms=(T0, T0 + 365 * DAY),
        sample_id="s1",
        seed=3,
    )
    args.update(kw)
    return examples.example_features(obs, **args)


def test_layout_shapes_follow_registry():
    lay = examples.feature_layout(patch_size=4, max_frames=8)
    assert lay["sentinel2_l2a/values"].shape == (8, 4, 4, 10)
    assert lay["sentinel2_l2a/valid"].shape == (8, 4, 4)
    assert lay["sentinel2_l2a/geometry"].shape == (8, 2)
    assert lay["sentinel2_l2a/band_valid"].shape == (8, 10)
    assert lay["cop_dem/values"].shape == (1, 4, 4, 2)
    assert "cop_dem/geometry" not in lay and "era5_land/geometry" not in lay
    assert lay["target/landcover"].shape == (4, 4)
    assert lay["valid_period"].shape == (2,)
    # Masks are packed bits on the wire, values coded (schema 2); bool / float32 when parsed.
    assert lay["landsat_c2l2/valid"].stored == "bits" and lay["landsat_c2l2/valid"].dtype == "bool"
    assert lay["landsat_c2l2/values"].stored == "codec"
    assert lay["landsat_c2l2/values"].dtype == "float32"


def test_features_match_layout_and_padding():
    obs = _obs()
    f = _build(obs, max_frames=8)
    lay = examples.feature_layout(patch_size=4, max_frames=8)
    assert set(f) == set(lay)
    for name, spec in lay.items():
        assert f[name].shape == spec.shape, name
    # S2: 20 frames with clear pixels -> 8 chosen, sorted by time.
    fv = f["sentinel2_l2a/frame_valid"]
    assert fv.all()
    t = f["sentinel2_l2a/times_ms"]
    assert (np.diff(t) > 0).all()
    # S1: 3 frames -> 3 real + 5 padding frames with everything zero.
    assert f["sentinel1/frame_valid"].tolist() == [True] * 3 + [False] * 5
    assert (f["sentinel1/times_ms"][3:] == 0).all()
    assert not f["sentinel1/valid"][3:].any()
    assert (f["sentinel1/values"][3:] == 0).all()
    # Landsat absent: all padding.
    assert not f["landsat_c2l2/frame_valid"].any()
    # Real S1 frames equal the input (sorted by time), zero where invalid.
    s1 = obs["sentinel1"]
    order = np.argsort(s1.times_ms)
    want = np.where(s1.valid[order][..., None], s1.values[order], 0.0)
    np.testing.assert_array_equal(f["sentinel1/values"][:3], want)
    np.testing.assert_array_equal(f["sentinel1/valid"][:3], s1.valid[order])
    np.testing.assert_array_equal(
        f["sentinel1/geometry"][:3, 0], s1.geometry["incidence_angle"][order]
    )
    # Static DEM: one frame at STATIC_TIME_MS.
    assert f["cop_dem/frame_valid"].tolist() == [True]
    assert f["cop_dem/times_ms"].tolist() == [sensors.STATIC_TIME_MS]


def test_feature_sets_equal_one_call_per_size():
    """example_feature_sets transforms and masks each source once; each of its results is
    example_features at that T_max, array for array (the frame draws included)."""
    obs = _obs(p=5, seed=4)
    args = dict(
        t_start_ms=T0,
        t_end_ms=T0 + 365 * DAY,
        location=examples.location_for_window(obs.window),
        sample_id="s1",
        seed=7,
    )
    sets = examples.example_feature_sets(obs, max_frames=(4, 16, 8), **args)
    assert [int(f["max_frames"]) for f in sets] == [4, 16, 8]
    for m, got in zip((4, 16, 8), sets, strict=True):
        want = examples.example_features(obs, max_frames=m, **args)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # 20 Sentinel-2 frames: T_max 4 and 8 draw subsets, 16 keeps 16 of the clear ones
    assert sets[0]["sentinel2_l2a/frame_valid"].sum() == 4
    assert sets[2]["sentinel2_l2a/frame_valid"].sum() == 8


def test_precipitation_is_log1p_transformed():
    obs = _obs()
    f = _build(obs)
    era = obs["era5_land"]
    order = np.argsort(era.times_ms)
    # All 12 frames have clear pixels and fit in T_max = 16.
    f = _build(obs, max_frames=16)
    v = f["era5_land/values"][:12]
    ok = f["era5_land/valid"][:12]
    raw = era.values[order][..., 1]
    want = np.log1p(raw * 1000.0)
    np.testing.assert_allclose(v[..., 1][ok], want[ok], rtol=1e-6)
    np.testing.assert_array_equal(v[..., 0][ok], era.values[order][..., 0][ok])


def test_frame_selection_prefers_clear_and_is_reproducible():
    rng = np.random.default_rng(0)
    clear = np.concatenate([np.full(10, 0.05), np.full(10, 1.0), np.zeros(5)])
    counts = np.zeros(25)
    for s in range(200):
        idx = examples.select_frames(clear, 8, np.random.default_rng(s))
        assert len(idx) == 8 and (np.diff(idx) > 0).all()
        counts[idx] += 1
    assert counts[20:].sum() == 0  # fully cloudy frames are never chosen
    assert counts[10:20].mean() > 5 * counts[:10].mean()
    a = examples.select_frames(clear, 8, np.random.default_rng(7))
    b = examples.select_frames(clear, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    # Fewer qualifying frames than T_max: all of them.
    np.testing.assert_array_equal(examples.select_frames([0, 0.5, 1], 8, rng), [1, 2])


def test_missing_band_keeps_other_bands():
    """A product without B8A (WorldCereal) keeps its other bands valid; B8A marked absent."""
    obs = _obs()
    s2 = obs["sentinel2_l2a"]
    s2.values[..., s2.band_names.index("B8A")] = np.nan
    f = _build(obs)
    bv = f["sentinel2_l2a/band_valid"]
    assert not bv[:, 7].any() and bv[:, [0, 1, 2, 3, 4, 5, 6, 8, 9]].all()
    assert f["sentinel2_l2a/valid"].any()
    assert (f["sentinel2_l2a/values"][..., 7] == 0).all()


def test_encode_decode_varints():
    v = np.array([0, 1, 127, 128, 300, 2**40, -1, -(2**62), 2**63 - 1], dtype=np.int64)
    np.testing.assert_array_equal(examples.decode_varints(examples.encode_varints(v)), v)
    assert examples.encode_varints(np.array([1, 0, 1])) == b"\x01\x00\x01"
    assert examples.encode_varints(np.array([300])) == b"\xac\x02"


def _assert_same(decoded: dict, features: dict) -> None:
    for name, want in features.items():
        got = decoded[name]
        if want.dtype == object:
            assert got == want.item(), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
            assert got.shape == want.shape, name


@pytest.mark.parametrize("p", [4, 1])
def test_round_trip_numpy_and_tensorflow(p):
    tf = pytest.importorskip("tensorflow")
    if p == 1:
        base = _obs(p=1)
        obs = Observations(base.sources, point_ids=np.array(["pt"], object))
    else:
        obs = _obs(p=p)
    lc = np.arange(p * p).reshape(p, p) - 1  # includes -1 (unknown)
    f = _build(obs, landcover=lc, class_id=5, class_names={5: "cropland"})
    data = examples.serialize_example(f)

    # Our numpy decoder.
    _assert_same(examples.decode_example(data), f)

    # TF's own proto parser agrees on the wire format.
    ex = tf.train.Example.FromString(data)
    usable = examples.usable_mask(f["sentinel2_l2a/valid"], f["sentinel2_l2a/band_valid"])
    assert ex.features.feature["sentinel2_l2a/values"].bytes_list.value == [
        examples.encode_values("sentinel2_l2a", f["sentinel2_l2a/values"], usable)
    ]
    assert ex.features.feature["location/lon"].float_list.value[0] == f["location/lon"]
    assert ex.features.feature["target/text"].bytes_list.value[0] == b"cropland"

    # The tf.data parse function (batch of 2 and scalar).
    parsed = input_pipeline.parse_examples(tf.constant([data, data]), patch_size=p, max_frames=8)
    for name, want in f.items():
        got = parsed[name].numpy()
        assert got.shape == (2, *want.shape), name
        if want.dtype == object:
            assert got[1] == want.item(), name
        else:
            np.testing.assert_array_equal(got[1], want, err_msg=name)
    assert parsed["sentinel1/valid"].dtype == tf.bool
    one = input_pipeline.parse_examples(tf.constant(data), patch_size=p, max_frames=8)
    np.testing.assert_array_equal(one["target/landcover"].numpy(), lc)
    assert int(one["schema_version"]) == examples.SCHEMA_VERSION


def test_location_helpers():
    w = GridWindow(32631, 664000.0, 5612120.0, 4, 4)
    loc = examples.location_for_window(w)
    assert (loc.epsg, loc.x, loc.y) == (32631, 664000, 5612120)
    # lon/lat is the patch centre: 2 px (20 m) right of and below the corner.
    x, y = lonlat_to_utm(loc.lon, loc.lat, 32631)
    assert x == pytest.approx(664020.0, abs=1e-3) and y == pytest.approx(5612100.0, abs=1e-3)
    pt = examples.location_for_point(4.6, 50.6, "a")
    assert pt.epsg == 32631 and pt.x % 10 == 0 and pt.y % 10 == 0 and pt.point_id == "a"
    px, py = lonlat_to_utm(4.6, 50.6, 32631)
    assert pt.x <= px < pt.x + 10 and pt.y - 10 < py <= pt.y


def test_schemas_import_no_tensorflow():
    import subprocess
    import sys

    code = "import sys, schemas.examples, schemas.composite; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_example_from_observations_is_serialized_features():
    obs = _obs()
    kw = dict(
        t_start_ms=T0,
        t_end_ms=T0 + 90 * DAY,
        max_frames=4,
        location=examples.location_for_window(obs.window),
        support_ms=(T0, T0 + 365 * DAY),
        seed=11,
    )
    data = examples.example_from_observations(obs, **kw)
    assert data == examples.serialize_example(examples.example_features(obs, **kw))
    ex = examples.decode_example(data)
    assert ex["valid_period"].tolist() == [T0, T0 + 90 * DAY]
    assert ex["support_period"].tolist() == [T0, T0 + 365 * DAY]
    assert (ex["target/landcover"] == -1).all() and int(ex["target/class_id"]) == -1
    assert ex["target/text"].item() == b""
