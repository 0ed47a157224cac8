"""Property tests (hypothesis) of the grid math and the quantization (issue 27): random
inputs, each property a bound the contract implies. Each test stays under a few seconds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import embedding
from schemas.grid import (
    PIXEL_SIZE_M,
    Tile,
    lonlat_to_utm,
    parse_tile_id,
    utm_epsg,
    utm_to_lonlat,
)

FAST = settings(max_examples=60, deadline=None)
EPSGS = st.sampled_from([32601, 32631, 32660, 32701, 32731, 32760])
lon = st.floats(-179.9, 179.9, allow_nan=False)
lat = st.floats(-79.9, 83.9, allow_nan=False)  # UTM's latitude span


@FAST
@given(EPSGS, st.integers(-2000, 2000), st.integers(-2000, 2000), st.sampled_from([64, 256, 8192]))
def test_tile_id_and_bounds_round_trip(epsg, col, row, size):
    tile = Tile(epsg, col, row, size)
    assert parse_tile_id(tile.id, size) == tile
    minx, miny, maxx, maxy = tile.window.bounds
    span = size * PIXEL_SIZE_M
    assert (minx, miny, maxx, maxy) == (col * span, row * span, (col + 1) * span, (row + 1) * span)
    # The last pixel's centre maps back to that pixel through the inverse geotransform.
    x, y = tile.transform @ (size - 0.5, size - 0.5)
    assert minx < x < maxx and miny < y < maxy
    c, r = ~tile.transform @ (x, y)
    assert (int(r), int(c)) == (size - 1, size - 1)


@FAST
@given(lon, lat)
def test_lonlat_utm_round_trip_is_sub_millimetre(lo, la):
    epsg = utm_epsg(lo, la)
    x, y = lonlat_to_utm(lo, la, epsg)
    lo2, la2 = utm_to_lonlat(x, y, epsg)
    x2, y2 = lonlat_to_utm(lo2, la2, epsg)
    assert abs(x2 - x) < 1e-3 and abs(y2 - y) < 1e-3
    assert abs(la2 - la) < 1e-8 and abs(((lo2 - lo) + 180) % 360 - 180) < 1e-8


@FAST
@given(
    EPSGS,
    st.integers(-500, 500),
    st.integers(-500, 500),
    st.integers(1, 64),
    st.integers(1, 64),
    st.data(),
)
def test_subwindow_arithmetic(epsg, col, row, width, height, data):
    """A subwindow of a subwindow is the subwindow at the summed offset; bounds agree."""
    tile = Tile(epsg, col, row, 64)
    r1, c1 = data.draw(st.integers(-32, 32)), data.draw(st.integers(-32, 32))
    r2, c2 = data.draw(st.integers(-32, 32)), data.draw(st.integers(-32, 32))
    w = tile.window
    nested = w.subwindow(r1, c1, 50, 50).subwindow(r2, c2, height, width)
    direct = w.subwindow(r1 + r2, c1 + c2, height, width)
    assert nested == direct
    minx, miny, maxx, maxy = direct.bounds
    assert maxx - minx == width * PIXEL_SIZE_M and maxy - miny == height * PIXEL_SIZE_M
    assert minx == w.x0 + (c1 + c2) * PIXEL_SIZE_M and maxy == w.y0 - (r1 + r2) * PIXEL_SIZE_M


@FAST
@given(st.integers(8, 64), st.integers(1, 24), st.integers(0, 12))
def test_chip_cores_tile_the_tile_exactly(size, core, halo):
    tile = Tile(32631, 10, 500, size)
    covered = np.zeros((size, size), np.int32)
    for chip in tile.chips(core, halo):
        (tr, tc), (cr, cc) = chip.core_slices()
        covered[tr, tc] += 1
        assert (tr.stop - tr.start, tc.stop - tc.start) == (cr.stop - cr.start, cc.stop - cc.start)
        assert cr.start == halo and cc.start == halo
        # The core window sits halo pixels inside the chip window.
        assert chip.window.subwindow(halo, halo, core, core) == chip.core_window
    assert (covered == 1).all()


vectors = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
)


@FAST
@given(vectors)
def test_quantization_round_trip_bounds(params):
    """|dequantize(quantize(v)) - v| <= the rule's half step: with s = sqrt(|v|) * 127.5
    rounded to within 1/2, |v'| - |v| is at most (s + 1/2)^2 - s^2 = (s + 1/4) / 127.5^2; unit
    vectors keep their norm within 0.02 and their direction (cosine) above 0.999."""
    n, seed, scale = params
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 64)) * rng.uniform(0.1, 10, (n, 1))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v = v.astype(np.float32)
    back = embedding.dequantize(embedding.quantize(v)).astype(np.float64)
    s = np.sqrt(np.abs(v.astype(np.float64))) * embedding.QUANT_SCALE
    bound = (s + 0.25) / embedding.QUANT_SCALE**2 + 1e-7
    assert (np.abs(back - v) <= bound).all()
    norms = np.linalg.norm(back, axis=-1)
    assert np.abs(norms - 1).max() < 0.02
    cos = (back * v).sum(-1) / norms
    assert cos.min() > 0.999
    # Codes are a fixed point: quantize(dequantize(q)) == q, and sign is kept.
    q = embedding.quantize(v * np.float32(min(scale, 1.0)))
    np.testing.assert_array_equal(embedding.quantize(embedding.dequantize(q)), q)
    assert (np.sign(embedding.dequantize(q)) * np.sign(v) >= 0).all()


@FAST
@given(st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_non_finite_rows_are_nodata_and_others_are_not(n, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 64)).astype(np.float32)
    bad = rng.random(n) < 0.3
    v[bad, rng.integers(0, 64)] = rng.choice([np.nan, np.inf, -np.inf])
    q = embedding.quantize(v)
    np.testing.assert_array_equal((q == embedding.NODATA).all(-1), bad)
    assert (q[~bad] != embedding.NODATA).all()
