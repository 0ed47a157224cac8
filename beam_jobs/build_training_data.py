"""STAC catalog or point table -> sharded training TFRecords + tf.Transform normalization stats.

Runbook
-------
Locally (Python FnApiRunner; add `--direct_num_workers 2 --direct_running_mode
multi_processing` to use two cores):

    earthembed build-training-data --stac /tmp/demo_sim/catalog.json --years 2023 \\
        --num-samples 256 --patch-size 128 --max-frames 16 --out /tmp/demo_td

    earthembed build-training-data --observations points.parquet --years 2021 \\
        --out /tmp/points_td            # P = 1 examples, one per point and valid period

    earthembed build-training-data --stac-api https://earth-search.aws.element84.com/v1 \\
        --collections sentinel-2-l2a --bbox 4.60,50.58,4.64,50.60 --years 2023 \\
        --out /tmp/api_td               # the items found go to --out/stac_items.parquet

On Dataflow (the flex-template image carries the package; paths on GCS):

    earthembed build-training-data --stac gs://bucket/catalog/catalog.json \\
        --bbox 4.3,50.8,4.5,50.9 --years 2021-2023 --num-samples 100000 \\
        --out gs://bucket/training/v1 --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

Outputs in --out: `train-SSSSS-of-NNNNN.tfrecord.gz`, `eval-...` (gzip TFRecords of
tf.train.Example, layout in schemas/examples.py), `transform_fn/` (the tf.Transform graph),
`stats.json` ({source: {band: {mean, std, count}}} over valid values of the training split,
plus schema_version, sizes and the eval split's shift `eval_shift` in train std units),
`deadletter.jsonl` (one JSON line per sample that failed, with the reason) and, with
--stac-api, `stac_items.parquet` (the items the search found; the workers' catalog).

Shards are deterministic: N per split follows from the planned sample count and the example
size (`num_shards`, about 256 MiB raw each), an example's shard and its place in it from the
SHA-256 of its bytes, so a rebuild with the same flags writes byte-identical shards whatever
the runner or worker count, and training on them is reproducible (`make pretrain`).

How samples are drawn: per year, patches of P x P px aligned to the 10 m grid of the region's
UTM zone; stratified by land cover (equal counts per class of the patch-centre pixel) where
`labels/landcover_{year}.tif` lies beside the catalog, uniform otherwise; a valid period per
sample, the full year (half the samples) or a random run of 3-11 whole months; every choice
reproducible from --seed. The training/eval split is drawn per sample (per point for point
tables). Per sample: one `read_observations` call on the patch window over the year, optional
monthly median composites, per-band model transforms, at most --max-frames frames per source
(clear ones preferred), one example.

Normalization: each example contributes per-band (count, mean, M2) of its valid values;
tf.Transform combines them over the training split (an exact, numerically stable pooled
mean/variance: sum(M2_i + n_i (m_i - mean)^2) / N) and the same transform_fn maps the eval
split, whose pooled z-score of the means is `eval_shift`. TFT runs with its default TF2
tracing (force_tf_compat_v1=False) on the FnApiRunner in both running modes; nothing else
was needed with Beam 2.77.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import posixpath
import shutil
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs import progress, runner
from beam_jobs.flags import DEFAULT_NUM_SAMPLES
from beam_jobs.flags import build_training_data_parser as build_parser
from beam_jobs.io import files, stac, stac_search
from schemas import composite, examples, sensors
from schemas.grid import GridWindow, aoi_geometry, utm_epsg, window_for_geometry
from schemas.observations import Observations

log = logging.getLogger(__name__)

NAMESPACE = "build_training_data"
DEADLETTER = "deadletter"
LANDCOVER_PATTERN = "labels/landcover_{year}.tif"
POINT_LABELS_PATTERN = "labels/points_{year}.parquet"
SIM_PARAMS = "sim_params.json"
# Half the samples summarize their whole support period, half a random run of whole months.
FULL_PERIOD_FRACTION = 0.5
MIN_SUBPERIOD_MONTHS = 3
MAX_SUBPERIOD_MONTHS = 11
STATS_FILE = "stats.json"
DEADLETTER_FILE = "deadletter.jsonl"
TRANSFORM_FN_DIR = "transform_fn"
# Shard size target: raw bytes of a P x P x T example are about P * P * T * 84 (measured:
# 22.2 MB at P = 128, T = 16; all sources' bands, masks and metadata).
SHARD_BYTES = 256 * 2**20
BYTES_PER_PIXEL_FRAME = 84
SHARD_SUFFIX = ".tfrecord.gz"
# Records wait for their shard in `{prefix}.spill/` (WriteExamples), zlib level 1 (fast;
# the shard's gzip compresses them for good).
SPILL_DIR_SUFFIX = ".spill"
SPILL_SUFFIX = ".z"
SPILL_ZLIB_LEVEL = 1
SPLITS = ("train", "eval")


# ------------------------------------------------------------------------------- samples


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """One planned example: where, when, which split; small enough to ship to a worker."""

    sample_id: str
    split: str
    support: tuple[int, int]
    valid_period: tuple[int, int]
    seed: int
    window: GridWindow | None = None  # patch samples
    landcover: np.ndarray | None = None  # (P, P) class ids, -1 unknown (patch samples)
    class_id: int = examples.UNKNOWN_CLASS
    point_index: int | None = None  # point samples: index into the point table's points
    year: int | None = None  # patch samples: the year whose labels and class names apply

    def to_json(self) -> dict:
        """The spec as JSON-able data (without the land-cover patch), for dead letters."""
        out = {
            "sample_id": self.sample_id,
            "split": self.split,
            "support": list(self.support),
            "valid_period": list(self.valid_period),
            "seed": self.seed,
            "class_id": self.class_id,
        }
        if self.window is not None:
            out["window"] = self.window.to_dict()
        if self.point_index is not None:
            out["point_index"] = self.point_index
        if self.year is not None:
            out["year"] = self.year
        return out


def sample_seed(seed: int, index: int) -> int:
    """A per-sample seed derived from the job seed and the sample's index."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def draw_valid_period(
    support: tuple[int, int],
    rng: np.random.Generator,
    *,
    full_fraction: float = FULL_PERIOD_FRACTION,
) -> tuple[int, int]:
    """The whole support period, or (with 1 - full_fraction) a random run of whole months."""
    months = composite.month_bounds_ms(*support)
    full = (int(support[0]), int(support[1]))
    if rng.random() < full_fraction or len(months) <= MIN_SUBPERIOD_MONTHS:
        return full
    k = int(rng.integers(MIN_SUBPERIOD_MONTHS, min(MAX_SUBPERIOD_MONTHS, len(months) - 1) + 1))
    i = int(rng.integers(0, len(months) - k + 1))
    return months[i][0], months[i + k - 1][1]


def uniform_positions(
    height: int, width: int, *, num_samples: int, patch_size: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Top-left (row, col) of `num_samples` patches drawn uniformly inside an H x W region."""
    _check_fits(height, width, patch_size)
    rows = rng.integers(0, height - patch_size + 1, size=num_samples)
    cols = rng.integers(0, width - patch_size + 1, size=num_samples)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def stratified_positions(
    landcover: np.ndarray, *, num_samples: int, patch_size: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Top-left (row, col) and class of patches, equally many per class of the centre pixel.

    Args:
      landcover: (H, W) class ids; negative = unknown (never a stratum).
      num_samples: patches to draw; classes get num_samples // K each and the remainder goes
        to randomly chosen classes, one each.
      patch_size: P; a patch's class is the land cover at its centre pixel (P // 2, P // 2).
      rng: the random generator (reproducible draws).

    Returns:
      (row, col, class_id) per patch, classes in ascending order. A class with fewer
      possible positions than its quota is drawn with replacement.
    """
    lc = np.asarray(landcover)
    h, w = lc.shape
    _check_fits(h, w, patch_size)
    half = patch_size // 2
    centres = lc[half : h - patch_size + 1 + half, half : w - patch_size + 1 + half]
    classes = np.unique(centres[centres >= 0])
    if len(classes) == 0:
        raise ValueError("the land-cover map has no known class where a patch fits")
    quota = np.full(len(classes), num_samples // len(classes))
    quota[rng.permutation(len(classes))[: num_samples % len(classes)]] += 1
    out = []
    for k, q in zip(classes, quota, strict=True):
        rr, cc = np.nonzero(centres == k)
        pick = rng.choice(len(rr), size=int(q), replace=bool(q > len(rr)))
        out += [(int(rr[i]), int(cc[i]), int(k)) for i in pick]
    return out


def _check_fits(height: int, width: int, patch_size: int) -> None:
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"the region is {height} x {width} px, smaller than --patch-size {patch_size}"
        )


def eval_mask(n: int, eval_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: exactly round(n * eval_fraction) randomly chosen True (the eval split)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"--eval-fraction must be in [0, 1); got {eval_fraction}")
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(n * eval_fraction))]] = True
    return mask


# ------------------------------------------------------------------------------- regions


@dataclasses.dataclass(frozen=True)
class Region:
    """The grid window samples are drawn from, and its land-cover map if there is one."""

    window: GridWindow
    landcover: np.ndarray | None = None  # (H, W) int16 class ids over the window, -1 unknown


def read_landcover(path: str) -> tuple[GridWindow, np.ndarray]:
    """A land-cover GeoTIFF on the 10 m grid -> its window and (H, W) ids (-1 = nodata)."""
    import rasterio

    with rasterio.open(path) as ds:
        if ds.crs is None or ds.crs.to_epsg() is None:
            raise ValueError(f"{path}: land-cover map has no EPSG CRS")
        t = ds.transform
        window = GridWindow(ds.crs.to_epsg(), t.c, t.f, ds.width, ds.height, abs(t.a))
        raw = ds.read(1)
        lc = raw.astype(np.int16)
        if ds.nodata is not None:
            lc[raw == ds.nodata] = examples.UNKNOWN_CLASS
    return window, lc


def _intersect(outer: GridWindow, inner: GridWindow) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of `inner` clipped to `outer`, in outer's pixels."""
    ps = outer.pixel_size
    c0 = max(0, int(round((inner.x0 - outer.x0) / ps)))
    r0 = max(0, int(round((outer.y0 - inner.y0) / ps)))
    c1 = min(outer.width, int(round((inner.x0 - outer.x0) / ps)) + inner.width)
    r1 = min(outer.height, int(round((outer.y0 - inner.y0) / ps)) + inner.height)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"the AOI does not overlap the land-cover map {outer}")
    return r0, c0, r1, c1


def catalog_extent(stac_path: str):
    """The union of the catalog's (or item table's) item footprints (lon/lat), for runs
    without --bbox/--aoi."""
    import shapely

    from beam_jobs.io import stac

    cat = stac.StacCatalog.open(stac_path)
    boxes = [shapely.box(*r.bbox) for s in cat.sources for r in cat.item_refs(s) if r.bbox]
    if not boxes:
        raise ValueError(f"{stac_path}: no item has a bbox; give --bbox or --aoi")
    return shapely.union_all(boxes).envelope


def resolve_region(
    stac_path: str, year: int, *, bbox: str | None = None, aoi: str | None = None
) -> Region:
    """The sampling region of a year: the AOI (or the catalog's extent) on the 10 m grid,
    clipped to the year's land-cover map where one lies beside the catalog."""
    lc_path = posixpath.join(posixpath.dirname(stac_path), LANDCOVER_PATTERN.format(year=year))
    aoi_doc = files.read_json(aoi) if aoi else None
    geom = aoi_geometry(bbox, aoi_doc, aoi_name=aoi or "AOI") if (bbox or aoi) else None
    if FileSystems.exists(lc_path):
        map_window, lc = read_landcover(lc_path)
        if geom is None:
            return Region(map_window, lc)
        r0, c0, r1, c1 = _intersect(map_window, window_for_geometry(geom, map_window.epsg))
        return Region(map_window.subwindow(r0, c0, r1 - r0, c1 - c0), lc[r0:r1, c0:c1])
    if geom is None:
        geom = catalog_extent(stac_path)
    c = geom.centroid
    return Region(window_for_geometry(geom, utm_epsg(c.x, c.y)))


def load_class_names(stac_path: str, year: int) -> dict[int, str]:
    """Class id -> name beside the catalog: the `classes` of sim_params.json (every class),
    then labels/points_{year}.parquet (class_id, class_name) over it; {} if neither exists."""
    base = posixpath.dirname(stac_path)
    out: dict[int, str] = {}
    params = posixpath.join(base, SIM_PARAMS)
    if FileSystems.exists(params):
        with FileSystems.open(params) as f:
            classes = json.loads(f.read().decode()).get("classes")
        if isinstance(classes, Mapping):
            out.update({int(k): str(v) for k, v in classes.items()})
        elif isinstance(classes, list):
            for i, c in enumerate(classes):
                if isinstance(c, Mapping):
                    out[int(c.get("id", i))] = str(c.get("name", ""))
                else:
                    out[i] = str(c)
    points = posixpath.join(base, POINT_LABELS_PATTERN.format(year=year))
    if FileSystems.exists(points):
        import pyarrow.parquet as pq

        table = pq.read_table(points)
        if {"class_id", "class_name"} <= set(table.column_names):
            ids = table.column("class_id").to_pylist()
            names = table.column("class_name").to_pylist()
            out.update({int(i): str(n) for i, n in zip(ids, names, strict=True) if i is not None})
    return out


def plan_patch_samples(
    regions: Mapping[int, Region],
    *,
    num_samples: int,
    patch_size: int,
    eval_fraction: float,
    seed: int,
) -> list[SampleSpec]:
    """Patch samples over the years' regions: evenly split over years, then stratified."""
    years = sorted(regions)
    rng = np.random.default_rng(seed)
    per_year = [
        num_samples // len(years) + (i < num_samples % len(years)) for i in range(len(years))
    ]
    specs = []
    for year, n in zip(years, per_year, strict=True):
        region = regions[year]
        h, w = region.window.shape
        if region.landcover is not None:
            pos = stratified_positions(
                region.landcover, num_samples=n, patch_size=patch_size, rng=rng
            )
        else:
            pos = [
                (r, c, examples.UNKNOWN_CLASS)
                for r, c in uniform_positions(h, w, num_samples=n, patch_size=patch_size, rng=rng)
            ]
        support = runner.year_bounds_ms(year)
        for row, col, class_id in pos:
            index = len(specs)
            lc = None
            if region.landcover is not None:
                lc = region.landcover[row : row + patch_size, col : col + patch_size].copy()
            specs.append(
                SampleSpec(
                    sample_id=f"{year}_{index:07d}",
                    split="train",
                    support=support,
                    valid_period=draw_valid_period(support, rng),
                    seed=sample_seed(seed, index),
                    window=region.window.subwindow(row, col, patch_size, patch_size),
                    landcover=lc,
                    class_id=class_id,
                    year=year,
                )
            )
    is_eval = eval_mask(len(specs), eval_fraction, rng)
    return [
        dataclasses.replace(s, split="eval") if e else s
        for s, e in zip(specs, is_eval, strict=True)
    ]


def point_supports(obs: Observations, years: Sequence[int] | None) -> list[tuple[int, int]]:
    """Support periods for a point table: the given years, else the 12 calendar months from
    the month of its first acquisition."""
    if years:
        return [runner.year_bounds_ms(y) for y in years]
    times = [
        f.times_ms
        for s, f in obs.sources.items()
        if not sensors.get_sensor(s).is_static and f.num_frames
    ]
    if not times:
        raise ValueError("the point table has no time-varying observations; give --years")
    first = np.datetime64(int(min(t.min() for t in times)), "ms").astype("datetime64[M]")
    start = int(first.astype("datetime64[ms]").astype(np.int64))
    end = int((first + 12).astype("datetime64[ms]").astype(np.int64))
    return [(start, end)]


def plan_point_samples(
    num_points: int,
    supports: Sequence[tuple[int, int]],
    *,
    subperiods: int,
    num_samples: int | None,
    eval_fraction: float,
    seed: int,
) -> list[SampleSpec]:
    """P = 1 samples: per point (all, or `num_samples` drawn) and support, the whole period
    plus `subperiods` random runs of months. A point's samples share one split."""
    rng = np.random.default_rng(seed)
    points = np.arange(num_points)
    if num_samples is not None and num_samples < num_points:
        points = np.sort(rng.choice(num_points, size=num_samples, replace=False))
    is_eval = eval_mask(len(points), eval_fraction, rng)
    specs = []
    for point, ev in zip(points, is_eval, strict=True):
        for support in supports:
            periods = [tuple(support)] + [
                draw_valid_period(support, rng, full_fraction=0.0) for _ in range(subperiods)
            ]
            for period in periods:
                index = len(specs)
                specs.append(
                    SampleSpec(
                        sample_id=f"p{int(point):07d}_{index:07d}",
                        split="eval" if ev else "train",
                        support=(int(support[0]), int(support[1])),
                        valid_period=(int(period[0]), int(period[1])),
                        seed=sample_seed(seed, index),
                        point_index=int(point),
                    )
                )
    return specs


# ------------------------------------------------------------------------------- examples


def stat_key(source: str, band: str, moment: str) -> str:
    """TFT feature name of one band's moment (TFT names must be plain identifiers)."""
    return f"{source}__{band}__{moment}"


def band_moments(features: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per band of every source: count, mean and M2 (sum of squared deviations) of the
    example's usable values (valid pixel and valid band), in float64."""
    out: dict[str, float] = {}
    for source in sensors.SOURCE_IDS:
        values = features[f"{source}/values"]
        usable = (
            features[f"{source}/valid"][..., None]
            & features[f"{source}/band_valid"][:, None, None, :]
        )
        for c, band in enumerate(sensors.get_sensor(source).band_names):
            x = values[..., c][usable[..., c]].astype(np.float64)
            n = x.size
            mean = float(x.mean()) if n else 0.0
            m2 = float(np.square(x - mean).sum()) if n else 0.0
            out[stat_key(source, band, "count")] = int(n)
            out[stat_key(source, band, "mean")] = mean
            out[stat_key(source, band, "m2")] = m2
    return out


def has_observations(features: Mapping[str, np.ndarray]) -> bool:
    """True when some time-varying source has at least one valid pixel."""
    return any(
        bool(features[f"{s}/valid"].any())
        for s in sensors.SOURCE_IDS
        if not sensors.get_sensor(s).is_static
    )


def build_example(
    obs: Observations,
    spec: SampleSpec,
    *,
    max_frames: int,
    composite_mode: str,
    location: examples.Location,
    class_names: Mapping[int, str],
) -> dict[str, np.ndarray]:
    """Observations of one sample -> example features (composited first if asked)."""
    if composite_mode != "none":
        obs = composite.composites(obs.select_time(*spec.support), composite_mode)
    return examples.example_features(
        obs,
        t_start_ms=spec.valid_period[0],
        t_end_ms=spec.valid_period[1],
        max_frames=max_frames,
        location=location,
        support_ms=spec.support,
        landcover=spec.landcover,
        class_id=spec.class_id,
        class_names=class_names,
        sample_id=spec.sample_id,
        seed=spec.seed,
    )


def point_observations(obs: Observations, index: int) -> Observations:
    """The single point `index` of a point set, as a 1 x 1 Observations."""
    return Observations(
        sources={k: v.crop(slice(index, index + 1), slice(0, 1)) for k, v in obs.sources.items()},
        point_ids=obs.point_ids[index : index + 1],
        lon=obs.lon[index : index + 1],
        lat=obs.lat[index : index + 1],
        errors=list(obs.errors),
    )


def deadletter_record(spec: SampleSpec, reason: str) -> str:
    return json.dumps({"sample_id": spec.sample_id, "reason": reason, "spec": spec.to_json()})


# ------------------------------------------------------------------------------- stats


def preprocessing_fn(inputs: dict) -> dict:
    """tf.Transform: pooled per-band mean/std over the training split's valid values.

    Inputs per example and band: count, mean, m2. Outputs per example and band: the global
    mean, std and count (analyzer constants) and z, the example's mean in global std units.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    def f32(t):
        return tf.cast(t, tf.float32)

    out = {}
    for source in sensors.SOURCE_IDS:
        bands = sensors.get_sensor(source).band_names
        # One analyzer per moment and source over its bands stacked (B, bands), not one per
        # band: three per source instead of three per band in the pipeline.
        n = tf.stack([inputs[stat_key(source, b, "count")] for b in bands], axis=1)
        m32 = tf.stack([inputs[stat_key(source, b, "mean")] for b in bands], axis=1)
        m2 = tf.stack([inputs[stat_key(source, b, "m2")] for b in bands], axis=1)
        # Sums in float64: the runner combines partial sums in no fixed order, and float64
        # rounding differences (~1e-16) vanish in the float32 outputs (TFT outputs no
        # float64), so a rebuild writes the same statistics and trains the same model.
        nf = tf.cast(n, tf.float64)
        m = tf.cast(m32, tf.float64)
        total = tft.sum(n, reduce_instance_dims=False, name=f"{source}__count")
        total_f = tf.cast(total, tf.float64)
        mean = tf.math.divide_no_nan(
            tft.sum(nf * m, reduce_instance_dims=False, name=f"{source}__sum"), total_f
        )
        # Second pass on the first's mean: a sum of non-negative terms, no cancellation.
        m2_total = tft.sum(
            tf.cast(m2, tf.float64) + nf * tf.square(m - mean),
            reduce_instance_dims=False,
            name=f"{source}__m2",
        )
        var = tf.math.divide_no_nan(m2_total, total_f)
        # No valid value at all: identity normalization rather than 0/0.
        std = tf.where(total > 0, tf.sqrt(var), tf.constant(1.0, tf.float64))
        for i, band in enumerate(bands):
            mi, ni = m[:, i], n[:, i]
            out[stat_key(source, band, "mean")] = f32(tf.zeros_like(mi) + mean[i])
            out[stat_key(source, band, "std")] = f32(tf.zeros_like(mi) + std[i])
            out[stat_key(source, band, "count")] = tf.zeros_like(ni) + total[i]
            out[stat_key(source, band, "z")] = f32(tf.math.divide_no_nan(mi - mean[i], std[i]))
            out[stat_key(source, band, "n")] = ni
    return out


def raw_metadata():
    """DatasetMetadata of the moment instances fed to tf.Transform."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    spec = {}
    for source in sensors.SOURCE_IDS:
        for band in sensors.get_sensor(source).band_names:
            spec[stat_key(source, band, "count")] = tf.io.FixedLenFeature([], tf.int64)
            spec[stat_key(source, band, "mean")] = tf.io.FixedLenFeature([], tf.float32)
            spec[stat_key(source, band, "m2")] = tf.io.FixedLenFeature([], tf.float32)
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))


def stats_from_transformed(row: Mapping[str, object] | None) -> dict[str, dict[str, dict]]:
    """One transformed training instance -> {source: {band: {mean, std, count}}}."""
    out: dict[str, dict[str, dict]] = {}
    for source in sensors.SOURCE_IDS:
        out[source] = {}
        for band in sensors.get_sensor(source).band_names:
            if row is None:
                out[source][band] = {"mean": 0.0, "std": 1.0, "count": 0}
                continue
            out[source][band] = {
                "mean": float(row[stat_key(source, band, "mean")]),
                "std": float(row[stat_key(source, band, "std")]),
                "count": int(row[stat_key(source, band, "count")]),
            }
    return out


class _EvalShiftFn(beam.CombineFn):
    """Transformed eval instances -> per band, count-weighted mean of z (eval mean - train
    mean, in train std units)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, row):
        for source in sensors.SOURCE_IDS:
            for band in sensors.get_sensor(source).band_names:
                n = float(row[stat_key(source, band, "n")])
                z = float(row[stat_key(source, band, "z")])
                key = (source, band)
                s, w = acc.get(key, (0.0, 0.0))
                acc[key] = (s + n * z, w + n)
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            for key, (s, w) in acc.items():
                s0, w0 = out.get(key, (0.0, 0.0))
                out[key] = (s0 + s, w0 + w)
        return out

    def extract_output(self, acc):
        out: dict[str, dict[str, float]] = {}
        for (source, band), (s, w) in sorted(acc.items()):
            if w > 0:  # rounded: a diagnostic, and the same on a rebuild
                out.setdefault(source, {})[band] = round(s / w, 6)
        return out


# ------------------------------------------------------------------------------- DoFns


class _BuildExamplesFn(beam.DoFn):
    """Shared by both inputs: count, build, route failures to the dead-letter output."""

    def __init__(
        self, *, max_frames: int, composite_mode: str, progress_of: tuple[str, int] | None = None
    ):
        self._max_frames = max_frames
        self._composite = composite_mode
        self._progress_of = progress_of  # (run id, samples): beam_jobs/progress.py
        self._progress = None
        self._written = Metrics.counter(NAMESPACE, "samples_written")
        self._failed = Metrics.counter(NAMESPACE, "samples_failed")
        self._empty = Metrics.counter(NAMESPACE, "samples_without_observations")
        self._frames = {
            s: Metrics.distribution(NAMESPACE, f"frames_{s}") for s in sensors.SOURCE_IDS
        }

    def setup(self):
        if self._progress_of:
            run_id, total = self._progress_of
            self._progress = progress.tracker(run_id, "build-training-data", total, "samples")

    def _tick(self) -> None:
        if self._progress:
            self._progress.add(1)

    def _emit(
        self,
        spec: SampleSpec,
        obs: Observations,
        location: examples.Location,
        class_names: Mapping[int, str],
    ) -> Iterator:
        if obs.errors:
            self._failed.inc()
            self._tick()
            reason = "read errors: " + "; ".join(obs.errors[:5])
            yield beam.pvalue.TaggedOutput(DEADLETTER, deadletter_record(spec, reason))
            return
        feats = build_example(
            obs,
            spec,
            max_frames=self._max_frames,
            composite_mode=self._composite,
            location=location,
            class_names=class_names,
        )
        self._tick()
        if not has_observations(feats):
            self._empty.inc()
            self._failed.inc()
            reason = "no valid observation of any time-varying source in the support period"
            yield beam.pvalue.TaggedOutput(DEADLETTER, deadletter_record(spec, reason))
            return
        for s in sensors.SOURCE_IDS:
            self._frames[s].update(int(feats[f"{s}/frame_valid"].sum()))
        self._written.inc()
        yield spec.split, examples.serialize_example(feats), band_moments(feats)


class BuildPatchExamplesFn(_BuildExamplesFn):
    """SampleSpec of a patch -> (split, serialized example, band moments) | dead letter."""

    def __init__(
        self,
        stac_path: str,
        *,
        max_frames: int,
        composite_mode: str,
        class_names: Mapping[int, Mapping[int, str]],
        progress_of: tuple[str, int] | None = None,
        provider: str | None = None,
        requester_pays: bool = False,
        sign: bool = True,
    ):
        super().__init__(
            max_frames=max_frames, composite_mode=composite_mode, progress_of=progress_of
        )
        self._stac_path = stac_path
        self._access = {"provider": provider, "requester_pays": requester_pays, "sign": sign}
        self._class_names = {int(k): dict(v) for k, v in class_names.items()}
        self._catalog = None

    def setup(self):
        from beam_jobs.io import stac

        super().setup()
        self._catalog = stac.StacCatalog.open(self._stac_path, **self._access)

    def process(self, spec: SampleSpec) -> Iterator:
        from beam_jobs.io import stac

        try:
            obs = stac.read_observations(self._catalog, spec.window, *spec.support)
        except Exception as e:  # an I/O boundary: any failure is this sample's, dead-letter it
            self._failed.inc()
            self._tick()
            reason = f"read failed: {type(e).__name__}: {e}"
            yield beam.pvalue.TaggedOutput(DEADLETTER, deadletter_record(spec, reason))
            return
        yield from self._emit(
            spec,
            obs,
            examples.location_for_window(spec.window),
            self._class_names.get(spec.year, {}),
        )


class BuildPointExamplesFn(_BuildExamplesFn):
    """SampleSpec of a point -> (split, serialized example, band moments) | dead letter."""

    def __init__(
        self,
        table_path: str,
        *,
        max_frames: int,
        composite_mode: str,
        progress_of: tuple[str, int] | None = None,
    ):
        super().__init__(
            max_frames=max_frames, composite_mode=composite_mode, progress_of=progress_of
        )
        self._table_path = table_path
        self._obs: Observations | None = None

    def setup(self):
        from beam_jobs.io import points

        super().setup()
        # One read per worker; the table is small next to the examples built from it.
        self._obs = points.read_point_table(self._table_path)

    def process(self, spec: SampleSpec) -> Iterator:
        obs = self._obs
        i = spec.point_index
        location = examples.location_for_point(
            float(obs.lon[i]), float(obs.lat[i]), str(obs.point_ids[i])
        )
        yield from self._emit(spec, point_observations(obs, i), location, {})


# ------------------------------------------------------------------------------- PTransforms


def num_shards(n_examples: int, patch_size: int, max_frames: int) -> int:
    """Shards for `n_examples` planned examples: about SHARD_BYTES of raw example each."""
    per_example = max(1, patch_size * patch_size * max_frames * BYTES_PER_PIXEL_FRAME)
    return max(1, math.ceil(n_examples / max(1, SHARD_BYTES // per_example)))


def shard_path(prefix: str, shard: int, n: int) -> str:
    return f"{prefix}-{shard:05d}-of-{n:05d}{SHARD_SUFFIX}"


def _record_key(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()


def write_shard(path: str, records: Iterable[bytes]) -> int:
    """Write records to a gzip TFRecord file atomically (`files.atomic_target`); their count."""
    from apache_beam.io.tfrecordio import _TFRecordUtil

    n = 0
    with (
        files.atomic_target(path) as target,
        FileSystems.create(target, compression_type=CompressionTypes.GZIP) as f,
    ):
        for rec in records:
            _TFRecordUtil.write_record(f, rec)
            n += 1
    return n


def spill_path(spill_dir: str, key: bytes) -> str:
    """Where a record with SHA-256 `key` waits for its shard: named by its hash."""
    return posixpath.join(spill_dir, key.hex() + SPILL_SUFFIX)


def spill_record(spill_dir: str, key: bytes, record: bytes) -> str:
    """Write one record (zlib level 1) to its spill file, atomically; the file's path."""
    path = spill_path(spill_dir, key)
    with (
        files.atomic_target(path) as target,
        FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as f,
    ):
        f.write(zlib.compress(record, SPILL_ZLIB_LEVEL))
    return path


def read_spilled(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return zlib.decompress(f.read())


def remove_spill_dir(spill_dir: str) -> None:
    """Delete a spill folder and everything in it (an object store: every object under it)."""
    if files.is_remote(spill_dir):
        matched = FileSystems.match([posixpath.join(spill_dir, "*")])[0].metadata_list
        if matched:
            FileSystems.delete([m.path for m in matched])
    elif os.path.isdir(spill_dir):
        shutil.rmtree(spill_dir)


class _SpillFn(beam.DoFn):
    """(split, record, ...) -> (shard, (sha256, spill path)); the record goes to a file."""

    def __init__(self, spill_dir: str, n: int):
        self._spill_dir, self._n = spill_dir, n

    def process(self, element) -> Iterator:
        record = element[1]
        key = _record_key(record)
        path = spill_record(self._spill_dir, key, record)
        yield int.from_bytes(key[:8], "big") % self._n, (key, path)


class _WriteShardFn(beam.DoFn):
    """(shard, [(sha256, spill path)]) -> the shard file, records in the order of their
    SHA-256, read back one at a time."""

    def __init__(self, prefix: str, n: int):
        self._prefix, self._n = prefix, n

    def process(self, item) -> Iterator[int]:
        shard, keyed = item
        ordered = (read_spilled(path) for _, path in sorted(keyed))
        write_shard(shard_path(self._prefix, shard, self._n), ordered)
        yield shard


class _WriteEmptyShardsFn(beam.DoFn):
    """Every shard index nobody wrote (all its examples failed or none hashed there) -> an
    empty shard file, so the set is always `-00000-of-N` .. `-(N-1)-of-N`."""

    def __init__(self, prefix: str, n: int):
        self._prefix, self._n = prefix, n

    def process(self, _, written: Sequence[int]) -> Iterator[int]:
        for shard in sorted(set(range(self._n)) - set(written)):
            write_shard(shard_path(self._prefix, shard, self._n), [])
            yield shard


class WriteExamples(beam.PTransform):
    """Serialized examples -> gzip TFRecord shards `{prefix}-SSSSS-of-NNNNN.tfrecord.gz`.

    Deterministic: an example's shard and its place in the shard follow from the SHA-256 of
    its bytes, so the same examples give byte-identical shards whatever the runner, worker
    count or bundle order (Beam's own sinks write in arrival order). The training input
    pipeline reads shards in name order, so a rebuild trains to the same parameters.

    Memory: records do not travel through the shuffle. Where each is built it is written
    (zlib level 1) to `{prefix}.spill/{sha256}.z`; the shuffle carries (shard, (sha256,
    path)), and the shard writer reads its records back one at a time, so no worker (nor
    the local runner's driver, which buffers the shuffle) holds a shard's records at once.
    The spill folder is deleted once every shard is written.
    """

    def __init__(self, prefix: str, num_shards: int):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._prefix = prefix
        self._n = num_shards

    def expand(self, pcoll):
        n = self._n
        spill_dir = self._prefix + SPILL_DIR_SUFFIX
        written = (
            pcoll
            | "Spill" >> beam.ParDo(_SpillFn(spill_dir, n))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self._prefix, n))
        )
        empty = (
            pcoll.pipeline
            | "Once" >> beam.Create([None])
            | "WriteEmptyShards"
            >> beam.ParDo(_WriteEmptyShardsFn(self._prefix, n), beam.pvalue.AsList(written))
        )
        _ = (
            pcoll.pipeline
            | "AfterShards" >> beam.Create([None])
            | "RemoveSpill"
            >> beam.Map(lambda _, done: remove_spill_dir(spill_dir), beam.pvalue.AsList(written))
        )
        return written, empty


class NormalizationStats(beam.PTransform):
    """(train, eval) examples -> transform_fn written to disk; returns (stats, eval_shift).

    tf.Transform analyzes the training split's band moments and transforms the eval split's
    with the same graph.
    """

    def __init__(self, transform_fn_dir: str, temp_dir: str):
        super().__init__()
        self._transform_fn_dir = transform_fn_dir
        self._temp_dir = temp_dir

    def expand(self, splits):
        import tensorflow_transform.beam as tft_beam

        train, eval_ = splits
        meta = raw_metadata()
        with tft_beam.Context(temp_dir=self._temp_dir):
            train_m = train | "TrainMoments" >> beam.Map(lambda e: e[2])
            eval_m = eval_ | "EvalMoments" >> beam.Map(lambda e: e[2])
            (transformed, _), transform_fn = (
                train_m,
                meta,
            ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            transformed_eval, _ = (
                (eval_m, meta),
                transform_fn,
            ) | "TransformEval" >> tft_beam.TransformDataset()
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
                self._transform_fn_dir
            )
        stats = (
            transformed
            | "OneInstance" >> beam.combiners.Sample.FixedSizeGlobally(1)
            | "ToStats" >> beam.Map(lambda rows: stats_from_transformed(rows[0] if rows else None))
        )
        shift = transformed_eval | "EvalShift" >> beam.CombineGlobally(_EvalShiftFn())
        return stats, shift


class WriteStats(beam.PTransform):
    """Stats, eval shift and split sizes (singleton PCollections) -> stats.json, atomically."""

    def __init__(self, path: str, meta: Mapping[str, object]):
        super().__init__()
        self._path = path
        self._meta = dict(meta)

    def expand(self, inputs):
        stats, shift, n_train, n_eval = inputs
        path, meta = self._path, self._meta

        def write(_, stats, shift, n_train, n_eval):
            doc = {"schema_version": examples.SCHEMA_VERSION, **meta}
            doc["examples"] = {"train": int(n_train), "eval": int(n_eval)}
            doc.update(stats if stats is not None else stats_from_transformed(None))
            doc["eval_shift"] = shift or {}
            runner.write_bytes_atomic(
                path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
            )
            return path

        return (
            inputs[0].pipeline
            | "Once" >> beam.Create([None])
            | "WriteJson"
            >> beam.Map(
                write,
                stats=beam.pvalue.AsSingleton(stats, default_value=None),
                shift=beam.pvalue.AsSingleton(shift, default_value={}),
                n_train=beam.pvalue.AsSingleton(n_train, default_value=0),
                n_eval=beam.pvalue.AsSingleton(n_eval, default_value=0),
            )
        )


class BuildTrainingData(beam.PTransform):
    """SampleSpecs -> shards, transform_fn, stats.json and deadletter.jsonl under `out`."""

    def __init__(
        self,
        build_fn: beam.DoFn,
        out: str,
        *,
        temp_dir: str,
        meta: Mapping,
        shards: Mapping[str, int] | None = None,
    ):
        super().__init__()
        self._build_fn = build_fn
        self._out = out
        self._temp_dir = temp_dir
        self._meta = meta
        self._shards = {s: 1 for s in SPLITS} | dict(shards or {})

    def expand(self, specs):
        out = self._out
        built = (
            specs
            | "Redistribute" >> beam.Reshuffle()
            | "BuildExamples"
            >> beam.ParDo(self._build_fn).with_outputs(DEADLETTER, main="examples")
        )
        train, eval_ = built.examples | "SplitTrainEval" >> beam.Partition(
            lambda e, _: SPLITS.index(e[0]), len(SPLITS)
        )
        _ = train | "WriteTrain" >> WriteExamples(
            posixpath.join(out, "train"), self._shards["train"]
        )
        _ = eval_ | "WriteEval" >> WriteExamples(posixpath.join(out, "eval"), self._shards["eval"])
        stats, shift = (train, eval_) | "NormalizationStats" >> NormalizationStats(
            posixpath.join(out, TRANSFORM_FN_DIR), self._temp_dir
        )
        n_train = train | "CountTrain" >> beam.combiners.Count.Globally()
        n_eval = eval_ | "CountEval" >> beam.combiners.Count.Globally()
        _ = (stats, shift, n_train, n_eval) | "WriteStats" >> WriteStats(
            posixpath.join(out, STATS_FILE), self._meta
        )
        _ = built[DEADLETTER] | "WriteDeadLetters" >> beam.io.WriteToText(
            posixpath.join(out, DEADLETTER_FILE), shard_name_template="", num_shards=1
        )
        return built


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    specs: Sequence[SampleSpec],
    build_fn: beam.DoFn,
    *,
    out: str,
    temp_dir: str,
    meta: Mapping[str, object],
) -> beam.Pipeline:
    """Add the job to `pipeline`: planned samples -> examples, stats and dead letters.

    Shard counts follow from the planned samples per split and the example size
    (`num_shards`), so they are fixed before anything runs.
    """
    shards = {
        s: num_shards(
            sum(spec.split == s for spec in specs),
            int(meta.get("patch_size", 1)),
            int(meta.get("max_frames", 1)),
        )
        for s in SPLITS
    }
    _ = (
        pipeline
        | "Samples" >> beam.Create(list(specs))
        | "BuildTrainingData"
        >> BuildTrainingData(build_fn, out, temp_dir=temp_dir, meta=meta, shards=shards)
    )
    return pipeline


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    if args.stac and not args.years:
        p.error("--stac needs --years")
    if args.stac_api and not args.years:
        p.error("--stac-api needs --years")
    if args.bbox and args.aoi:
        p.error("give at most one of --bbox and --aoi")
    if args.observations and (args.bbox or args.aoi):
        p.error("--bbox/--aoi apply to --stac and --stac-api only")
    if args.stac_api and not (args.bbox or args.aoi):
        p.error("--stac-api needs --bbox or --aoi (the area searched)")
    try:
        remote = not runner.is_local(runner.pipeline_options(beam_args))
        args.collection_list = stac_search.check_search_options(
            args.stac_api, args.collections, remote_run=remote
        )
    except ValueError as e:
        p.error(str(e))
    if args.patch_size is None:
        args.patch_size = examples.DEFAULT_PATCH_SIZE if args.stac or args.stac_api else 1
    if args.observations and args.patch_size != 1:
        p.error("point tables build P = 1 examples; --patch-size must be 1")
    if args.patch_size < 1 or args.max_frames < 1:
        p.error("--patch-size and --max-frames must be >= 1")
    if args.num_samples is not None and args.num_samples < 1:
        p.error("--num-samples must be >= 1")
    return args, beam_args


def _search_api(args: argparse.Namespace, out: str) -> str:
    """Search --stac-api over the AOI and --years; write the items found as the run's item
    table in `out` and return its path."""
    geometry = aoi_geometry(args.bbox, files.read_json(args.aoi) if args.aoi else None)
    years = runner.parse_years(args.years)
    try:
        found = stac_search.search_items(
            args.stac_api,
            args.collection_list,
            geometry=geometry,
            start_ms=runner.year_bounds_ms(years[0])[0],
            end_ms=runner.year_bounds_ms(years[-1])[1],
        )
    except stac_search.StacApiError as e:
        raise SystemExit(f"earthembed build-training-data: {e}") from None
    path = posixpath.join(out, stac_search.SEARCH_ITEMS_FILE)
    stac.write_item_table(found, path)
    return path


def _existing_outputs(out: str) -> list[str]:
    patterns = [posixpath.join(out, f"{s}-*{SHARD_SUFFIX}") for s in SPLITS]
    patterns.append(posixpath.join(out, STATS_FILE))
    found = []
    for result in FileSystems.match(patterns):
        found += [m.path for m in result.metadata_list]
    return found


def _remove_stale(out: str, started: float) -> None:
    """Delete shards of an earlier run (older than this run's start) once this one is done."""
    patterns = [posixpath.join(out, f"{s}-*{SHARD_SUFFIX}") for s in SPLITS]
    stale = [
        m.path
        for result in FileSystems.match(patterns)
        for m in result.metadata_list
        if m.last_updated_in_seconds < started
    ]
    if stale:
        log.info("removing %d shards of an earlier run", len(stale))
        FileSystems.delete(stale)


def _shard_bytes(out: str, split: str) -> int:
    pattern = posixpath.join(out, f"{split}-*{SHARD_SUFFIX}")
    return sum(m.size_in_bytes for m in FileSystems.match([pattern])[0].metadata_list)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed build-training-data`."""
    args, beam_args = _parse_args(argv)
    runner.setup_logging(args.verbose)
    out = args.out.rstrip("/")
    if not FileSystems.exists(out):
        FileSystems.mkdirs(out)
    existing = _existing_outputs(out)
    if existing and not args.overwrite:
        raise SystemExit(
            f"earthembed build-training-data: {out} already holds a build ({len(existing)} files, "
            "e.g. " + existing[0] + "); pass --overwrite to replace it"
        )
    started = time.time()

    meta: dict[str, object] = {
        "patch_size": args.patch_size,
        "max_frames": args.max_frames,
        "composite": args.composite,
        "seed": args.seed,
    }
    source = args.stac
    if args.stac_api:  # searched once, here: the workers read what was found as a table
        source = _search_api(args, out)
    if source:
        years = runner.parse_years(args.years)
        regions = {y: resolve_region(source, y, bbox=args.bbox, aoi=args.aoi) for y in years}
        specs = plan_patch_samples(
            regions,
            num_samples=args.num_samples or DEFAULT_NUM_SAMPLES,
            patch_size=args.patch_size,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
        )
        class_names = {y: load_class_names(source, y) for y in years}
        build_fn = BuildPatchExamplesFn(
            source,
            max_frames=args.max_frames,
            composite_mode=args.composite,
            class_names=class_names,
            progress_of=(uuid.uuid4().hex, len(specs)),
            provider=args.provider,
            requester_pays=args.requester_pays,
            sign=not args.no_sign,
        )
        meta.update(
            source=args.stac or f"{args.stac_api} ({','.join(args.collection_list)})",
            years=years,
            stratified={str(y): regions[y].landcover is not None for y in years},
        )
    else:
        from beam_jobs.io import points

        table = points.read_point_table(args.observations)
        years = runner.parse_years(args.years) if args.years else None
        specs = plan_point_samples(
            len(table.point_ids),
            point_supports(table, years),
            subperiods=args.subperiods,
            num_samples=args.num_samples,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
        )
        build_fn = BuildPointExamplesFn(
            args.observations,
            max_frames=args.max_frames,
            composite_mode=args.composite,
            progress_of=(uuid.uuid4().hex, len(specs)),
        )
        meta.update(patch_size=1, source=args.observations, points=len(table.point_ids))
    log.info("planned %d samples", len(specs))

    temp_dir = posixpath.join(out, ".tft_tmp")
    options = runner.pipeline_options(beam_args)
    pipeline = build_pipeline(
        runner.create_pipeline(options), specs, build_fn, out=out, temp_dir=temp_dir, meta=meta
    )
    result = pipeline.run()
    result.wait_until_finish()
    _remove_stale(out, started)
    if FileSystems.exists(temp_dir):
        FileSystems.delete([temp_dir])

    counts = _counters(result)
    n_bytes = _shard_bytes(out, "train") + _shard_bytes(out, "eval")
    written = counts.get("samples_written", 0)
    elapsed = time.time() - started
    log.info(
        "wrote %d examples (%d failed) in %.1f s: %.2f examples/s, %.0f bytes/example",
        written,
        counts.get("samples_failed", 0),
        elapsed,
        written / elapsed if elapsed else math.nan,
        n_bytes / written if written else math.nan,
    )
    return 0


def _counters(result) -> dict[str, int]:
    """Committed counter values of this job's namespace (empty if the runner gives none)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        q = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except (AttributeError, NotImplementedError):
        return {}
    return {c.key.metric.name: int(c.committed or 0) for c in q["counters"]}
