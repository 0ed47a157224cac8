"""change on the analysis world (conftest.py): the dot product separates the simulator's
2023 -> 2024 land-cover changes (ROC AUC >= 0.9), Otsu's threshold maps them, polygons are
written, and AEF's copy gives the same answers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from analysis_world import assert_provenance, mosaic_maps
from sklearn.metrics import roc_auc_score

from beam_jobs import change
from beam_jobs.io import files
from schemas import embedding

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_otsu_threshold_splits_two_modes():
    rng = np.random.default_rng(0)
    dot = np.concatenate([rng.normal(0.95, 0.02, 5000), rng.normal(0.4, 0.1, 1000)])
    t = change.otsu_threshold(change.histogram(dot))
    assert 0.55 < t < 0.85, t
    # On [0.2, 0.6] (two equal halves, a gap between) it lands in the gap.
    t2 = change.otsu_threshold(change.histogram(np.array([0.2] * 10 + [0.6] * 10)))
    assert 0.2 < t2 <= 0.6
    mask = change.change_mask(np.array([[0.1, 0.9, np.nan]]), 0.5)
    assert mask.tolist() == [[1, 0, change.MASK_NODATA]]
    with pytest.raises(ValueError, match="--periods"):
        change.parse_periods("2023")


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    outs = {}
    for copy, source in (("ours", world.ours), ("aef", world.aef)):
        out = tmp_path_factory.mktemp(f"chg_{copy}")
        argv = ["--embeddings", str(source), "--periods", "2023,2024", "--out", str(out),
                "--min-area-ha", "0.5"]  # fmt: skip
        assert change.run(argv) == 0
        outs[copy] = out
    return outs


def test_dot_product_detects_the_simulated_changes(world, runs):
    out = runs["ours"]
    dot = mosaic_maps(out, "dot")
    a = embedding.dequantize(world.codes(2023))
    b = embedding.dequantize(world.codes(2024))
    np.testing.assert_allclose(dot, (a * b).sum(-1), atol=1e-5)
    changed = world.landcover[2023] != world.landcover[2024]
    valid = np.isfinite(dot)
    assert changed[valid].mean() > 0.05  # the world has changes to find
    auc = roc_auc_score(changed[valid], -dot[valid])
    assert auc >= 0.9, auc
    # Otsu's threshold splits off the abrupt changes (water <-> bare soil, cropland -> built
    # up: dot ~0.5) from the subtle crop rotations (median dot 0.93 against 0.99 unchanged):
    # what it flags is right, but it misses most rotations (measured: precision 0.90,
    # recall 0.26 at threshold 0.80, Earth Engine's anchor). Floors: precision 0.8, recall 0.2.
    report = files.read_json(out / "threshold.json")
    assert report["rule"] == "otsu" and 0.5 < report["threshold"] < 1.0
    mask = mosaic_maps(out, "change")
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask == 1, dot < report["threshold"])
    recall = (mask[changed] == 1).mean()
    precision = changed[mask == 1].mean()
    assert recall > 0.2 and precision > 0.8, (recall, precision)
    # Polygons: every one at least 0.5 ha, together the changed pixels of such patches.
    polys = gpd.read_parquet(out / "changes.parquet")
    assert len(polys) >= 1 and (polys["area_ha"] >= 0.5).all()
    assert polys.crs.to_epsg() == 4326
    utm = polys.to_crs(32631)
    np.testing.assert_allclose(utm.area, polys["area_m2"], rtol=1e-3)
    assert polys["area_m2"].sum() <= (mask == 1).sum() * 100 + 1e-6
    assert (polys["mean_dot"] < report["threshold"]).all()


def test_aef_copy_gives_the_same_answers(runs):
    for suffix in ("dot", "change"):
        np.testing.assert_array_equal(
            mosaic_maps(runs["ours"], suffix), mosaic_maps(runs["aef"], suffix)
        )
    a = gpd.read_parquet(runs["ours"] / "changes.parquet")
    b = gpd.read_parquet(runs["aef"] / "changes.parquet")
    np.testing.assert_allclose(a["area_m2"], b["area_m2"])
    assert (runs["ours"] / "change.png").stat().st_size > 10_000


def test_every_output_carries_the_inputs_model_and_period(runs):
    for copy in ("ours", "aef"):
        assert_provenance(sorted(runs[copy].iterdir()), "2023,2024", aef=copy == "aef")
