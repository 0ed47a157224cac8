"""Property test (hypothesis, issue 27): a window read of an embedding tile equals the same
crop of the whole read, for our north-up COGs and AEF's bottom-up tiles alike, on random
windows."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_embeddings import _write_aef_tile  # the same directory: pytest puts it on sys.path

from beam_jobs.io import embeddings as W
from schemas import embedding as E

EPSG = 32631
X0, Y0 = 600_000.0, 5_600_000.0
H, WD = 37, 29


def _field() -> np.ndarray:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(H, WD, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v[rng.random((H, WD)) < 0.1] = np.nan
    return v


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> dict[str, W.EmbeddingTile]:
    d = tmp_path_factory.mktemp("tiles")
    emb = _field()
    ours = d / "2023" / "31N" / "ours.tif"
    ours.parent.mkdir(parents=True)
    W.write_embedding_cog(ours, emb, Affine(10.0, 0.0, X0, 0.0, -10.0, Y0), f"EPSG:{EPSG}")
    aef = d / "aef" / "2023" / "31N" / "aef.tiff"
    _write_aef_tile(aef, emb, X0, Y0)  # stored bottom-up, as the official tiles are
    return {"ours": W.embedding_tile(str(ours)), "aef": W.embedding_tile(str(aef))}


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["ours", "aef"]),
    st.integers(0, H - 1),
    st.integers(1, H),
    st.integers(0, WD - 1),
    st.integers(1, WD),
)
def test_window_read_equals_crop_of_whole_read(tiles, kind, r0, dh, c0, dw):
    tile = tiles[kind]
    r1, c1 = min(H, r0 + dh), min(WD, c0 + dw)
    whole = W.read_tile(tile)
    part = W.read_tile(tile, (r0, r1, c0, c1))
    np.testing.assert_array_equal(part.values, whole.values[r0:r1, c0:c1])
    np.testing.assert_array_equal(part.valid, whole.valid[r0:r1, c0:c1])
    assert part.transform == whole.transform @ Affine.translation(c0, r0)
    codes = W.read_tile_codes(tile, (r0, r1, c0, c1))
    np.testing.assert_array_equal(codes, E.quantize(_field())[r0:r1, c0:c1])


def test_windows_outside_the_tile_are_refused(tiles):
    for window in ((0, H + 1, 0, 1), (3, 3, 0, 1), (-1, 2, 0, 1)):
        with pytest.raises(ValueError, match="outside"):
            W.read_tile_codes(tiles["ours"], window)
