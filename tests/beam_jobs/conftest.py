"""Fixtures of the beam_jobs tests: the labelled embedding world (analysis_world.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from analysis_world import SIDE, X0, Y1, YEARS, World, build_world, crop_label, mean_lai


@pytest.fixture(scope="session")
def world(tmp_path_factory, shipped_bundle) -> World:
    import geopandas as gpd

    reuse = os.environ.get("EARTHEMBED_ANALYSIS_WORLD")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("analysis_world")
    if not (root / "world.done").exists():
        build_world(root)
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
