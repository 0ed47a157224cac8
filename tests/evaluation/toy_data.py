"""Hand-built observations and data sets shared by the evaluation tests."""

import datetime as dt

import numpy as np

from evaluation import baselines, datasets
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames


def ms(y, m, d):
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


def toy_window_obs(label_map: np.ndarray, seed: int = 0) -> Observations:
    """A window whose S2 reflectance separates the classes, plus a DEM; some frames cloudy."""
    rng = np.random.default_rng(seed)
    h, w = label_map.shape
    times = np.array([ms(2023, m, 15) for m in range(1, 13)])
    t = len(times)
    base = 0.05 + 0.1 * label_map[None, :, :, None].astype(np.float32)
    values = base + rng.normal(0, 0.01, (t, h, w, 10)).astype(np.float32)
    valid = rng.random((t, h, w)) > 0.2
    s2 = SourceFrames("sentinel2_l2a", values, valid, times)
    dem = np.stack([100 + rng.normal(0, 5, (h, w)), rng.uniform(0, 10, (h, w))], -1)
    cop = SourceFrames("cop_dem", dem[None].astype(np.float32), np.ones((1, h, w), bool), [0])
    window = GridWindow(32633, 465180.0, 5080260.0, w, h)
    return Observations({"sentinel2_l2a": s2, "cop_dem": cop}, window=window)


def toy_dataset(h=48, w=48, seed=0) -> datasets.LabelledPixels:
    """Three classes in 4 px diagonal stripes (each in every block), block split, sampled."""
    rows, cols = np.mgrid[:h, :w]
    label_map = (rows // 4 + cols // 4) % 3 + 1
    obs = toy_window_obs(label_map, seed)
    split = datasets.block_split((h, w), 8, seed)
    index, labels, is_test = datasets.sample_labelled_pixels(label_map, split, seed=seed)
    return datasets.LabelledPixels(
        "toy", obs, index, labels, is_test, {1: "a", 2: "b", 3: "c"}, info={}
    )


def index_embedder(obs: Observations) -> np.ndarray:
    """A toy embedder: the row-major pixel index and the S2 median composite, per pixel."""
    h, w = obs.spatial_shape
    return np.concatenate(
        [np.arange(h * w, dtype=np.float32)[:, None], baselines.median_composite(obs)], axis=1
    )
