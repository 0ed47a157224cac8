"""Data sets for the few-shot protocol: loaders (`sim:SEED:BIOME`, `simfine`, `simlai`,
`simchange`, `eolearn[:VARIANT][:val]`, `points:OBS:LABELS`, `fuel_moisture[:val]`), block and point-cell
splits, stratified sampling of labelled pixels.

The protocol they implement: the evaluation package docstring (evaluation/__init__.py).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation import (
    CHANGE_MAX_PER_SIDE,
    DEFAULT_BLOCK,
    MAX_PER_CLASS,
    MAX_TEST,
    MIN_CLASS_PIXELS,
    MIN_SPLIT_PIXELS,
    SIM_EVAL_OFFSET_M,
    SIM_EVAL_YEARS,
    SIM_SIZE_KM,
    SIM_YEAR,
)
from schemas import sensors
from schemas.grid import GridWindow, lonlat_to_utm, utm_epsg
from schemas.observations import Observations

log = logging.getLogger(__name__)

REALDATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# A split label per pixel: which side of the train/test split it is on.
SPLIT_TRAIN = 0
SPLIT_TEST = 1
SPLIT_BUFFER = -1


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
    labelled pixel; `extra_features` more baselines computed by the loader (one row per
    labelled pixel). A regression data set sets `targets` (float, one per labelled pixel)
    and leaves `labels` all 0 and `class_names` empty.
    """

    name: str
    observations: Observations
    pixel_index: np.ndarray  # (N,) int64 into the observations' H * W pixels
    labels: np.ndarray  # (N,) int64 class ids
    is_test: np.ndarray  # (N,) bool
    class_names: dict[int, str]
    extra_series: dict[str, PixelSeries] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    targets: np.ndarray | None = None  # (N,) float64: a regression data set's targets
    extra_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.targets is not None

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
        for name, f in self.extra_features.items():
            if f.ndim != 2 or f.shape[0] != n:
                raise ValueError(f"extra features {name!r}: shape {f.shape} != ({n}, F)")
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.float64)
            if self.targets.shape != (n,):
                raise ValueError(f"targets {self.targets.shape} must be ({n},)")


@dataclasses.dataclass
class ChangePixels:
    """A change-detection data set: the same pixels observed in two years.

    `changed` marks the pixels whose land cover changes between the years (positives);
    the others sampled are unchanged (negatives). Scores need no training: nothing is split.
    """

    name: str
    before: Observations
    after: Observations
    pixel_index: np.ndarray  # (N,) int64 into both windows' row-major pixels
    changed: np.ndarray  # (N,) bool
    event_codes: np.ndarray  # (N,) int8: simulation.EVENT_TYPES index + 1, 0 = none
    info: dict = dataclasses.field(default_factory=dict)


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
    return _below(h, test_fraction)


def _below(h: np.ndarray, fraction: float) -> np.ndarray:
    """Uniform [0, 1) numbers from the top 53 bits of uint64 hashes -> below `fraction`?"""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


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
                "--sim-region",
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


EOLEARN_VARIANTS = {
    None: "the embedder: 5 scenes + DEM; the baselines also the 68-date NDVI series",
    "s2": "both: the 5 reference scenes' bands, no DEM, no NDVI series",
    "s2dem": "both: the 5 reference scenes' bands and the DEM, no NDVI series",
}


# `eolearn[:VARIANT]:val` splits the train pool by a second block split, its seed the split
# seed plus this offset: of the offsets 1-11 and 7919, the one whose sides hold the rarest
# class (artificial surface, 30 train-pool px) most evenly (16 / 13 px at seed 0); chosen on
# class counts alone, before any embedding was probed on it.
EOLEARN_VAL_SEED_OFFSET = 1


def _eolearn_dataset(
    data_dir: Path,
    *,
    block: int,
    split_seed: int,
    variant: str | None = None,
    validation: bool = False,
    **sample_kw,
):
    """The real Slovenia patch: LULC labels, S2 reference scenes, DEM, NDVI pseudo-band.

    `variant` None is the original set (the baselines see the NDVI series the embedder does
    not); `s2` and `s2dem` give the embedder and the baselines the same inputs.
    `validation`: the TRAIN POOL's pixels alone, split again by blocks (`block_split` with
    seed `split_seed + EOLEARN_VAL_SEED_OFFSET`, a buffer between the sides, buffer pixels
    dropped): a place to choose settings without reading a test pixel.
    """
    from beam_jobs.io.realdata import read_eolearn

    if variant not in EOLEARN_VARIANTS:
        raise ValueError(
            f"--dataset eolearn variant {variant!r}: choose eolearn, eolearn:s2 or eolearn:s2dem"
        )
    sample = read_eolearn(data_dir)
    lulc = np.asarray(sample.lulc)
    names = {int(c): str(n) for c, n in sample.lulc_classes.items()}
    classes = [c for c in names if c != 0]  # 0 is "no data"
    split = block_split(lulc.shape, block, split_seed)
    index, labels, is_test = sample_labelled_pixels(
        lulc, split, classes=classes, seed=split_seed, **sample_kw
    )
    split_info = f"blocks of {block} px, seed {split_seed}"
    if validation:
        side = block_split(lulc.shape, block, split_seed + EOLEARN_VAL_SEED_OFFSET).reshape(-1)
        keep = ~is_test & (side[index] != SPLIT_BUFFER)
        index, labels, is_test = index[keep], labels[keep], side[index[keep]] == SPLIT_TEST
        split_info = (
            f"validation: the train pool only (blocks of {block} px, seed {split_seed}), split "
            f"again by blocks (seed {split_seed + EOLEARN_VAL_SEED_OFFSET}); test pixels not read"
        )
    obs, extra = sample.observations, {}
    if variant is None:
        ndvi = np.where(np.asarray(sample.ndvi_valid), np.asarray(sample.ndvi), np.nan)
        ndvi = ndvi.reshape(ndvi.shape[0], -1)[:, index].astype(np.float32)
        extra = {"ndvi": PixelSeries(ndvi, np.asarray(sample.ndvi_times_ms, np.int64))}
    elif variant == "s2":
        obs = obs.without(["cop_dem"])
    name = "eolearn" + (f":{variant}" if variant else "") + (":val" if validation else "")
    return LabelledPixels(
        name=name,
        observations=obs,
        pixel_index=index,
        labels=labels,
        is_test=is_test,
        class_names={int(c): str(names[c]) for c in np.unique(labels).tolist()},
        extra_series=extra,
        info={
            "data_dir": str(data_dir),
            "block": block,
            "inputs": EOLEARN_VARIANTS[variant],
            "split": split_info,
        },
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


# ---------------------------------------------------------------------------------- held-out sim

FINE_GROUPS = ("crops", "forests")


def heldout_sim_bbox(biome: str, size_km: float) -> str:
    """lon/lat 'minx,miny,maxx,maxy' of a size_km square SIM_EVAL_OFFSET_M east of the
    biome's demo centre: a footprint pretraining (the demo footprint) never saw."""
    from schemas.grid import utm_to_lonlat
    from simulation.classes import get_biome

    b = get_biome(biome)
    cx, cy = b.demo_center[0] + SIM_EVAL_OFFSET_M, b.demo_center[1]
    half = size_km * 500.0
    xs = np.array([cx - half, cx + half, cx + half, cx - half])
    ys = np.array([cy - half, cy - half, cy + half, cy + half])
    lon, lat = utm_to_lonlat(xs, ys, b.demo_epsg)
    # Inside the UTM square: the simulated window covers the box, aligned outwards.
    return f"{np.max(lon[[0, 3]]):.6f},{np.max(lat[[0, 1]]):.6f},{np.min(lon[[1, 2]]):.6f},{np.min(lat[[2, 3]]):.6f}"


def _heldout_sim(
    seed: int, biome: str, *, cache_dir: Path, size_km: float, sources: Sequence[str] | None
) -> Path:
    """Simulate (once, cached) a held-out region: SIM_EVAL_YEARS on the held-out footprint."""
    import beam_jobs.simulate as simulate

    years = ",".join(str(y) for y in SIM_EVAL_YEARS)
    tag = "" if not sources else "_" + "-".join(sources)
    sim_dir = cache_dir / (
        f"simeval_{seed}_{biome}_{round(size_km * 1000)}m_{years.replace(',', '_')}{tag}"
    )
    if not (sim_dir / "catalog.json").exists():
        log.info("simulating held-out %s (seed %d, %s, %g km)", sim_dir, seed, biome, size_km)
        simulate.run(heldout_sim_argv(sim_dir, seed, biome, size_km=size_km, sources=sources))
    return sim_dir


def heldout_sim_argv(
    sim_dir: Path, seed: int, biome: str, *, size_km: float, sources: Sequence[str] | None
) -> list[str]:
    """`earthembed simulate`'s arguments for a held-out region (`--bbox=...`: west of
    Greenwich, as the tropical footprint is, the box starts with '-')."""
    years = ",".join(str(y) for y in SIM_EVAL_YEARS)
    argv = ["--out", str(sim_dir), f"--bbox={heldout_sim_bbox(biome, size_km)}"]
    argv += ["--years", years, "--seed", str(seed), "--biome", biome]
    if sources:
        argv += ["--sources", ",".join(sources)]
    return argv


def _sim_window(sim_dir: Path, year: int) -> tuple[GridWindow, np.ndarray]:
    """The simulated window (from the year's land-cover raster) and that raster."""
    import rasterio

    with rasterio.open(sim_dir / "labels" / f"landcover_{year}.tif") as src:
        t = src.transform
        window = GridWindow(src.crs.to_epsg(), t.c, t.f, src.width, src.height)
        return window, src.read(1)


def _read_sim_year(sim_dir: Path, window: GridWindow, year: int) -> Observations:
    from beam_jobs.io.stac import StacCatalog, read_observations
    from beam_jobs.runner import year_bounds_ms

    catalog = StacCatalog.open(str(sim_dir / "catalog.json"))
    obs = read_observations(catalog, window, *year_bounds_ms(year))
    if obs.errors:
        log.warning("%d reads of %s failed: %s", len(obs.errors), sim_dir, obs.errors[:3])
    return obs


def fine_group_labels(label_map: np.ndarray, group: str) -> tuple[np.ndarray, list[int]]:
    """Land cover -> the fine classes of one coarse group (others 0) and the group's ids.

    Groups (simulation.classes): `crops` (CROPS: crop_a, crop_b, double_crop: e.g. winter
    cereal / summer maize / barley then catch crop) and `forests` (FORESTS: evergreen,
    deciduous).
    """
    from simulation import classes as C

    ids = {"crops": list(C.CROPS), "forests": list(C.FORESTS)}.get(group)
    if ids is None:
        raise ValueError(f"fine-class group must be one of {FINE_GROUPS}; got {group!r}")
    lab = np.asarray(label_map).astype(np.int64)
    return np.where(np.isin(lab, ids), lab, 0), ids


def sample_split_pixels(
    mask: np.ndarray, split: np.ndarray, *, seed: int, max_train: int, max_test: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels where `mask`, at most max_train on the train side and max_test on the test side
    of a block split (random, seeded): (flat indices, is_test)."""
    flat, side = np.asarray(mask).reshape(-1), np.asarray(split).reshape(-1)
    rng = np.random.default_rng([seed, 11])
    out = []
    for s, cap in ((SPLIT_TRAIN, max_train), (SPLIT_TEST, max_test)):
        idx = np.flatnonzero(flat & (side == s))
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        out.append(idx)
    if min(len(o) for o in out) < MIN_SPLIT_PIXELS:
        raise ValueError(
            f"too few pixels after the split: {len(out[0])} train / {len(out[1])} test"
        )
    return np.concatenate(out), np.repeat([False, True], [len(out[0]), len(out[1])])


def _simtask_dataset(
    task: str,
    seed: int,
    biome: str,
    group: str | None,
    *,
    cache_dir: Path,
    block: int,
    split_seed: int,
    size_km: float,
    sources: Sequence[str] | None = None,
    min_class_pixels: int = MIN_CLASS_PIXELS,
    max_per_class: int = MAX_PER_CLASS,
    max_test: int = MAX_TEST,
) -> LabelledPixels | ChangePixels:
    """`simfine`, `simlai` or `simchange` on a held-out simulated region."""
    import simulation

    sim_dir = _heldout_sim(seed, biome, cache_dir=cache_dir, size_km=size_km, sources=sources)
    y0, y1 = SIM_EVAL_YEARS
    window, label_map = _sim_window(sim_dir, y0)
    region = simulation.load_region(sim_dir)
    info = {
        "window": window.to_dict(),
        "years": list(SIM_EVAL_YEARS),
        "sim_dir": str(sim_dir),
        "block": block,
        "footprint": heldout_sim_bbox(biome, size_km),
    }
    name = f"sim{task}:{seed}:{biome}" + (f":{group}" if group else "")
    if task == "change":
        codes = simulation.event_codes(region, window, y0).reshape(-1)
        rng = np.random.default_rng([split_seed, 13])
        pos, neg = np.flatnonzero(codes != 0), np.flatnonzero(codes == 0)
        if len(pos) < MIN_SPLIT_PIXELS:
            raise ValueError(f"{sim_dir}: only {len(pos)} pixels change from {y0} to {y1}")
        pick = [
            np.sort(rng.choice(a, min(len(a), CHANGE_MAX_PER_SIDE), replace=False))
            for a in (pos, neg)
        ]
        index = np.concatenate(pick)
        return ChangePixels(
            name=name,
            before=_read_sim_year(sim_dir, window, y0),
            after=_read_sim_year(sim_dir, window, y1),
            pixel_index=index,
            changed=codes[index] != 0,
            event_codes=codes[index].astype(np.int8),
            info={**info, "event_types": list(simulation.EVENT_TYPES)},
        )
    split = block_split(window.shape, block, split_seed)
    obs = _read_sim_year(sim_dir, window, y0)
    if task == "fine":
        fine, ids = fine_group_labels(label_map, group or "crops")
        index, labels, is_test = sample_labelled_pixels(
            fine,
            split,
            classes=ids,
            seed=split_seed,
            min_class_pixels=min_class_pixels,
            max_per_class=max_per_class,
            max_test=max_test,
        )
        names = simulation.class_names(biome)
        return LabelledPixels(
            name=name,
            observations=obs,
            pixel_index=index,
            labels=labels,
            is_test=is_test,
            class_names={c: names[c] for c in np.unique(labels).tolist()},
            info={**info, "group": group or "crops", "year": y0},
        )
    lai = simulation.peak_lai(region, window, y0).reshape(-1)
    land = label_map.reshape(-1) != 0
    index, is_test = sample_split_pixels(
        land, split, seed=split_seed, max_train=max_per_class, max_test=max_test
    )
    return LabelledPixels(
        name=name,
        observations=obs,
        pixel_index=index,
        labels=np.zeros(len(index), np.int64),
        is_test=is_test,
        class_names={},
        targets=lai[index].astype(np.float64),
        info={**info, "target": f"peak LAI of {y0}", "year": y0},
    )


def step_series_features(obs: Observations, step_times_ms: np.ndarray) -> np.ndarray:
    """A point set's raw series, flattened in step order: the `raw_series` baseline.

    For each point i: step 0's bands of every time-varying source (registry order, the
    frame at step_times_ms[i, 0]), then step 1's, ...; then the static sources' bands once.

    Returns:
        (N, K * C_time + C_static) float32, NaN where a value is missing.
    """
    n = step_times_ms.shape[0]
    timed, static = [], []
    for sid in [s for s in sensors.SOURCE_IDS if s in obs.sources]:
        sf = obs.sources[sid].with_registry_bands()
        v = sf.masked_values()[:, :, 0, :]  # (T, N, C)
        if sensors.get_sensor(sid).is_static:
            static.append(v[0])
            continue
        t_idx = np.searchsorted(sf.times_ms, step_times_ms)
        found = (t_idx < len(sf.times_ms)) & (
            sf.times_ms[np.minimum(t_idx, len(sf.times_ms) - 1)] == step_times_ms
        )
        got = v[np.where(found, t_idx, 0), np.arange(n)[:, None]]  # (N, K, C)
        got[~found] = np.nan
        timed.append(got)
    steps = np.concatenate(timed, axis=-1).reshape(n, -1) if timed else np.zeros((n, 0))
    return np.concatenate([steps, *static], axis=1).astype(np.float32)


# The share of the fuel-moisture TRAINING sites that `fuel_moisture:val` holds out.
FUEL_VAL_FRACTION = 0.3


def fuel_validation_sites(sites: np.ndarray, seed: int = 0) -> np.ndarray:
    """Seeded hash of each site name -> on the validation side? (about FUEL_VAL_FRACTION
    of the sites; depends only on (seed, site))."""
    import hashlib

    keys = np.asarray(
        [int.from_bytes(hashlib.sha256(str(s).encode()).digest()[:8], "little") for s in sites],
        dtype=np.uint64,
    )
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(np.asarray([seed], np.uint64)) ^ keys)
    return _below(h, FUEL_VAL_FRACTION)


def _fuel_moisture_dataset(
    data_dir: Path, *, cache_dir: Path, validation: bool = False, seed: int = 0
) -> LabelledPixels:
    """presto's live fuel moisture set, written as a point table and read back through it.

    `validation`: the set's TRAINING sites alone, split by site (`fuel_validation_sites`):
    a place to choose settings without touching the test sites that report them."""
    from beam_jobs.io.files import atomic_target
    from beam_jobs.io.points import read_point_table, write_point_table
    from beam_jobs.io.realdata import FUEL_MOISTURE_YEAR, read_fuel_moisture

    sample = read_fuel_moisture(data_dir)
    table = cache_dir / f"fuel_moisture_points_{FUEL_MOISTURE_YEAR}.parquet"
    if not table.exists():
        with atomic_target(table) as tmp:
            write_point_table(sample.observations, tmp)
    obs = read_point_table(table)
    pos = {str(p): i for i, p in enumerate(obs.point_ids)}
    index = np.asarray([pos[str(p)] for p in sample.observations.point_ids], np.int64)
    raw = step_series_features(sample.observations, sample.step_times_ms)
    keep = np.ones(len(index), bool)
    is_test, split = sample.is_test, "the set's is_test (by site)"
    if validation:
        keep = ~sample.is_test
        is_test = fuel_validation_sites(sample.site, seed)
        split = (
            f"validation: the training sites only, {FUEL_VAL_FRACTION:.0%} of them held out "
            f"by a seeded hash of the site name (seed {seed}); the test sites are not read"
        )
    site = sample.site[keep]
    n = int(keep.sum())
    return LabelledPixels(
        name="fuel_moisture:val" if validation else "fuel_moisture",
        observations=obs,
        pixel_index=index[keep],
        labels=np.zeros(n, np.int64),
        is_test=is_test[keep],
        class_names={},
        targets=sample.target[keep],
        extra_features={"raw_series": raw[keep]},
        info={
            "data_dir": str(data_dir),
            "point_table": str(table),
            "year": FUEL_MOISTURE_YEAR,
            "split": split,
            "target": "live fuel moisture (%)",
            "sites": {
                "train": int(len(set(site[~is_test[keep]]))),
                "test": int(len(set(site[is_test[keep]]))),
            },
        },
    )


DATASET_FORMS = (
    "sim:SEED:BIOME",
    "simfine:SEED:BIOME[:GROUP]",
    "simlai:SEED:BIOME",
    "simchange:SEED:BIOME",
    "eolearn[:s2|:s2dem][:val]",
    "points:OBS.parquet:LABELS.parquet",
    "fuel_moisture[:val]",
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
    sim_sources: Sequence[str] | None = None,
) -> LabelledPixels | ChangePixels:
    """A `--dataset` spec (DATASET_FORMS) -> LabelledPixels (ChangePixels for simchange).

    Args:
        spec: the `--dataset` value.
        seed: split and sampling seed.
        block: block (or point cell) side in pixels; default per data set (DEFAULT_BLOCK).
        cache_dir: where simulated regions (and the fuel moisture point table) are kept.
        data_dir: the real data set's directory (eolearn, fuel_moisture; default
            shared/realdata/...).
        min_class_pixels: smallest class kept.
        max_per_class: train pool cap per class (simlai: the train pool cap).
        max_test: test set cap.
        sim_size_km: side of the simulated region (sim*).
        sim_year: the simulated year (sim only; the held-out tasks use SIM_EVAL_YEARS).
        sim_sources: sources to simulate for the held-out tasks (None: all).

    Returns:
        The labelled pixels with their observations.
    """
    kind = spec.split(":", 1)[0]
    if kind not in DEFAULT_BLOCK:
        raise ValueError(f"--dataset must be one of {', '.join(DATASET_FORMS)}; got {spec!r}")
    block = block or DEFAULT_BLOCK[kind]
    kw = dict(min_class_pixels=min_class_pixels, max_per_class=max_per_class, max_test=max_test)
    cache = Path(cache_dir) if cache_dir else Path("out") / "eval_cache"
    if kind == "sim":
        m = re.fullmatch(r"sim:(\d+):(\w+)", spec)
        if not m:
            raise ValueError(
                f"--dataset sim must be sim:SEED:BIOME, e.g. sim:101:tropical; got {spec!r}"
            )
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
    if kind in ("simfine", "simlai", "simchange"):
        m = re.fullmatch(
            rf"{kind}:(\d+):(\w+)" + (r"(?::(\w+))?" if kind == "simfine" else ""), spec
        )
        if not m:
            form = next(f for f in DATASET_FORMS if f.startswith(kind + ":"))
            raise ValueError(
                f"--dataset {kind} must be {form}, e.g. {kind}:303:tropical; got {spec!r}"
            )
        group = m.group(3) if kind == "simfine" else None
        if group is not None and group not in FINE_GROUPS:
            raise ValueError(f"--dataset {spec}: group must be one of {FINE_GROUPS}")
        return _simtask_dataset(
            kind[3:],
            int(m.group(1)),
            m.group(2),
            group,
            cache_dir=cache,
            block=block,
            split_seed=seed,
            size_km=sim_size_km,
            sources=sim_sources,
            **kw,
        )
    if kind == "eolearn":
        parts = spec.split(":")[1:]
        validation = bool(parts) and parts[-1] == "val"
        parts = parts[:-1] if validation else parts
        if len(parts) > 1:
            raise ValueError(f"--dataset eolearn must be eolearn[:s2|:s2dem][:val]; got {spec!r}")
        d = Path(data_dir) if data_dir else REALDATA_DIR / "eolearn_slovenia"
        return _eolearn_dataset(
            d,
            block=block,
            split_seed=seed,
            variant=parts[0] if parts else None,
            validation=validation,
            **kw,
        )
    if kind == "fuel_moisture":
        if spec not in ("fuel_moisture", "fuel_moisture:val"):
            raise ValueError(f"--dataset fuel_moisture takes no argument but :val; got {spec!r}")
        d = Path(data_dir) if data_dir else REALDATA_DIR / "presto_fuel_moisture"
        return _fuel_moisture_dataset(
            d, cache_dir=cache, validation=spec.endswith(":val"), seed=seed
        )
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(
            f"--dataset points must be points:OBS.parquet:LABELS.parquet; got {spec!r}"
        )
    return _points_dataset(parts[1], parts[2], block=block, split_seed=seed, **kw)
