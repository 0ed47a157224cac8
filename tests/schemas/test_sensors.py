"""The sensor registry."""

import numpy as np
import pytest

from schemas import sensors


def test_registry_has_the_five_sources():
    assert sensors.SOURCE_IDS == (
        "sentinel2_l2a",
        "sentinel1",
        "landsat_c2l2",
        "cop_dem",
        "era5_land",
    )
    s2 = sensors.get_sensor("sentinel2_l2a")
    assert s2.band_names == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert s2.band("B05").resolution_m == 20 and s2.band("B04").resolution_m == 10
    assert sensors.get_sensor("landsat_c2l2").band_names == (
        "SR_B2",
        "SR_B3",
        "SR_B4",
        "SR_B5",
        "SR_B6",
        "SR_B7",
    )
    assert sensors.get_sensor("sentinel1").geometry == ("incidence_angle", "orbit_direction")
    dem = sensors.get_sensor("cop_dem")
    assert dem.is_static and [b.name for b in dem.stored_bands] == ["elevation"]


def test_unknown_source_and_band_errors_name_them():
    with pytest.raises(KeyError, match="modis"):
        sensors.get_sensor("modis")
    with pytest.raises(KeyError, match="B99.*sentinel2_l2a"):
        sensors.get_sensor("sentinel2_l2a").band("B99")


def test_s2_encoding_matches_processing_baseline_4():
    enc = sensors.get_sensor("sentinel2_l2a").band("B04").encoding
    # DN 2000 -> 2000/10000 - 0.1 = 0.1 reflectance; DN 0 is nodata.
    out = enc.decode(np.array([2000, 0, 1000], np.uint16))
    assert out[0] == pytest.approx(0.1, abs=1e-6)
    assert np.isnan(out[1])
    assert out[2] == pytest.approx(0.0, abs=1e-6)
    back = enc.encode(np.array([0.1, np.nan, 0.2534]))
    assert back.tolist() == [2000, 0, 3534]


def test_landsat_encoding_collection2():
    enc = sensors.get_sensor("landsat_c2l2").band("SR_B4").encoding
    # 0.2 + x = DN * 2.75e-5 -> DN 10000 is 0.075 reflectance.
    assert enc.decode(np.array([10000], np.uint16))[0] == pytest.approx(0.075, abs=1e-6)
    rt = enc.decode(enc.encode(np.array([0.0312, 0.4567])))
    np.testing.assert_allclose(rt, [0.0312, 0.4567], atol=2.75e-5 / 2 + 1e-7)


def test_sentinel1_encoding_never_emits_nodata_for_valid_values():
    enc = sensors.get_sensor("sentinel1").band("VV").encoding
    stored = enc.encode(np.array([-12.345, -400.0, np.nan]))
    assert stored.tolist() == [-1234, -32767, -32768]
    assert np.isnan(enc.decode(stored)[2])


def test_float_encoding_nan_nodata():
    enc = sensors.get_sensor("cop_dem").band("elevation").encoding
    out = enc.decode(np.array([123.5, np.nan], np.float32))
    assert out[0] == 123.5 and np.isnan(out[1])


def test_model_transform_log1p_precipitation_in_mm():
    v = np.array([[280.0, 0.002], [270.0, 0.0]], np.float32)
    out = sensors.model_transform("era5_land", v)
    assert out[0, 0] == 280.0
    assert out[0, 1] == pytest.approx(np.log1p(2.0), rel=1e-6)
    assert out[1, 1] == 0.0


def test_masks_from_quality_layers():
    s2 = sensors.get_sensor("sentinel2_l2a")
    scl = np.array([4, 5, 6, 8, 9, 3, 10, 0, 11])
    assert sensors.mask_from_quality(s2, scl).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    ls = sensors.get_sensor("landsat_c2l2")
    qa = np.array([1 << 6, (1 << 6) | (1 << 7), 1 << 3, 1 << 4, 1, 1 << 1], np.uint16)
    assert sensors.mask_from_quality(ls, qa).tolist() == [True, True, False, False, False, False]
    with pytest.raises(ValueError, match="sentinel1"):
        sensors.mask_from_quality(sensors.get_sensor("sentinel1"), scl)
