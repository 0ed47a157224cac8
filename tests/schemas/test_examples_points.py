"""point_set_features: N points at once equal N one-point example_features calls."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import examples, sensors
from schemas.observations import Observations, SourceFrames

DAY = 86_400_000
T0 = 1_672_531_200_000


def _point_set(n: int, seed: int = 0) -> Observations:
    """n points; S2 with 30 dates (more than T_max for most points, fewer for some), S1 with
    NaN bands, ERA5 monthly, a static DEM; Landsat absent."""
    rng = np.random.default_rng(seed)
    sources = {}
    for s, t in (("sentinel2_l2a", 30), ("sentinel1", 7), ("era5_land", 12), ("cop_dem", 1)):
        c = len(sensors.get_sensor(s).bands)
        values = rng.uniform(0.0, 0.5, size=(t, n, 1, c)).astype(np.float32)
        valid = rng.random((t, n, 1)) > rng.uniform(0.0, 0.95, size=(1, n, 1))
        if s == "sentinel1":
            values[rng.random((t, n, 1, c)) < 0.2] = np.nan  # a missing band or two
        times = (
            np.array([sensors.STATIC_TIME_MS])
            if s == "cop_dem"
            else T0 + rng.permutation(t).astype(np.int64) * 9 * DAY  # unsorted
        )
        geometry = {
            g: rng.uniform(20, 60, t).astype(np.float32) for g in sensors.get_sensor(s).geometry
        }
        if geometry:
            geometry[next(iter(geometry))][0] = np.nan
        sources[s] = SourceFrames(s, values, valid, times, geometry)
    ids = np.array([f"p{i}" for i in range(n)], object)
    return Observations(sources, point_ids=ids)


def _one(obs: Observations, i: int) -> Observations:
    return Observations(
        {k: f.crop(slice(i, i + 1), slice(0, 1)) for k, f in obs.sources.items()},
        point_ids=obs.point_ids[i : i + 1],
    )


@pytest.mark.parametrize("max_frames", [4, 24])
def test_points_at_once_equal_points_one_at_a_time(max_frames):
    obs = _point_set(40)
    t1 = T0 + 200 * DAY
    got = examples.point_set_features(obs, t_start_ms=T0, t_end_ms=t1, max_frames=max_frames)
    loc = examples.Location(0, 0, 0, 0.0, 0.0)
    n_frames = []
    for i in range(40):
        want = examples.example_features(
            _one(obs, i), t_start_ms=T0, t_end_ms=t1, max_frames=max_frames, location=loc
        )
        for name, arr in got.items():
            w = want[name]
            assert arr[i].dtype == w.dtype and arr[i].shape == w.shape, name
            assert np.array_equal(arr[i].view(np.uint8), w.view(np.uint8)), (name, i)
        n_frames.append(int(want["sentinel2_l2a/frame_valid"].sum()))
    # The draw was exercised: some points had more clear dates than T_max, some fewer.
    assert min(n_frames) < max_frames or max_frames == 24
    assert max(n_frames) == min(max_frames, 23)  # 23 S2 dates (9 days apart) fall in 200 days


def test_point_set_needs_points():
    obs = _point_set(3)
    bad = Observations({k: f for k, f in obs.sources.items()}, point_ids=obs.point_ids)
    with pytest.raises(ValueError, match="not after"):
        examples.point_set_features(bad, t_start_ms=T0, t_end_ms=T0, max_frames=4)


def test_point_feature_sets_equal_one_call_per_size():
    """point_set_feature_sets transforms and masks once; each result is point_set_features
    at that T_max, array for array (the frame draws included)."""
    obs = _point_set(40, seed=5)
    args = dict(t_start_ms=T0, t_end_ms=T0 + 365 * DAY, seed=2)
    sets = examples.point_set_feature_sets(obs, max_frames=(8, 32), **args)
    for m, got in zip((8, 32), sets, strict=True):
        want = examples.point_set_features(obs, max_frames=m, **args)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # 30 Sentinel-2 dates: T_max 8 draws at most 8 per point, 32 keeps every usable one
    assert sets[0]["sentinel2_l2a/frame_valid"].sum(axis=1).max() == 8
    assert sets[1]["sentinel2_l2a/frame_valid"].sum(axis=1).max() > 8
