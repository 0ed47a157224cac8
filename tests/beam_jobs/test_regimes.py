"""The shipped bundle on the input regimes users feed (issue 23): full-cadence scenes, monthly
composites (12 steps), dekads (36), a 3-month window, missing sources and heavy cloud, as
windows and as point tables.

Inputs: 24 x 24 px of the analysis world's simulated 2023 (Sentinel-2, Sentinel-1 and the DEM;
the world has no Landsat and no climate, so every run here already lacks those two sources).
Each regime must embed without error into finite unit vectors, and keep the region's
structure: the pairwise similarities of its pixels correlate with those of the full-cadence
embedding of the same pixels. Measured on 2026-12-06 with tiny-e554d1efcdb0 (window / points):
monthly 0.998 / 0.997, dekads 0.998 / 0.998, May-July 0.864 / 0.867, no Sentinel-1 0.998 /
0.996, no DEM 1.000 / 1.000, Sentinel-1 only 0.934 / 0.925, heavy cloud 0.998 / 0.997. The
floors are loose on purpose: they catch an embedding that breaks under a regime (constant,
NaN, scrambled), not a small change. The window crosses a class boundary (mean pairwise
cosine distance 0.11); on a one-class 16 x 16 px patch (0.009) the measure is noise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from analysis_world import X0, Y1

from beam_jobs import embed_points, inference
from beam_jobs.io import points
from beam_jobs.io.stac import StacCatalog, read_observations
from beam_jobs.runner import year_bounds_ms
from schemas import composite
from schemas.grid import GridWindow

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIDE = 24
YEAR = 2023


def _ms(y: int, m: int, d: int = 1) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def bundle(shipped_bundle):
    from model.bundle import load_bundle

    return load_bundle(str(shipped_bundle))


@pytest.fixture(scope="module")
def year_obs(world):
    window = GridWindow(32631, X0 + 320.0, Y1 - 320.0, SIDE, SIDE)
    catalog = StacCatalog.open(str(world.sim / "catalog.json"))
    return read_observations(catalog, window, *year_bounds_ms(YEAR))


def heavy_cloud(obs, keep_every: int = 5):
    """Every Sentinel-2 frame but one in `keep_every` fully clouded (invalid)."""
    s2 = obs["sentinel2_l2a"]
    valid = s2.valid.copy()
    valid[np.arange(s2.num_frames) % keep_every != 0] = False
    sources = {**obs.sources, "sentinel2_l2a": dataclasses.replace(s2, valid=valid)}
    return dataclasses.replace(obs, sources=sources)


# name -> (observations transform, period or None for the year, structure floor)
REGIMES = {
    "monthly": (lambda o: composite.composites(o, "monthly"), None, 0.9),
    "dekadal": (lambda o: composite.composites(o, "dekadal"), None, 0.9),
    "may_to_july": (lambda o: o, (_ms(YEAR, 5), _ms(YEAR, 8)), 0.7),
    "no_sentinel1": (lambda o: o.without(["sentinel1"]), None, 0.9),
    "no_dem": (lambda o: o.without(["cop_dem"]), None, 0.9),
    "sentinel1_only": (lambda o: o.without(["sentinel2_l2a", "cop_dem"]), None, 0.7),
    "heavy_cloud": (heavy_cloud, None, 0.9),
}


def _embed(bundle, obs, period, as_points: bool) -> np.ndarray:
    start, end = period or year_bounds_ms(YEAR)
    if as_points:
        obs = points.window_to_points(obs)
    return bundle.embed(obs.select_time(start, end), start, end, chip_size=SIDE, halo=8)


def _structure(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the pairwise cosine similarities of two embeddings of the same pixels."""
    iu = np.triu_indices(len(a), k=1)
    return float(np.corrcoef((a @ a.T)[iu], (b @ b.T)[iu])[0, 1])


@pytest.fixture(scope="module")
def full(bundle, year_obs):
    return {p: _embed(bundle, year_obs, None, p) for p in (False, True)}


def test_composites_have_the_regimes_step_counts(year_obs):
    s2 = year_obs["sentinel2_l2a"]
    monthly = composite.composites(year_obs, "monthly")["sentinel2_l2a"]
    dekadal = composite.composites(year_obs, "dekadal")["sentinel2_l2a"]
    assert monthly.num_frames == 12 and 30 <= dekadal.num_frames <= 36 < s2.num_frames
    assert composite.composites(year_obs, "dekadal")["cop_dem"].num_frames == 1


# Point tables for the three time regimes the acceptance names; windows for every regime.
CASES = [(r, False) for r in sorted(REGIMES)] + [
    (r, True) for r in ("monthly", "dekadal", "may_to_july")
]


@pytest.mark.parametrize(
    ("regime", "as_points"), CASES, ids=[f"{r}-{'points' if p else 'window'}" for r, p in CASES]
)
def test_regime_embeds_finite_unit_vectors_with_the_regions_structure(
    bundle, year_obs, full, regime, as_points
):
    transform, period, floor = REGIMES[regime]
    emb = _embed(bundle, transform(year_obs), period, as_points)
    assert emb.shape == (SIDE * SIDE, 64)
    assert np.isfinite(emb).all(), f"{regime}: pixels without an embedding"
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    ref = full[as_points]
    assert _structure(emb, ref) >= floor
    assert not np.allclose(emb, emb.mean(axis=0), atol=1e-3), f"{regime}: constant embedding"


def test_embed_points_job_on_a_dekadal_three_month_point_table(
    tmp_path, shipped_bundle, year_obs, bundle
):
    """The Beam job on a point table of dekadal composites over May-July: the vectors are the
    bundle's own for those points."""
    period = (_ms(YEAR, 5), _ms(YEAR, 8))
    obs = composite.composites(year_obs.select_time(*period), "dekadal")
    table = points.observations_to_point_table(obs, sample=40, seed=1)
    path = tmp_path / "dekads.parquet"
    pq.write_table(table, path)
    out = tmp_path / "emb.parquet"
    inference.clear_bundle_cache()
    embed_points.run(
        [
            "--observations",
            str(path),
            "--period",
            "2023-05-01/2023-08-01",
            "--model",
            str(shipped_bundle),
            "--batch-size",
            "64",
            "--out",
            str(out),
        ]
    )
    got = pq.read_table(out)
    assert got.num_rows == 40
    meta = json.loads(got.schema.metadata[b"earthembed"])
    assert meta["period"] == "20230501_20230801"
    emb = np.array(got.column("embedding").to_pylist(), np.float32)
    # The table carries no view geometry (sun and incidence angles), so the reference is the
    # bundle on the table as read back, not on the window's observations.
    want = bundle.embed(points.read_point_table(path), *period)
    np.testing.assert_allclose(emb, want, atol=1e-5)
