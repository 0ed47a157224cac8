"""Few-shot quality benchmark: frozen features, kNN and logistic probes, designed baselines.

Runbook (each writes DIR/results.json, DIR/results.md and DIR/results.png):

    earthembed evaluate --dataset sim:101:tropical --embedder baselines --out /tmp/eval_sim
    earthembed evaluate --dataset eolearn --out /tmp/eval_eo
    earthembed evaluate --dataset points:obs.parquet:labels.parquet --out /tmp/eval_pts
    earthembed evaluate --dataset eolearn --embedder path/to/bundle --out /tmp/eval_model
    earthembed evaluate --dataset eolearn --embedder mypkg.mymodule:embed --out /tmp/eval_toy

Data sets (`--dataset`):
  * `sim:SEED:BIOME`: a held-out simulated region (`earthembed simulate`, one year, a few km;
    cached under `--cache-dir`), its land-cover map as labels, its whole window read once.
  * `eolearn`: the real Slovenia patch in shared/realdata (101 x 100 px, land cover from the
    reference polygons: forest, grassland, shrubland, artificial surface have >= 50 px). The
    embedder sees its five reference S2 scenes (TOA, July-September 2015) and the DEM; the
    `designed` baseline also gets the NDVI series (68 dates, 2015-07 .. 2017-12, cloud-masked)
    as a pseudo-band, its monthly medians pooling the same month across the years.
  * `points:OBS.parquet:LABELS.parquet`: a point observation table (see ARCHITECTURE.md) plus
    a `point_id,label[,is_test]` table; without `is_test`, points are split by hashed square
    UTM cells of `--block` x 10 m (no buffer: points further apart than a cell are assumed
    independent).

The embedder contract (`--embedder`): a callable `embed(observations) -> array` where
`observations` is a `schemas.observations.Observations` over a grid window (H x W pixels) or
a point set (N points, H = N, W = 1), exactly as the readers return it (registry units, NaN
and valid masks as read, all sources the data set has). It returns a float array of shape
(H * W, D): one row per pixel in row-major order (row 0 left to right, then row 1, ...), or
for a point set N rows in point order. Rows may be NaN where a pixel cannot be embedded.
`--embedder` is `baselines` (no embedder), a model bundle path (`model.load_bundle(path)`,
whose `.embed` follows the contract) or `module:function` naming any such callable.

Protocol (after AlphaEarth Foundations' evaluation):
  * Labelled pixels come from classes with at least `min_class_pixels` (50) labelled pixels.
    Rasters are split into train and test by square blocks (`--block` px) assigned by a
    seeded hash of the block position, and train pixels within `buffer` (1) px of a test
    pixel are dropped, so no pixel has an 8-neighbour on the other side. Random pixel splits
    are never used: neighbouring pixels are nearly copies of each other.
  * The train pool keeps at most `max_per_class` (1000) pixels per class and the test set at
    most `max_test` (4000) pixels split evenly over classes (random, seeded, fixed for the
    whole run), which bounds the run time on two cores; balanced accuracy does not depend on
    how many test pixels each class has, only on how well each is estimated.
  * A budget b draws min(b, n_c) training pixels per class c from the train pool (class-
    balanced), `repeats` times with different seeds; the same draws serve every feature set,
    so comparisons are paired. `max` takes the whole train pool: it is the same every repeat,
    so it runs once and its std is 0. The pool keeps the classes' natural imbalance (up to the
    cap), which the logistic probe offsets with balanced class weights and kNN does not.
  * Probes on frozen features: kNN with k=1 and k=min(3, n_train) (Euclidean, uniform votes,
    a tie going to the tied class with the nearest neighbour, so at 1 per class k=3 acts as
    k=1 instead of picking the smallest label) and multinomial logistic regression (lbfgs, C=1, balanced class weights). Features are
    standardized with the training draw's mean and std (std 0 -> 1); NaN features are then
    imputed with the training mean, i.e. 0. Score: balanced accuracy on the test pixels.
  * A feature set's score at a budget is its best probe's mean. `best_baseline` is the best
    baseline at each budget; `error_reduction` = 1 - (1 - acc_embedding) / (1 - acc_best).

Baselines, computed from the same pixels' raw observations:
  * `median_composite`: the per-band median of the valid Sentinel-2 frames (10 features).
  * `designed`: for every band of every time-varying source, the 10th/50th/90th percentiles
    and the 12 calendar-monthly medians of its valid values; static sources (DEM) as they are.
  * `pca64`: `designed` standardized over all data-set pixels (no labels), PCA to 64 dims.
  * `xy`: longitude and latitude only, a control for how much location alone explains.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from schemas import sensors
from schemas.grid import GridWindow, lonlat_to_utm, utm_epsg, utm_to_lonlat
from schemas.observations import Observations, SourceFrames

log = logging.getLogger(__name__)

PROBES: tuple[str, ...] = ("knn1", "knn3", "logreg")
BASELINES: tuple[str, ...] = ("median_composite", "designed", "pca64", "xy")
PERCENTILES: tuple[float, ...] = (10.0, 50.0, 90.0)
MAX_BUDGET = "max"
MIN_CLASS_PIXELS = 50
MAX_PER_CLASS = 1000
MAX_TEST = 4000
# Fewer than this many train or test pixels of a class and its balanced accuracy is noise.
MIN_SPLIT_PIXELS = 10
PCA_DIMS = 64
DEFAULT_BLOCK = {"sim": 16, "eolearn": 10, "points": 16}
SIM_SIZE_KM = 2.56
SIM_YEAR = 2023
REALDATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# A split label per pixel: which side of the train/test split it is on.
SPLIT_TRAIN = 0
SPLIT_TEST = 1
SPLIT_BUFFER = -1

Embedder = Callable[[Observations], np.ndarray]


# ------------------------------------------------------------------------------- data sets


@dataclasses.dataclass
class PixelSeries:
    """A per-pixel time series outside the sensor registry (e.g. eo-learn's NDVI)."""

    values: np.ndarray  # (T, N) float32, NaN = missing
    times_ms: np.ndarray  # (T,) int64


@dataclasses.dataclass
class LabelledPixels:
    """A benchmark data set: observations and the labelled pixels to probe among them.

    `observations` is what an embedder sees (a whole window, so a model gets its spatial
    context, or a point set); `pixel_index` picks the labelled pixels out of its row-major
    pixels. `extra_series` holds pseudo-bands for the `designed` baseline, one column per
    labelled pixel.
    """

    name: str
    observations: Observations
    pixel_index: np.ndarray  # (N,) int64 into the observations' H * W pixels
    labels: np.ndarray  # (N,) int64 class ids
    is_test: np.ndarray  # (N,) bool
    class_names: dict[int, str]
    extra_series: dict[str, PixelSeries] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pixel_index = np.asarray(self.pixel_index, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.is_test = np.asarray(self.is_test, dtype=bool)
        n = len(self.pixel_index)
        if self.labels.shape != (n,) or self.is_test.shape != (n,):
            raise ValueError(
                f"labels {self.labels.shape} and is_test {self.is_test.shape} must be ({n},)"
            )
        for name, s in self.extra_series.items():
            if s.values.ndim != 2 or s.values.shape[1] != n:
                raise ValueError(f"extra series {name!r}: values {s.values.shape} != (T, {n})")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-mixed uint64 hash of uint64 inputs."""
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _cell_is_test(cell_row: np.ndarray, cell_col: np.ndarray, seed: int, test_fraction: float):
    """Seeded hash of a cell position -> test side? Depends only on (seed, row, col)."""
    with np.errstate(over="ignore"):
        r = np.asarray(cell_row, dtype=np.int64).astype(np.uint64)
        c = np.asarray(cell_col, dtype=np.int64).astype(np.uint64)
        s = _mix64(np.asarray([seed], dtype=np.int64).astype(np.uint64))
        h = _mix64(_mix64(s ^ r) ^ (c * np.uint64(0x9E3779B97F4A7C15)))
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < test_fraction


def block_split(
    shape: tuple[int, int],
    block: int,
    seed: int,
    buffer: int = 1,
    test_fraction: float = 0.5,
) -> np.ndarray:
    """Split a raster into train and test by square blocks, with a buffer between them.

    Block (i, j) covers rows [i*block, (i+1)*block) and columns [j*block, (j+1)*block); it
    goes to the test side when a seeded hash of (seed, i, j) falls below `test_fraction`, so a
    block's side depends only on its position, not on the raster's size. Train pixels within
    `buffer` px (Chebyshev distance) of a test pixel become buffer: with buffer >= 1 no pixel
    has an 8-neighbour on the other side.

    Args:
        shape: (H, W) of the raster.
        block: block side in pixels (>= 1).
        seed: split seed.
        buffer: width in pixels of the gap between train and test (>= 0).
        test_fraction: expected share of blocks on the test side.

    Returns:
        (H, W) int8 array of SPLIT_TRAIN (0), SPLIT_TEST (1) or SPLIT_BUFFER (-1).
    """
    h, w = shape
    if block < 1 or buffer < 0:
        raise ValueError(f"block must be >= 1 and buffer >= 0; got block={block} buffer={buffer}")
    rows = np.arange(h) // block
    cols = np.arange(w) // block
    test = _cell_is_test(rows[:, None], cols[None, :], seed, test_fraction)
    out = np.where(test, SPLIT_TEST, SPLIT_TRAIN).astype(np.int8)
    if buffer > 0 and test.any():
        from scipy import ndimage

        near_test = ndimage.binary_dilation(
            test, structure=np.ones((3, 3), bool), iterations=buffer
        )
        out[near_test & ~test] = SPLIT_BUFFER
    return out


def _cap_per_class(idx: np.ndarray, labels: np.ndarray, cap: int, rng) -> np.ndarray:
    """At most `cap` random members of each class among `idx` (sorted output)."""
    keep = []
    for c in np.unique(labels[idx]):
        members = idx[labels[idx] == c]
        if len(members) > cap:
            members = rng.choice(members, cap, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)) if keep else idx[:0]


def sample_labelled_pixels(
    label_map: np.ndarray,
    split: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    min_class_pixels: int = MIN_CLASS_PIXELS,
    max_per_class: int = MAX_PER_CLASS,
    max_test: int = MAX_TEST,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled pixels of a raster, stratified by class, on both sides of a block split.

    Classes with fewer than `min_class_pixels` labelled pixels, or fewer than
    MIN_SPLIT_PIXELS on either side of the split, are left out. The train pool keeps at most
    `max_per_class` pixels per class; the test set at most `max_test` pixels in all, evenly
    per class.

    Args:
        label_map: (H, W) integer class ids.
        split: (H, W) output of `block_split`.
        classes: ids that are classes (others, such as no-data, are ignored); default all.
        seed: sampling seed.
        min_class_pixels: smallest class kept.
        max_per_class: train pool cap per class.
        max_test: test set cap.

    Returns:
        (pixel_index, labels, is_test): flat row-major indices, class ids, test flags.
    """
    flat = np.asarray(label_map).reshape(-1).astype(np.int64)
    side = np.asarray(split).reshape(-1)
    if classes is None:
        classes = np.unique(flat)
    ids, counts = np.unique(flat, return_counts=True)
    count = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    kept = []
    for c in sorted(int(c) for c in classes):
        if count.get(c, 0) < min_class_pixels:
            continue
        n_train = int(np.sum((flat == c) & (side == SPLIT_TRAIN)))
        n_test = int(np.sum((flat == c) & (side == SPLIT_TEST)))
        if min(n_train, n_test) < MIN_SPLIT_PIXELS:
            log.warning(
                "class %d dropped: %d train / %d test px after the split", c, n_train, n_test
            )
            continue
        kept.append(c)
    if len(kept) < 2:
        raise ValueError(f"fewer than two classes usable for probing (kept {kept})")
    rng = np.random.default_rng([seed, 7])
    in_kept = np.isin(flat, kept)
    train = _cap_per_class(
        np.flatnonzero(in_kept & (side == SPLIT_TRAIN)), flat, max_per_class, rng
    )
    per_class_test = max(MIN_SPLIT_PIXELS, max_test // len(kept))
    test = _cap_per_class(np.flatnonzero(in_kept & (side == SPLIT_TEST)), flat, per_class_test, rng)
    index = np.concatenate([train, test])
    is_test = np.concatenate([np.zeros(len(train), bool), np.ones(len(test), bool)])
    return index, flat[index], is_test


def _sim_dataset(
    seed: int,
    biome: str,
    *,
    cache_dir: Path,
    block: int,
    split_seed: int,
    size_km: float = SIM_SIZE_KM,
    year: int = SIM_YEAR,
    **sample_kw,
) -> LabelledPixels:
    """Simulate a region (cached), read its whole window once, sample labelled pixels."""
    import rasterio

    import beam_jobs.simulate as simulate
    from beam_jobs.io.stac import StacCatalog, read_observations
    from beam_jobs.runner import year_bounds_ms

    # No dot in the name: pystac takes a dotted last path part for a file name when it
    # normalizes hrefs, and the simulator's catalog would land one directory up.
    sim_dir = cache_dir / f"sim_{seed}_{biome}_{round(size_km * 1000)}m_{year}"
    label_path = sim_dir / "labels" / f"landcover_{year}.tif"
    if not (sim_dir / "catalog.json").exists() or not label_path.exists():
        log.info("simulating %s (seed %d, %s, %g km)", sim_dir, seed, biome, size_km)
        simulate.run(
            [
                "--out",
                str(sim_dir),
                "--region",
                "demo",
                "--size-km",
                f"{size_km:g}",
                "--years",
                str(year),
                "--seed",
                str(seed),
                "--biome",
                biome,
            ]
        )
    with rasterio.open(label_path) as src:
        label_map = src.read(1)
        nodata = src.nodata
        t = src.transform
        window = GridWindow(src.crs.to_epsg(), t.c, t.f, src.width, src.height)
    class_names = _sim_class_names(sim_dir, year)
    classes = sorted(class_names) if class_names else None
    if classes is None:
        classes = [int(c) for c in np.unique(label_map) if nodata is None or c != nodata]
        class_names = {c: f"class_{c}" for c in classes}
    split = block_split(window.shape, block, split_seed)
    index, labels, is_test = sample_labelled_pixels(
        label_map, split, classes=classes, seed=split_seed, **sample_kw
    )
    start_ms, end_ms = year_bounds_ms(year)
    catalog = StacCatalog.open(str(sim_dir / "catalog.json"))
    obs = read_observations(catalog, window, start_ms, end_ms)
    if obs.errors:
        log.warning(
            "%d reads of %s failed and were invalidated: %s",
            len(obs.errors),
            sim_dir,
            obs.errors[:3],
        )
    return LabelledPixels(
        name=f"sim:{seed}:{biome}",
        observations=obs,
        pixel_index=index,
        labels=labels,
        is_test=is_test,
        class_names={c: class_names[c] for c in np.unique(labels).tolist()},
        info={"window": window.to_dict(), "year": year, "sim_dir": str(sim_dir), "block": block},
    )


def _sim_class_names(sim_dir: Path, year: int) -> dict[int, str]:
    """{class_id: class_name} from the simulator's labelled points, or {} if absent."""
    path = sim_dir / "labels" / f"points_{year}.parquet"
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["class_id", "class_name"]).to_pydict()
    return {int(i): str(n) for i, n in zip(table["class_id"], table["class_name"], strict=True)}


def _eolearn_dataset(data_dir: Path, *, block: int, split_seed: int, **sample_kw):
    """The real Slovenia patch: LULC labels, NDVI pseudo-band, S2 reference scenes, DEM."""
    from beam_jobs.io.realdata import read_eolearn

    sample = read_eolearn(data_dir)
    lulc = np.asarray(sample.lulc)
    names = {int(c): str(n) for c, n in sample.lulc_classes.items()}
    classes = [c for c in names if c != 0]  # 0 is "no data"
    split = block_split(lulc.shape, block, split_seed)
    index, labels, is_test = sample_labelled_pixels(
        lulc, split, classes=classes, seed=split_seed, **sample_kw
    )
    ndvi = np.where(np.asarray(sample.ndvi_valid), np.asarray(sample.ndvi), np.nan)
    ndvi = ndvi.reshape(ndvi.shape[0], -1)[:, index].astype(np.float32)
    return LabelledPixels(
        name="eolearn",
        observations=sample.observations,
        pixel_index=index,
        labels=labels,
        is_test=is_test,
        class_names={int(c): str(names[c]) for c in np.unique(labels).tolist()},
        extra_series={"ndvi": PixelSeries(ndvi, np.asarray(sample.ndvi_times_ms, np.int64))},
        info={"data_dir": str(data_dir), "block": block},
    )


def point_cell_split(
    lon: np.ndarray, lat: np.ndarray, cell_m: float, seed: int, test_fraction: float = 0.5
) -> np.ndarray:
    """Points -> test flags by square UTM cells of `cell_m` metres (hashed like block_split)."""
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    epsg = utm_epsg(float(np.median(lon)), float(np.median(lat)))
    x, y = lonlat_to_utm(lon, lat, epsg)
    col = np.floor(np.asarray(x) / cell_m).astype(np.int64)
    row = np.floor(-np.asarray(y) / cell_m).astype(np.int64)
    return _cell_is_test(row, col, seed, test_fraction)


def _points_dataset(
    obs_path: str,
    labels_path: str,
    *,
    block: int,
    split_seed: int,
    min_class_pixels: int = MIN_CLASS_PIXELS,
    max_per_class: int = MAX_PER_CLASS,
    max_test: int = MAX_TEST,
) -> LabelledPixels:
    """A point observation table plus a point_id,label[,is_test] table."""
    import pyarrow.parquet as pq

    from beam_jobs.io.points import read_point_table

    obs = read_point_table(obs_path)
    table = pq.read_table(labels_path).to_pydict()
    missing = {"point_id", "label"} - set(table)
    if missing:
        raise ValueError(f"{labels_path}: missing columns {sorted(missing)}")
    pos = {str(p): i for i, p in enumerate(obs.point_ids)}
    rows = [
        (pos.get(str(p)), lab, i)
        for i, (p, lab) in enumerate(zip(table["point_id"], table["label"], strict=True))
    ]
    unknown = sum(1 for r in rows if r[0] is None)
    if unknown:
        log.warning("%d labelled points are not in %s; ignored", unknown, obs_path)
    rows = [r for r in rows if r[0] is not None and r[1] is not None]
    index = np.asarray([r[0] for r in rows], np.int64)
    raw = [r[1] for r in rows]
    if all(isinstance(v, (int, np.integer)) for v in raw):
        labels = np.asarray(raw, np.int64)
        class_names = {int(c): str(c) for c in np.unique(labels)}
    else:
        names = sorted({str(v) for v in raw})
        code = {n: i for i, n in enumerate(names)}
        labels = np.asarray([code[str(v)] for v in raw], np.int64)
        class_names = {i: n for n, i in code.items()}
    if "is_test" in table:
        is_test = np.asarray([bool(table["is_test"][r[2]]) for r in rows])
        split_note = "is_test column"
    else:
        is_test = point_cell_split(obs.lon[index], obs.lat[index], block * 10.0, split_seed)
        split_note = f"hashed {block * 10} m UTM cells"
    # Same class filter and caps as for rasters.
    split = np.where(is_test, SPLIT_TEST, SPLIT_TRAIN).astype(np.int8)
    sel, lab, test = sample_labelled_pixels(
        labels[None, :],
        split[None, :],
        seed=split_seed,
        min_class_pixels=min_class_pixels,
        max_per_class=max_per_class,
        max_test=max_test,
    )
    return LabelledPixels(
        name=f"points:{obs_path}:{labels_path}",
        observations=obs,
        pixel_index=index[sel],
        labels=lab,
        is_test=test,
        class_names={c: class_names[c] for c in np.unique(lab).tolist()},
        info={"split": split_note},
    )


def load_dataset(
    spec: str,
    *,
    seed: int = 0,
    block: int | None = None,
    cache_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    min_class_pixels: int = MIN_CLASS_PIXELS,
    max_per_class: int = MAX_PER_CLASS,
    max_test: int = MAX_TEST,
    sim_size_km: float = SIM_SIZE_KM,
    sim_year: int = SIM_YEAR,
) -> LabelledPixels:
    """`sim:SEED:BIOME`, `eolearn` or `points:OBS.parquet:LABELS.parquet` -> LabelledPixels.

    Args:
        spec: the `--dataset` value.
        seed: split and sampling seed.
        block: block (or point cell) side in pixels; default per data set (DEFAULT_BLOCK).
        cache_dir: where simulated regions are kept between runs (sim only).
        data_dir: the eo-learn patch directory (eolearn only; default shared/realdata).
        min_class_pixels: smallest class kept.
        max_per_class: train pool cap per class.
        max_test: test set cap.
        sim_size_km: side of the simulated region (sim only).
        sim_year: the simulated year (sim only).

    Returns:
        The labelled pixels with their observations.
    """
    kind = spec.split(":", 1)[0]
    if kind not in DEFAULT_BLOCK:
        raise ValueError(
            f"--dataset must be sim:SEED:BIOME, eolearn or points:OBS.parquet:LABELS.parquet; "
            f"got {spec!r}"
        )
    block = block or DEFAULT_BLOCK[kind]
    kw = dict(min_class_pixels=min_class_pixels, max_per_class=max_per_class, max_test=max_test)
    if kind == "sim":
        m = re.fullmatch(r"sim:(\d+):(\w+)", spec)
        if not m:
            raise ValueError(
                f"--dataset sim must be sim:SEED:BIOME, e.g. sim:101:tropical; got {spec!r}"
            )
        cache = Path(cache_dir) if cache_dir else Path("out") / "eval_cache"
        return _sim_dataset(
            int(m.group(1)),
            m.group(2),
            cache_dir=cache,
            block=block,
            split_seed=seed,
            size_km=sim_size_km,
            year=sim_year,
            **kw,
        )
    if kind == "eolearn":
        if spec != "eolearn":
            raise ValueError(f"--dataset eolearn takes no arguments; got {spec!r}")
        d = Path(data_dir) if data_dir else REALDATA_DIR / "eolearn_slovenia"
        return _eolearn_dataset(d, block=block, split_seed=seed, **kw)
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(
            f"--dataset points must be points:OBS.parquet:LABELS.parquet; got {spec!r}"
        )
    return _points_dataset(parts[1], parts[2], block=block, split_seed=seed, **kw)


# ------------------------------------------------------------------------------- features


def select_pixels(obs: Observations, index: np.ndarray) -> Observations:
    """The pixels `index` (row-major into H * W) of a window or point set, as a point set."""
    index = np.asarray(index, dtype=np.int64)
    _, w = obs.spatial_shape
    rows, cols = np.divmod(index, w)
    sources = {
        sid: SourceFrames(
            sid,
            sf.values[:, rows, cols][:, :, None, :],
            sf.valid[:, rows, cols][:, :, None],
            sf.times_ms,
            dict(sf.geometry),
            sf.band_names,
        )
        for sid, sf in obs.sources.items()
    }
    lon, lat = pixel_lonlat(obs, index)
    if obs.point_ids is not None:
        ids = np.asarray(obs.point_ids)[index]
    else:
        ids = np.asarray([f"px{i}" for i in index])
    return Observations(sources, point_ids=ids, lon=lon, lat=lat, errors=list(obs.errors))


def pixel_lonlat(obs: Observations, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat of pixels `index` of a window (pixel centres) or a point set."""
    index = np.asarray(index, dtype=np.int64)
    if obs.window is None:
        return np.asarray(obs.lon, np.float64)[index], np.asarray(obs.lat, np.float64)[index]
    x, y = obs.window.pixel_centers()
    lon, lat = utm_to_lonlat(x.reshape(-1)[index], y.reshape(-1)[index], obs.window.epsg)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def _flat_series(sf: SourceFrames) -> np.ndarray:
    """(T, H, W, C) masked values -> (T, H * W, C)."""
    v = sf.masked_values()
    return v.reshape(v.shape[0], -1, v.shape[-1])


def _months(times_ms: np.ndarray) -> np.ndarray:
    """Calendar month (1-12, UTC) of each timestamp."""
    m = np.asarray(times_ms, np.int64).astype("datetime64[ms]").astype("datetime64[M]")
    return m.astype(np.int64) % 12 + 1


def series_features(values: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
    """One band's time series -> percentiles and calendar-monthly medians, per pixel.

    Args:
        values: (T, N) values, NaN where missing.
        times_ms: (T,) acquisition times.

    Returns:
        (N, 15) float32: the 10th, 50th, 90th percentiles (linear interpolation) over the
        valid values, then the medians of January .. December (NaN for a month with none).
    """
    values = np.asarray(values, np.float32)
    n = values.shape[1]
    out = np.full((n, len(PERCENTILES) + 12), np.nan, np.float32)
    if values.shape[0] == 0:
        return out
    months = _months(times_ms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels give NaN on purpose
        out[:, : len(PERCENTILES)] = np.nanpercentile(values, PERCENTILES, axis=0).T
        for m in range(1, 13):
            sel = months == m
            if sel.any():
                out[:, len(PERCENTILES) + m - 1] = np.nanmedian(values[sel], axis=0)
    return out


def _ordered_sources(obs: Observations) -> list[str]:
    """Sources in registry order, so feature columns are the same for every data set."""
    return [s for s in sensors.SOURCE_IDS if s in obs.sources]


def designed_feature_names(
    obs: Observations, extra_series: Mapping[str, PixelSeries] | None = None
) -> list[str]:
    """Column names of `designed_features(obs, extra_series)`."""
    stats = [f"p{int(p)}" for p in PERCENTILES] + [f"m{m:02d}" for m in range(1, 13)]
    names = []
    for sid in _ordered_sources(obs):
        sf = obs.sources[sid]
        for band in sf.band_names:
            if sensors.get_sensor(sid).is_static:
                names.append(f"{sid}.{band}")
            else:
                names.extend(f"{sid}.{band}.{s}" for s in stats)
    for name in extra_series or {}:
        names.extend(f"{name}.{s}" for s in stats)
    return names


def designed_features(
    obs: Observations, extra_series: Mapping[str, PixelSeries] | None = None
) -> np.ndarray:
    """Hand-designed per-pixel features from raw observations.

    For every band of every time-varying source (registry order, then the source's bands):
    the 10th/50th/90th percentiles and the 12 calendar-monthly medians of its valid values
    (`series_features`); static sources (DEM elevation and slope) contribute their value.
    Then the same 15 statistics of each extra series. Names: `designed_feature_names`.

    Args:
        obs: a window or point set.
        extra_series: pseudo-bands per pixel (N = H * W columns), e.g. NDVI.

    Returns:
        (H * W, F) float32, row-major pixels, NaN where a statistic has no valid value.
    """
    h, w = obs.spatial_shape
    cols = []
    for sid in _ordered_sources(obs):
        sf = obs.sources[sid]
        flat = _flat_series(sf)
        if sensors.get_sensor(sid).is_static:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                cols.append(np.nanmean(flat, axis=0))  # one frame: its value, NaN if invalid
            continue
        for c in range(flat.shape[-1]):
            cols.append(series_features(flat[..., c], sf.times_ms))
    for name, s in (extra_series or {}).items():
        if s.values.shape[1] != h * w:
            raise ValueError(f"extra series {name!r} has {s.values.shape[1]} px, not {h * w}")
        cols.append(series_features(s.values, s.times_ms))
    if not cols:
        return np.zeros((h * w, 0), np.float32)
    return np.concatenate(cols, axis=1).astype(np.float32)


def median_composite(obs: Observations, source: str = "sentinel2_l2a") -> np.ndarray:
    """Per-band median of the valid frames of one source (default Sentinel-2), per pixel.

    Returns:
        (H * W, C) float32 in registry band order (NaN where a pixel has no valid frame);
        (H * W, 0) when the observations lack the source.
    """
    h, w = obs.spatial_shape
    if source not in obs.sources:
        return np.zeros((h * w, 0), np.float32)
    flat = _flat_series(obs.sources[source].with_registry_bands())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(flat, axis=0).astype(np.float32)


def pca_features(features: np.ndarray, n_components: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """Standardize over all rows (NaN -> 0 after), then PCA to at most `n_components` dims."""
    from sklearn.decomposition import PCA

    x = _standardize(features, features)
    k = min(n_components, x.shape[0], x.shape[1])
    if k == 0:
        return np.zeros((x.shape[0], 0), np.float32)
    return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


def baseline_features(
    obs: Observations,
    index: np.ndarray,
    extra_series: Mapping[str, PixelSeries] | None = None,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """All baselines for pixels `index` of `obs` (extra series: one column per index).

    Returns:
        {name: (len(index), F)} for `median_composite`, `designed`, `pca64`, `xy`.
    """
    pts = select_pixels(obs, index)
    designed = designed_features(pts, extra_series)
    lon, lat = pixel_lonlat(obs, index)
    return {
        "median_composite": median_composite(pts),
        "designed": designed,
        "pca64": pca_features(designed, PCA_DIMS, seed),
        "xy": np.stack([lon, lat], axis=1).astype(np.float32),
    }


# ------------------------------------------------------------------------------- probes


def balanced_draw(labels: np.ndarray, budget: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of min(budget, n_c) random members of each class c (budget None: all).

    Args:
        labels: (N,) class ids.
        budget: samples per class, or None for every member.
        rng: the draw's random generator.

    Returns:
        Sorted indices into `labels`.
    """
    labels = np.asarray(labels)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if budget is not None and len(members) > budget:
            members = rng.choice(members, budget, replace=False)
        out.append(members)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _standardize(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Standardize x with train's mean/std (std 0 -> 1), then NaN -> 0 (the train mean)."""
    train = np.asarray(train, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    z = (np.asarray(x, np.float64) - mean) / std
    z[~np.isfinite(z)] = 0.0
    return z


def _knn_predict(x_train, y_train, x_test, k: int) -> np.ndarray:
    """Majority vote of the k = min(k, n_train) nearest; ties go to the nearest tied class.

    The tie rule matters at 1 sample per class, where 3 neighbours are 3 different classes:
    sklearn would pick the smallest label, this picks the nearest, as kNN with k=1 does.
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x_train))
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x_train)
    _, idx = nn.kneighbors(x_test)  # (M, k), nearest first
    classes, neigh = np.unique(y_train, return_inverse=True)
    neigh = neigh[idx]
    votes = np.zeros((len(x_test), len(classes)))
    np.add.at(votes, (np.arange(len(x_test))[:, None], neigh), 1.0)
    # Break ties by rank: a class's first rank r costs r / (k + 1) < 1 vote.
    first = np.full(votes.shape, float(k))
    for r in range(k - 1, -1, -1):
        first[np.arange(len(x_test)), neigh[:, r]] = r
    return classes[np.argmax(votes - first / (k + 1), axis=1)]


def run_probes(
    features: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    probes: Sequence[str] = PROBES,
    *,
    max_iter: int = 1000,
    recall_out: dict | None = None,
) -> dict[str, float]:
    """Fit each probe on the train rows, score balanced accuracy on the test rows.

    Features are standardized with the training rows' statistics and NaN is imputed with the
    training mean (0 after standardization). Probes: `knn1`, `knn3` (k = min(3, n_train),
    uniform votes, ties to the nearest tied class), `logreg` (multinomial, lbfgs, C=1,
    balanced class weights).

    Args:
        features: (N, F) frozen features.
        labels: (N,) class ids.
        train_idx: rows to fit on.
        test_idx: rows to score on.
        probes: which probes to run.
        max_iter: lbfgs iteration cap.
        recall_out: if given, filled with {probe: {class id: recall on the test rows}}
            (balanced accuracy is their mean; a class with no test row is left out).

    Returns:
        {probe: balanced accuracy}.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    features = np.asarray(features)
    labels = np.asarray(labels)
    x_train = _standardize(features[train_idx], features[train_idx])
    x_test = _standardize(features[train_idx], features[test_idx])
    y_train, y_test = labels[train_idx], labels[test_idx]
    out = {}
    for probe in probes:
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; known: {PROBES}")
        if len(np.unique(y_train)) < 2:
            pred = np.full_like(y_test, y_train[0])
        elif probe in ("knn1", "knn3"):
            pred = _knn_predict(x_train, y_train, x_test, int(probe[-1]))
        else:
            model = LogisticRegression(C=1.0, max_iter=max_iter, class_weight="balanced")
            with warnings.catch_warnings():
                # A capped lbfgs is still a fine probe; the warning would flood the log.
                warnings.simplefilter("ignore", ConvergenceWarning)
                pred = model.fit(x_train, y_train).predict(x_test)
        out[probe] = float(balanced_accuracy_score(y_test, pred))
        if recall_out is not None:
            recall_out[probe] = {
                int(c): float(np.mean(pred[y_test == c] == c)) for c in np.unique(y_test)
            }
    return out


def parse_budgets(text: str) -> list[int | None]:
    """'1,10,max' -> [1, 10, None] (None = the whole train pool)."""
    out: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == MAX_BUDGET:
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise ValueError(
                f"--budgets must be positive integers or 'max', e.g. 1,10,max; got {text!r}"
            )
    if not out:
        raise ValueError("--budgets is empty")
    return out


def budget_key(budget: int | None) -> str:
    return MAX_BUDGET if budget is None else str(budget)


def probe_feature_sets(
    feature_sets: Mapping[str, np.ndarray],
    labels: np.ndarray,
    is_test: np.ndarray,
    budgets: Sequence[int | None],
    repeats: int,
    seed: int,
    probes: Sequence[str] = PROBES,
    recall_out: dict | None = None,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Run every probe on every feature set over the same class-balanced draws.

    `recall_out`, if given, is filled with {feature set: {budget key: {probe: {class id:
    recall}}}}, the mean over the draws: which classes a feature set gets wrong.

    Returns:
        {feature set: {budget key: {probe: [mean, std]}}} of balanced accuracy (std over
        repeats, population std; 0 for `max`, which is drawn once).
    """
    labels = np.asarray(labels)
    train_pool = np.flatnonzero(~np.asarray(is_test))
    test_idx = np.flatnonzero(np.asarray(is_test))
    scores = {
        name: {budget_key(b): {p: [] for p in probes} for b in budgets} for name in feature_sets
    }
    recalls = {name: {budget_key(b): {p: [] for p in probes} for b in budgets} for name in scores}
    for b in budgets:
        n_draws = 1 if b is None else repeats
        for r in range(n_draws):
            rng = np.random.default_rng([seed, r, 0 if b is None else b])
            train_idx = train_pool[balanced_draw(labels[train_pool], b, rng)]
            for name, feats in feature_sets.items():
                per_class: dict = {}
                res = run_probes(feats, labels, train_idx, test_idx, probes, recall_out=per_class)
                for p, v in res.items():
                    scores[name][budget_key(b)][p].append(v)
                    recalls[name][budget_key(b)][p].append(per_class[p])
    if recall_out is not None:
        for name, per_budget in recalls.items():
            recall_out[name] = {
                bk: {
                    p: {c: float(np.mean([d[c] for d in draws])) for c in draws[0]}
                    for p, draws in per_probe.items()
                }
                for bk, per_probe in per_budget.items()
            }
    return {
        name: {
            bk: {p: [float(np.mean(v)), float(np.std(v))] for p, v in per_probe.items()}
            for bk, per_probe in per_budget.items()
        }
        for name, per_budget in scores.items()
    }


def best_probe(entry: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """(probe, mean) of the best probe in one {probe: [mean, std]} entry."""
    probe = max(entry, key=lambda p: entry[p][0])
    return probe, float(entry[probe][0])


def error_reduction(acc_embedding: float, acc_baseline: float) -> float | None:
    """1 - err_embedding / err_baseline with err = 1 - balanced accuracy.

    None when the baseline makes no error (nothing left to reduce) unless the embedding
    makes none either (0.0).
    """
    err_e, err_b = 1.0 - acc_embedding, 1.0 - acc_baseline
    if err_b <= 0.0:
        return 0.0 if err_e <= 0.0 else None
    return 1.0 - err_e / err_b


# ------------------------------------------------------------------------------- evaluate


def embed_pixels(
    embedder: Embedder, dataset: LabelledPixels, without: Sequence[str] = ()
) -> np.ndarray:
    """Run an embedder on the data set's observations (less the sources `without`); rows of
    its labelled pixels."""
    obs = dataset.observations
    if without:
        if missing := sorted(set(without) - set(obs.sources)):
            raise ValueError(
                f"--embed-without: {missing} not in the data set's sources {sorted(obs.sources)}"
            )
        obs = obs.without(without)
    h, w = obs.spatial_shape
    emb = np.asarray(embedder(obs), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != h * w:
        raise ValueError(
            f"embedder returned shape {emb.shape}; the contract is (H * W, D) = ({h * w}, D) "
            "rows in row-major pixel order (see benchmarks/quality.py)"
        )
    return emb[dataset.pixel_index]


def evaluate(
    dataset: LabelledPixels,
    embedder: Embedder | None = None,
    budgets: Sequence[int | None] = (1, 10, None),
    repeats: int = 30,
    seed: int = 0,
    probes: Sequence[str] = PROBES,
    embed_without: Sequence[str] = (),
) -> dict:
    """Probe the baselines (and an embedder) on a data set.

    Args:
        dataset: labelled pixels and their observations.
        embedder: a callable following the module's embedder contract, or None.
        budgets: samples per class; None = the whole train pool (`max`).
        repeats: draws per numeric budget.
        seed: draw seed.
        probes: which probes.
        embed_without: sources the embedder does not see (the baselines see every source).

    Returns:
        A dict with `dataset`, `features`, `best_baseline` and, with an embedder,
        `embedding` and `error_reduction`, plus `class_recall` ({feature set: {budget:
        {probe: {class id: mean recall}}}}), `classes`, counts, settings and timings.
    """
    t0 = time.perf_counter()
    feature_sets = baseline_features(
        dataset.observations, dataset.pixel_index, dataset.extra_series, seed=seed
    )
    feature_sets = {k: v for k, v in feature_sets.items() if v.shape[1] > 0}
    timings = {"baseline_features_s": time.perf_counter() - t0}
    if embedder is not None:
        t1 = time.perf_counter()
        feature_sets["embedding"] = embed_pixels(embedder, dataset, embed_without)
        timings["embed_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    recall: dict = {}
    scores = probe_feature_sets(
        feature_sets, dataset.labels, dataset.is_test, budgets, repeats, seed, probes, recall
    )
    timings["probes_s"] = time.perf_counter() - t2
    baselines = {k: v for k, v in scores.items() if k != "embedding"}
    best = {}
    for b in budgets:
        bk = budget_key(b)
        ranked = [(best_probe(entry[bk]), name) for name, entry in baselines.items()]
        (probe, acc), name = max(ranked, key=lambda t: t[0][1])
        best[bk] = {"name": name, "probe": probe, "balanced_accuracy": acc}
    train = ~dataset.is_test
    results = {
        "dataset": dataset.name,
        "features": baselines,
        "best_baseline": best,
        "classes": {str(c): n for c, n in sorted(dataset.class_names.items())},
        "n_train_pool": {
            str(c): int(np.sum(train & (dataset.labels == c))) for c in dataset.class_names
        },
        "n_test": {
            str(c): int(np.sum(dataset.is_test & (dataset.labels == c)))
            for c in dataset.class_names
        },
        "feature_dims": {k: int(v.shape[1]) for k, v in feature_sets.items()},
        "budgets": [budget_key(b) for b in budgets],
        "repeats": repeats,
        "seed": seed,
        "probes": list(probes),
        "info": dataset.info,
        "class_recall": {
            name: {
                bk: {p: {str(c): r for c, r in pc.items()} for p, pc in e.items()}
                for bk, e in v.items()
            }
            for name, v in recall.items()
        },
    }
    if embedder is not None:
        results["embed_without"] = list(embed_without)
        results["embedding"] = scores["embedding"]
        results["error_reduction"] = {
            bk: error_reduction(
                best_probe(scores["embedding"][bk])[1], best[bk]["balanced_accuracy"]
            )
            for bk in best
        }
    timings["total_s"] = time.perf_counter() - t0
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return results


# ------------------------------------------------------------------------------- report


def _fmt(entry: Sequence[float]) -> str:
    return f"{entry[0]:.3f} ± {entry[1]:.3f}"


def results_markdown(results: Mapping) -> str:
    """results.json -> markdown tables (one per budget) and the summary lines."""
    lines = [f"# Quality: `{results['dataset']}`", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    classes = results.get("classes", {})
    if classes:
        counts = ", ".join(
            f"{n} ({results['n_train_pool'].get(c, '?')} train / {results['n_test'].get(c, '?')} test)"
            for c, n in classes.items()
        )
        lines += [f"Classes: {counts}", ""]
    lines += [
        f"Balanced accuracy, mean ± std over {results.get('repeats', '?')} class-balanced draws "
        "(`max`: the whole train pool, drawn once).",
        "",
    ]
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    probes = results.get("probes") or list(next(iter(next(iter(rows.values())).values())))
    for bk in results["best_baseline"]:
        lines += [f"## Budget {bk} per class", ""]
        lines += ["| features | " + " | ".join(probes) + " |", "|---" * (len(probes) + 1) + "|"]
        for name, entry in rows.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(entry[bk][p]) for p in probes) + " |")
        best = results["best_baseline"][bk]
        lines += [
            "",
            f"Best baseline: {best['name']} ({best.get('probe', '')}) {best['balanced_accuracy']:.3f}",
        ]
        if "error_reduction" in results:
            er = results["error_reduction"][bk]
            lines.append(
                f"Error reduction vs best baseline: {'n/a' if er is None else f'{er:.1%}'}"
            )
        lines.append("")
    lines += _recall_markdown(results, classes)
    return "\n".join(lines)


def _recall_markdown(results: Mapping, classes: Mapping[str, str]) -> list[str]:
    """The recall per class of the best baseline and of the embedding (each with its best
    probe) at every budget: where the balanced accuracy is lost."""
    recall = results.get("class_recall") or {}
    if "embedding" not in results or "embedding" not in recall:
        return []
    budgets = list(results["best_baseline"])
    cols = []
    for bk in budgets:
        best = results["best_baseline"][bk]
        probe = best_probe(results["embedding"][bk])[0]
        cols.append((recall[best["name"]][bk][best["probe"]], recall["embedding"][bk][probe]))
    lines = [
        "## Recall per class",
        "",
        "Best baseline / embedding, each with its best probe, mean over the draws.",
        "",
        "| class | " + " | ".join(budgets) + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for c, name in classes.items():
        cells = [" / ".join("-" if c not in r else f"{r[c]:.3f}" for r in pair) for pair in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_results(results: Mapping, path: str | Path) -> None:
    """Grouped bar chart: best-probe balanced accuracy per feature set and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    budgets = list(results["best_baseline"])
    fig, ax = plt.subplots(figsize=(3.4 + 1.6 * len(budgets), 3.6))
    width = 0.8 / len(rows)
    for i, (name, entry) in enumerate(rows.items()):
        means, stds = [], []
        for bk in budgets:
            probe, mean = best_probe(entry[bk])
            means.append(mean)
            stds.append(entry[bk][probe][1])
        x = np.arange(len(budgets)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=2, label=name)
    n_classes = max(1, len(results.get("classes", {})) or 1)
    ax.axhline(1.0 / n_classes, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(np.arange(len(budgets)), [f"{b} / class" for b in budgets])
    ax.set_ylim(0, 1)
    ax.set_ylabel("balanced accuracy (best probe)")
    ax.set_title(results["dataset"], fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _json_safe(x):
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def write_report(results: Mapping, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and results.png under out_dir.

    Returns:
        {"json": path, "md": path, "png": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(results_markdown(results) + "\n")
    plot_results(results, paths["png"])
    return paths


# ------------------------------------------------------------------------------- embedders


def load_embedder(spec: str | None) -> Embedder | None:
    """`baselines` -> None; a bundle path -> its `.embed`; `module:function` -> that callable."""
    if spec in (None, "", "baselines"):
        return None
    if os.path.exists(spec):
        try:
            from model import load_bundle
        except ImportError as e:
            raise ValueError(
                f"--embedder {spec}: loading a model bundle needs model.load_bundle, which this "
                f"build does not have yet ({e}); pass module:function for a Python callable"
            ) from None
        return load_bundle(spec).embed
    m = re.fullmatch(r"([A-Za-z_][\w.]*):([A-Za-z_]\w*)", spec)
    if not m:
        raise ValueError(
            f"--embedder must be 'baselines', an existing model bundle path or module:function; "
            f"got {spec!r}"
        )
    fn = getattr(importlib.import_module(m.group(1)), m.group(2), None)
    if not callable(fn):
        raise ValueError(f"--embedder {spec}: {m.group(2)} is not a callable in {m.group(1)}")
    return fn


# ------------------------------------------------------------------------------- run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="earthembed evaluate",
        description="Few-shot probes (kNN k=1,3; logistic) on embeddings vs designed baselines.",
    )
    p.add_argument("--dataset", required=True, help="sim:SEED:BIOME | eolearn | points:OBS:LABELS")
    p.add_argument("--embedder", default="baselines", help="baselines | BUNDLE_PATH | module:fn")
    p.add_argument("--budgets", default="1,10,max", help="samples per class, e.g. 1,10,max")
    p.add_argument("--repeats", type=int, default=30, help="draws per numeric budget")
    p.add_argument("--seed", type=int, default=0, help="split, sampling and draw seed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--block", type=int, default=None, help="split block side in px")
    p.add_argument("--cache-dir", default=None, help="simulated regions cache (default OUT/cache)")
    p.add_argument("--data-dir", default=None, help="eo-learn patch dir (default shared/realdata)")
    p.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS, help="train pool cap")
    p.add_argument("--max-test", type=int, default=MAX_TEST, help="test set cap")
    p.add_argument("--sim-size-km", type=float, default=SIM_SIZE_KM, help="sim region side")
    p.add_argument("--sim-year", type=int, default=SIM_YEAR, help="sim year")
    p.add_argument("--probes", default=",".join(PROBES), help="subset of knn1,knn3,logreg")
    p.add_argument(
        "--embed-without",
        default="",
        help="comma-separated sources the embedder does not see, e.g. cop_dem",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(argv: list[str] | None = None) -> int:
    """`earthembed evaluate`: load the data set, probe, write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    t0 = time.perf_counter()
    budgets = parse_budgets(args.budgets)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    if unknown := set(probes) - set(PROBES):
        raise SystemExit(f"--probes: unknown {sorted(unknown)}; known {PROBES}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    embedder = load_embedder(args.embedder)
    out = Path(args.out)
    dataset = load_dataset(
        args.dataset,
        seed=args.seed,
        block=args.block,
        cache_dir=args.cache_dir or out / "cache",
        data_dir=args.data_dir,
        max_per_class=args.max_per_class,
        max_test=args.max_test,
        sim_size_km=args.sim_size_km,
        sim_year=args.sim_year,
    )
    t_load = time.perf_counter() - t0
    log.info(
        "%s: %d classes, %d train pool / %d test px",
        dataset.name,
        len(dataset.class_names),
        int((~dataset.is_test).sum()),
        int(dataset.is_test.sum()),
    )
    without = [s.strip() for s in args.embed_without.split(",") if s.strip()]
    if without and embedder is None:
        raise SystemExit("--embed-without needs --embedder")
    results = evaluate(dataset, embedder, budgets, args.repeats, args.seed, probes, without)
    from benchmarks.speed import machine_description

    results["embedder"] = args.embedder
    results["command"] = "earthembed evaluate " + " ".join(argv)
    results["timings"]["load_s"] = round(t_load, 3)
    results["timings"]["wall_s"] = round(time.perf_counter() - t0, 3)
    results["date"] = dt.date.today().isoformat()
    results["machine"] = machine_description()
    paths = write_report(results, out)
    print(results_markdown(results))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
