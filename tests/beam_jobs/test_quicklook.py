"""quicklook on the analysis world (conftest.py): three bands or PCA as a stretched RGB COG
and PNG; AEF's copy gives the same image."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from analysis_world import SIDE, assert_provenance

from beam_jobs import quicklook
from beam_jobs.io.cog import validate_cog
from schemas import embedding

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_to_rgb_stretches_the_chosen_bands():
    assert quicklook.parse_bands("A01,a16,A09") == [1, 16, 9]
    with pytest.raises(ValueError, match="--bands"):
        quicklook.parse_bands("A01,A99,A02")
    sample = np.zeros((101, 64), np.float32)
    sample[:, 1] = np.linspace(0, 1, 101)
    colours = quicklook.fit_colours(sample, [1, 2, 3])
    np.testing.assert_allclose(colours["lo"], [0.02, 0, 0], atol=1e-6)
    np.testing.assert_allclose(colours["hi"], [0.98, 0, 0], atol=1e-6)
    v = np.zeros((1, 3, 64), np.float32)
    v[0, :, 1] = [0.0, 0.5, 1.0]
    v[0, 2] = np.nan
    rgb = quicklook.to_rgb(v, colours)
    assert rgb[0, 0].tolist() == [1, 128, 0]  # below lo -> 1; middle -> 128; nodata -> 0


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    outs = {}
    for copy, source in (("ours", world.ours), ("aef", world.aef)):
        for how in ("bands", "pca"):
            png = tmp_path_factory.mktemp(f"ql_{copy}_{how}") / "ql.png"
            argv = ["--embeddings", str(source), "--period", "2023", "--out", str(png),
                    "--sample-size", "3000", *(["--pca"] if how == "pca" else [])]  # fmt: skip
            assert quicklook.run(argv) == 0
            outs[copy, how] = png
    return outs


def _read(png):
    tif = png.with_suffix(".tif")
    ok, errors, warnings = validate_cog(tif)
    assert ok and not errors and not warnings
    with rasterio.open(tif) as src:
        return src.read(), src.tags()


def test_rgb_cog_values_and_aef_copy(world, runs):
    rgb, tags = _read(runs["ours", "bands"])
    assert rgb.shape == (3, SIDE, SIDE) and tags["colours"] == "A01,A16,A09"
    values = embedding.dequantize(world.codes(2023))
    lo = np.array([float(v) for v in tags["stretch_lo"].split(",")])
    hi = np.array([float(v) for v in tags["stretch_hi"].split(",")])
    bands = values[..., [1, 16, 9]].transpose(2, 0, 1)
    want = np.round(1 + 254 * np.clip((bands - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1))
    assert np.abs(rgb.astype(int) - want).max() <= 1
    # Stretched from the 2nd to 98th percentile: each channel spans (nearly) the whole range.
    assert all((rgb[c] <= 5).mean() > 0.01 and (rgb[c] >= 250).mean() > 0.01 for c in range(3))
    pca, ptags = _read(runs["ours", "pca"])
    assert ptags["colours"] == "pca" and (pca > 0).all()
    # PCA colours follow land cover: most of their variance lies between classes.
    lc = world.landcover[2023].ravel()
    x = pca.reshape(3, -1).T.astype(float)
    means = np.stack([x[lc == k].mean(0) for k in lc])
    assert ((means - x.mean(0)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum() > 0.5
    for how in ("bands", "pca"):
        np.testing.assert_array_equal(_read(runs["ours", how])[0], _read(runs["aef", how])[0])
        assert runs["ours", how].stat().st_size > 10_000


def test_every_output_carries_the_inputs_model_and_period(runs):
    for (copy, _), png in runs.items():
        assert_provenance(sorted(png.parent.iterdir()), "2023", aef=copy == "aef")
