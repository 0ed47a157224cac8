"""Monthly median composites on hand series."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from schemas import composite, sensors
from schemas.observations import Observations, SourceFrames


def _ms(y: int, m: int, d: int = 1, h: int = 0) -> int:
    return int(dt.datetime(y, m, d, h, tzinfo=dt.UTC).timestamp() * 1000)


def test_month_start_and_bounds():
    t = np.array([_ms(2023, 1, 31, 23), _ms(2023, 2, 1), _ms(2024, 2, 29, 12)])
    np.testing.assert_array_equal(
        composite.month_start_ms(t), [_ms(2023, 1), _ms(2023, 2), _ms(2024, 2)]
    )
    bounds = composite.month_bounds_ms(_ms(2023, 1), _ms(2024, 1))
    assert len(bounds) == 12
    assert bounds[0] == (_ms(2023, 1), _ms(2023, 2)) and bounds[-1] == (_ms(2023, 12), _ms(2024, 1))
    # Clipped at both ends.
    assert composite.month_bounds_ms(_ms(2023, 1, 15), _ms(2023, 3, 10)) == [
        (_ms(2023, 1, 15), _ms(2023, 2)),
        (_ms(2023, 2), _ms(2023, 3)),
        (_ms(2023, 3), _ms(2023, 3, 10)),
    ]


def test_monthly_median_equals_nanmedian_per_month():
    # 1 x 2 pixels, bands VV/VH; Jan: 3 frames, Feb: 2 frames, Apr: 1 frame (Mar empty).
    times = [_ms(2023, 1, 3), _ms(2023, 1, 15), _ms(2023, 1, 27), _ms(2023, 2, 8), _ms(2023, 2, 20)]
    times.append(_ms(2023, 4, 2))
    vv = np.array(
        [[-10.0, -20.0], [-12.0, -21.0], [-11.0, -99.0], [-8.0, -18.0], [-9.0, np.nan], [-5, -6]]
    )
    vh = vv - 7.0
    values = np.stack([vv, vh], axis=-1)[:, None].astype(np.float32)  # (T, 1, 2, 2)
    valid = np.ones((6, 1, 2), dtype=bool)
    valid[2, 0, 1] = False  # the -99 is masked (e.g. a border artefact)
    valid[4, 0, 1] = False
    inc = np.array([30.0, 31.0, 32.0, 40.0, np.nan, 35.0], np.float32)
    sf = SourceFrames(
        "sentinel1",
        values,
        valid,
        times,
        {"incidence_angle": inc, "orbit_direction": np.ones(6)},
    )
    out = composite.monthly_composite(sf)
    assert out.times_ms.tolist() == [_ms(2023, 1), _ms(2023, 2), _ms(2023, 4)]
    # Hand medians.
    np.testing.assert_allclose(
        out.values[0, 0, :, 0], [-11.0, -20.5]
    )  # Jan: (-10,-12,-11), (-20,-21)
    np.testing.assert_allclose(out.values[1, 0, :, 0], [-8.5, -18.0])  # Feb
    np.testing.assert_allclose(out.values[2, 0, :, 0], [-5.0, -6.0])
    np.testing.assert_allclose(out.values[..., 1], out.values[..., 0] - 7.0)
    # Against numpy nanmedian on the masked series.
    masked = np.where(valid[..., None], values, np.nan)
    month = np.array([0, 0, 0, 1, 1, 2])
    for i in range(3):
        np.testing.assert_array_equal(out.values[i], np.nanmedian(masked[month == i], axis=0))
    assert out.valid.all()
    np.testing.assert_allclose(out.geometry["incidence_angle"], [31.0, 40.0, 35.0])


def test_invalid_month_pixel_stays_invalid_and_static_untouched():
    times = [_ms(2023, 5, 1), _ms(2023, 5, 9)]
    values = np.ones((2, 1, 1, 10), np.float32) * 0.2
    valid = np.zeros((2, 1, 1), bool)
    sf = SourceFrames("sentinel2_l2a", values, valid, times)
    out = composite.monthly_composite(sf)
    assert out.num_frames == 1 and not out.valid.any() and np.isnan(out.values).all()
    dem = SourceFrames("cop_dem", np.ones((1, 1, 1, 2), np.float32), np.ones((1, 1, 1), bool), [0])
    obs = Observations({"cop_dem": dem, "sentinel2_l2a": sf})
    comp = composite.monthly_composites(obs)
    assert comp["cop_dem"] is dem
    assert comp["sentinel2_l2a"].num_frames == 1
    assert sensors.get_sensor("cop_dem").is_static


def test_dekad_starts_and_dekadal_medians():
    t = np.array(
        [_ms(2023, 1, 1), _ms(2023, 1, 10, 23), _ms(2023, 1, 11), _ms(2023, 1, 31, 23)]
        + [_ms(2023, 2, 21), _ms(2023, 2, 28, 12), _ms(2024, 2, 29)]
    )
    np.testing.assert_array_equal(
        composite.dekad_start_ms(t),
        [_ms(2023, 1, 1), _ms(2023, 1, 1), _ms(2023, 1, 11), _ms(2023, 1, 21)]
        + [_ms(2023, 2, 21), _ms(2023, 2, 21), _ms(2024, 2, 21)],
    )
    # One pixel, one band: dekad 1 of January holds 1, 2, 4 -> 2; dekad 2 holds 10 -> 10;
    # dekad 3 holds 7 (valid) and 99 (masked) -> 7. The monthly median of the valid values
    # (1, 2, 4, 10, 7) is 4.
    times = [_ms(2023, 1, 2), _ms(2023, 1, 5), _ms(2023, 1, 9), _ms(2023, 1, 15)]
    times += [_ms(2023, 1, 22), _ms(2023, 1, 30)]
    vals = np.array([1.0, 2.0, 4.0, 10.0, 7.0, 99.0], np.float32)
    valid = np.array([True, True, True, True, True, False])[:, None, None]
    sf = SourceFrames("sentinel1", np.stack([vals, vals - 5], -1)[:, None, None], valid, times)
    out = composite.composite(sf, "dekadal")
    assert out.times_ms.tolist() == [_ms(2023, 1, 1), _ms(2023, 1, 11), _ms(2023, 1, 21)]
    np.testing.assert_array_equal(out.values[:, 0, 0, 0], [2.0, 10.0, 7.0])
    np.testing.assert_array_equal(out.values[:, 0, 0, 1], [-3.0, 5.0, 2.0])
    assert composite.composite(sf, "monthly").values[0, 0, 0, 0] == 4.0
    # A year of daily frames gives 36 dekads.
    days = [_ms(2023, 1, 1) + d * 86_400_000 for d in range(365)]
    year = SourceFrames(
        "sentinel1", np.zeros((365, 1, 1, 2), np.float32), np.ones((365, 1, 1), bool), days
    )
    assert (
        composite.composites(Observations({"sentinel1": year}), "dekadal")["sentinel1"].num_frames
        == 36
    )
    with pytest.raises(ValueError, match="weekly"):
        composite.composite(sf, "weekly")
