"""Fixtures of the beam_jobs tests: the labelled embedding world (analysis_world.py), and
the small simulated region of the embed tests (test_embed, test_embed_reliability,
test_dask_engine, io/test_stac_search), simulated once per test run for all of them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from analysis_world import SIDE, X0, Y1, YEARS, World, build_world, crop_label, mean_lai

# Two 64 x 30 px granules side by side (EPSG:32631, x 616320..617580, y 5605140..5605440).
EMBED_SIM_BBOX = "4.643759,50.586682,4.660491,50.588896"


@pytest.fixture(scope="session")
def embed_sim_catalog(shared_simulation) -> Path:
    """Sentinel-2 and the DEM of 2023 over EMBED_SIM_BBOX (seed 0, cloud cover 0.3, 64 px
    tiles): catalog.json. Shared: tests copy it before altering it."""
    args = ["--bbox", EMBED_SIM_BBOX, "--years", "2023", "--seed", "0", "--cloud-cover", "0.3"]
    args += ["--tile-size", "64", "--sources", "sentinel2_l2a,cop_dem"]
    return shared_simulation(*args) / "catalog.json"


@pytest.fixture(scope="session")
def world(shared_artifact, shipped_bundle) -> World:
    """Built once per test run (both xdist workers share it; six test files use it)."""
    import geopandas as gpd

    reuse = os.environ.get("EARTHEMBED_ANALYSIS_WORLD")
    if reuse:
        root = Path(reuse)
        if not (root / "world.done").exists():
            build_world(root)
    else:
        root = shared_artifact("analysis-world", build_world)
    sim = root / "sim"
    landcover = {y: crop_label(sim / "labels" / f"landcover_{y}.tif") for y in YEARS}
    lai = mean_lai(sim, 2023)
    pts = gpd.read_parquet(sim / "labels" / "points_2023.parquet")
    cols = np.floor((pts["x"].to_numpy() - X0) / 10).astype(int)
    rows = np.floor((Y1 - pts["y"].to_numpy()) / 10).astype(int)
    inside = (rows >= 0) & (rows < SIDE) & (cols >= 0) & (cols < SIDE)
    pts = pts[inside].reset_index(drop=True)
    pts["row"], pts["col"] = rows[inside], cols[inside]
    pts["lai"] = lai[pts["row"], pts["col"]]
    return World(
        root=root,
        ours=root / "ours",
        aef=root / "aef",
        sim=sim,
        landcover=landcover,
        lai=lai,
        points=pts,
        transform=(10.0, 0.0, X0, 0.0, -10.0, Y1),
    )


@pytest.fixture(scope="session")
def designed(world) -> np.ndarray:
    """evaluation's `designed` baseline features of every pixel of the embedded grid, 2023
    ((SIDE * SIDE, F), row-major), from the simulated observations."""
    from beam_jobs.io.stac import StacCatalog, read_observations
    from beam_jobs.runner import year_bounds_ms
    from evaluation.baselines import designed_features
    from schemas.grid import GridWindow

    window = GridWindow(32631, X0, Y1, SIDE, SIDE)
    catalog = StacCatalog.open(str(world.sim / "catalog.json"))
    obs = read_observations(catalog, window, *year_bounds_ms(2023))
    return designed_features(obs)
