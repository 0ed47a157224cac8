"""Schema 2 storage: values in source encodings, parsed back bit for bit (numpy and TF)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from schemas import examples, sensors

T0 = 1_672_531_200_000
P, T = 8, 4


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def _known_features(seed: int = 0) -> dict[str, np.ndarray]:
    """Example arrays whose values are what the readers produce, plus awkward floats.

    S2 10 m bands and S1: integer DNs decoded with the registry encoding (exact codes);
    S2 20 m bands: bilinear blends of decoded DNs (weights 9, 3, 3, 1 / 16 summed in float64,
    as the 2x fast path does); Landsat: arbitrary floats near reflectances; DEM and ERA5:
    floats that no integer code represents; a few -0.0, subnormal and huge values.
    """
    rng = np.random.default_rng(seed)
    f = examples.example_features(
        _empty_obs(),
        t_start_ms=T0,
        t_end_ms=T0 + 10**10,
        max_frames=T,
        location=examples.Location(32631, 0, 0, 4.5, 50.5),
    )
    for s in sensors.SOURCE_IDS:
        sensor = sensors.get_sensor(s)
        t = examples.num_frames(s, T)
        c = len(sensor.bands)
        valid = rng.random((t, P, P)) > 0.2
        band_valid = rng.random((t, c)) > 0.1
        v = np.zeros((t, P, P, c), np.float32)
        for j, band in enumerate(sensor.bands):
            enc = band.encoding
            if s == "sentinel2_l2a":
                dn = rng.integers(1, 12000, size=(4, t, P, P)).astype(np.uint16)
                x = [enc.decode(d) for d in dn]
                if band.resolution_m == 10:
                    v[..., j] = x[0]
                else:
                    w = (9 / 16, 3 / 16, 3 / 16, 1 / 16)
                    v[..., j] = sum(xi.astype(np.float64) * wi for xi, wi in zip(x, w, strict=True))
            elif s == "sentinel1":
                v[..., j] = enc.decode(rng.integers(-4000, 1000, size=(t, P, P)).astype(np.int16))
            elif s == "landsat_c2l2":
                v[..., j] = rng.uniform(-0.2, 1.6, size=(t, P, P))
            else:
                v[..., j] = rng.normal(200.0, 80.0, size=(t, P, P))
        v[0, 0, 0, 0] = -0.0
        v[0, 0, 1, 0] = 1e-42  # subnormal
        v[0, 1, 0, 0] = 3e38
        v[0, 1, 1, 0] = -1e30
        usable = examples.usable_mask(valid, band_valid)
        usable[0, :2, :2, 0] = True
        valid[0, :2, :2] = True
        band_valid[0, 0] = True
        f[f"{s}/values"] = np.where(usable, v, np.float32(0)).astype(np.float32)
        f[f"{s}/valid"] = valid
        f[f"{s}/band_valid"] = band_valid
    return f


def _empty_obs():
    from schemas.grid import GridWindow
    from schemas.observations import Observations

    return Observations({}, window=GridWindow(32631, 600000.0, 5600000.0, P, P))


def _assert_bit_identical(got: dict, want: dict) -> None:
    for name, w in want.items():
        g = np.asarray(got[name])
        if w.dtype == object:
            assert g.item() == w.item(), name
        elif w.dtype == np.float32:
            assert g.dtype == np.float32 and g.shape == w.shape, name
            assert np.array_equal(_bits(g), _bits(w)), name
        else:
            assert g.dtype == w.dtype and np.array_equal(g, w), name


def test_numpy_round_trip_is_bit_identical():
    f = _known_features()
    _assert_bit_identical(examples.decode_example(examples.serialize_example(f)), f)


def test_tf_parse_in_tf_data_is_bit_identical():
    tf = pytest.importorskip("tensorflow")
    from model import input_pipeline

    feats = [_known_features(seed) for seed in (1, 2, 3)]
    data = [examples.serialize_example(f) for f in feats]
    ds = tf.data.Dataset.from_tensor_slices(data).batch(3)
    ds = ds.map(lambda s: input_pipeline.parse_examples(s, patch_size=P, max_frames=T))
    batch = next(iter(ds))
    for i, f in enumerate(feats):
        _assert_bit_identical({k: v.numpy()[i] for k, v in batch.items()}, f)
    # A subset of keys pulls in what it needs (values decode with their masks) and no more.
    one = input_pipeline.parse_examples(
        tf.constant(data[0]), patch_size=P, max_frames=T, keys=["sentinel1/values"]
    )
    assert list(one) == ["sentinel1/values"]
    assert np.array_equal(
        _bits(one["sentinel1/values"].numpy()), _bits(feats[0]["sentinel1/values"])
    )


def test_integer_dn_bands_need_no_residual_and_codecs_follow_the_registry():
    f = _known_features()
    s2 = sensors.get_sensor("sentinel2_l2a")
    codecs = [examples.band_codec(b) for b in s2.bands]
    # 10 m bands: the registry scale itself, first differences along x.
    assert codecs[0] == examples.BandCodec("scaled", 1e-4, -0.1, 1, 0)
    # 20 m bands: scale / 16 (bilinear weights are multiples of 1/4 per axis), 2nd differences.
    assert codecs[3] == examples.BandCodec("scaled", 1e-4 / 16, -0.1, 2, 2)
    assert examples.band_codec(sensors.get_sensor("landsat_c2l2").bands[0]).step == 2.75e-5 / 36
    assert examples.band_codec(sensors.get_sensor("cop_dem").bands[0]).mode == "bits"
    usable = examples.usable_mask(f["sentinel2_l2a/valid"], f["sentinel2_l2a/band_valid"])
    data = examples.encode_values("sentinel2_l2a", f["sentinel2_l2a/values"], usable)
    n = T * P * P
    res = np.frombuffer(data[10 * 4 * n :], np.uint8).reshape(10, 4, n)
    # Residual planes of the 10 m bands (B02, B03, B04, B08): zero except the four awkward
    # values planted in band 0; the blended 20 m bands' codes are exact DN sums too.
    assert not res[[1, 2, 6]].any()
    assert np.count_nonzero(res[0].any(axis=0)) <= 4
    q = np.round((f["sentinel2_l2a/values"][..., 3].astype(np.float64) + 0.1) / (1e-4 / 16))
    assert np.allclose(q[usable[..., 3]] % 1, 0)


def test_packed_masks_and_sizes():
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], bool)
    assert examples.pack_mask(mask) == bytes([0b10111000, 0b10000000])
    np.testing.assert_array_equal(examples.unpack_mask(examples.pack_mask(mask), (3, 3)), mask)
    with pytest.raises(ValueError, match="packed mask"):
        examples.unpack_mask(b"\x00", (4, 4))
    # S1 backscatter from int16 hundredths of a dB, a random walk along x: the codes gzip to
    # under half of the float32 values schema 1 stored (measured 0.47; resampled 20 / 30 m
    # bands gain more, which makes the whole example about 0.31: benchmarks/RESULTS.md).
    rng = np.random.default_rng(0)
    db100 = -1500 + np.cumsum(rng.integers(-30, 31, size=(T, 32, 32, 2)), axis=2)
    v = sensors.SENTINEL1.bands[0].encoding.decode(db100.astype(np.int16))
    ok = np.ones(v.shape, bool)
    coded = zlib.compress(examples.encode_values("sentinel1", v, ok))
    assert len(coded) < len(zlib.compress(v.tobytes())) / 2
    np.testing.assert_array_equal(
        _bits(examples.decode_values("sentinel1", zlib.decompress(coded), ok)), _bits(v)
    )


def test_other_schema_versions_fail_with_a_clear_message():
    f = _known_features()
    f["schema_version"] = np.array(1, np.int64)
    data = examples.serialize_example(f)
    with pytest.raises(ValueError, match="schema_version 1; this code reads schema_version 2"):
        examples.decode_example(data)
    tf = pytest.importorskip("tensorflow")
    from model import input_pipeline

    with pytest.raises(tf.errors.InvalidArgumentError, match="reads schema_version 2"):
        input_pipeline.parse_examples(tf.constant([data]), patch_size=P, max_frames=T)
