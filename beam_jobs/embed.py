"""AOI + year (or period) -> embedding tiles: int8 COG, quality sidecar, GeoParquet, STAC.

Runbook
-------
Locally (Python FnApiRunner; add `--direct_num_workers 2 --direct_running_mode
multi_processing` to use two cores):

    earthembed embed --stac /tmp/demo_sim/catalog.json --aoi demo_aoi.geojson --year 2023 \\
        --tile-size 256 --out /tmp/demo_emb            # the shipped tiny model by default

    earthembed embed --stac /tmp/demo_sim/catalog.json --bbox 4.60,50.58,4.64,50.60 \\
        --period 2023-04-01/2024-04-01 --model model/weights/tiny --formats cog,stac \\
        --out /tmp/demo_emb_spring

From a STAC API instead of a static catalog (`--stac items.parquet` reads a stac-geoparquet
item table the same way; a collection id that is not a registry source id is read through
its provider profile):

    earthembed embed --stac-api https://earth-search.aws.element84.com/v1 \\
        --collections sentinel-2-l2a,cop-dem-glo-30 --bbox 4.60,50.58,4.64,50.60 --year 2023 \\
        --out /tmp/emb_api

On Dataflow (GPU workers; the flex-template image carries the package and the bundle):

    earthembed embed --stac gs://bucket/catalog/catalog.json --aoi gs://bucket/aoi.geojson \\
        --year 2023 --model /opt/earthembed/model/weights/base --tile-size 8192 \\
        --batch-size 64 --bf16 --share-model --out gs://bucket/embeddings/v1 \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --dataflow_service_options \\
            "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" \\
        --setup_file ./setup.py

Outputs in --out (`LABEL` is the year, or `YYYYMMDD_YYYYMMDD` for another period):

| path | what |
|---|---|
| `LABEL/{zone}{N/S}/{tile_id}.tif` | 64 int8 bands A00..A63, nodata -128, renormalized overviews |
| `LABEL/{zone}{N/S}/{tile_id}_quality.tif` | obs counts per source, clear fraction, confidence |
| `LABEL/{zone}{N/S}/{tile_id}.parquet` | GeoParquet 1.1, a row per valid pixel, spatial order |
| `LABEL/{zone}{N/S}/{tile_id}.json` | the tile's STAC item |
| `LABEL/{zone}{N/S}/{tile_id}.done.json` | the tile's summary, written last when all its chips succeeded |
| `LABEL/{zone}{N/S}/{tile_id}.failed.json` | instead, when some chips failed: re-embedded on rerun |
| `collection.json` | STAC collection linking every item |
| `deadletter.jsonl` | one line per failed chip: chip_id, tile_id, error |
| `manifest.json` | tiles, counts, model version and sha256, period, options; `runs`: every run |
| `stac_items.parquet` | with `--stac-api`: the items found (stac-geoparquet), the workers' catalog |
| `LOCK` | while a run writes: its run id, pid, host, start time (one writer per --out) |

How it works: the AOI is split by UTM zone and covered by tiles of the 10 m grid; a tile is
cut into chips of `--chip-size` core pixels plus `--halo` pixels of context on each side (the
model sees chip + 2 halo, only the core is kept), chips whose core misses the AOI are left
nodata; chips are read from the catalog over the whole period in blocks of `--read-block`
x `--read-block` neighbours (one `read_observations` call on the block's window, halos
included, then cut into chip windows exactly as if each were read alone: reading costs mostly
per opened asset, not per pixel) by a reader thread that also prepares the chips' model inputs
while the model runs the chips before them (`--prefetch` chips ahead; 0 reads in line and the
handler prepares; beam_jobs/prefetch.py), embedded by RunInference with the Flax handler
(beam_jobs/inference.py: the bundle loaded once per process, or once per VM with
`--share-model`, fixed batches of `--batch-size` chips), quantized, and grouped by tile; a
tile's files are written when all its chips are in.

Checks before anything runs (exit code 2, one line naming the option): options no job or
Beam takes (`--batchsize`), --out (not a file, not http://), --stac (file:// is a path), the
AOI (a valid Polygon or MultiPolygon, lon/lat order), and the request against the catalog: the
AOI must touch the catalog's items (a lat/lon swap is named as such), and the period must hold
items of at least one time-varying source. A run that ends with no valid pixel exits 1.

Resuming: every file is written under a temporary name and renamed (or, on object stores,
published when closed), and `{tile_id}.done.json` is written after all the tile's other files,
only when all its chips succeeded (`{tile_id}.failed.json` otherwise). A rerun skips a tile
whose done marker has the same key (model sha256, period, sources, chip layout, quantization,
compute dtype, and the tile's chips inside the AOI: a wider AOI re-embeds the tiles it
changes; not the batch size), lists the requested formats, and whose files are all there; a
tile with failed chips is embedded again (`--no-retry-failed` keeps it as it is); any other
tile is embedded again and its files replaced. So a run that dies part way leaves whole files
only, and a rerun ends with the same outputs as an uninterrupted run. The markers also carry
the tile's counts and dead letters, so the collection, `deadletter.jsonl` and the manifest are
rebuilt from all tiles, skipped or not; the manifest's `runs` lists every run into --out.

One writer per --out: a run holds `--out/LOCK`; a second run into the same --out stops with
exit code 2 naming the first; a lock left by a dead process on the same host is taken over
with a warning (saying the previous run died, e.g. killed for memory). At start the run
deletes what killed writers left (`*.tmp-*` files and their scratch folders). A worker process
that dies (exit 137: out of memory) ends the run with a message saying so and how to resume.

Failures: a read block whose read raises is read again (`READ_ATTEMPTS` in all, a transient
error recovers with the same outputs); a chip whose read still raised, whose batch failed in
the model, or whose embedding came out non-finite (NaN/inf where the model saw data) is
dead-lettered with the reason (the underlying GDAL/libtiff message, not rasterio's "see
previous exception"), counted in `chips_failed`, and left nodata. A corrupt or missing asset
invalidates only its own frame (the reader records it): the chips that read it are embedded
from the other frames and dead-lettered as `embedded: true` with the asset named, counted in
`chips_partial`, so the tile is retried once the asset is fixed. Values that are not
measurements (outside the band's physical range, saturated) are masked at read and counted
(`values_masked`). The tile is still written. Beam counters (namespace `embed`): chips,
pixels, chips_failed, chips_partial, values_masked, chips_outside_aoi, tiles_written,
tiles_skipped. A tile with failed or partial chips is written with `.failed.json`, not
its done marker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import posixpath
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import apache_beam as beam
import numpy as np
import shapely
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from beam_jobs import inference, prefetch, progress, runner
from beam_jobs.flags import DEFAULT_CHIP_SIZE as DEFAULT_CHIP_SIZE  # re-exported: benchmarks
from beam_jobs.flags import DEFAULT_HALO as DEFAULT_HALO
from beam_jobs.flags import DEFAULT_MODEL as DEFAULT_MODEL
from beam_jobs.flags import embed_parser as build_parser
from beam_jobs.io import embeddings, files, stac, stac_search
from schemas import embedding, sensors
from schemas.grid import (
    Chip,
    GridWindow,
    Tile,
    aoi_geometry,
    bbox_intersects,
    lonlat_to_utm,
    parse_tile_id,
    split_by_zone,
    tiles_for_aoi,
)
from schemas.observations import Observations, SourceFrames

log = logging.getLogger(__name__)

NAMESPACE = "embed"
FORMATS = ("cog", "parquet", "stac")
MANIFEST_FILE = "manifest.json"
DEADLETTER_FILE = "deadletter.jsonl"
COLLECTION_FILE = "collection.json"
DONE_SUFFIX = ".done.json"
FAILED_SUFFIX = ".failed.json"
# What to do when the job runs out of memory (cli.py says it too when the whole job is killed).
MEMORY_ADVICE = (
    "completed tiles are kept: rerun the same command to resume, with a lower --batch-size "
    "(or --prefetch 0, --read-block 1, or fewer --direct_num_workers) if it ran out of memory"
)
# A block read that raises is tried this many times in all, waiting READ_RETRY_WAIT_S x the
# attempt number in between (transient object-store or network errors).
READ_ATTEMPTS = 3
READ_RETRY_WAIT_S = 2.0


# ------------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class EmbedSpec:
    """Everything a worker needs to know about the run (small; shipped with the DoFns)."""

    out: str
    stac: str
    model: str
    model_version: str
    model_sha256: str
    t_start_ms: int
    t_end_ms: int
    tile_size: int
    chip_size: int
    halo: int
    formats: tuple[str, ...]
    sources: tuple[str, ...] | None = None
    read_block: int = 1  # chips per side read together
    aoi_wkb: Mapping[int, bytes] = dataclasses.field(default_factory=dict)  # epsg -> zone geom
    provider: str | None = None  # --provider (None: per item)
    requester_pays: bool = False
    sign: bool = True  # sign Planetary Computer hrefs
    compute_dtype: str = "float32"
    retry_failed: bool = True  # re-embed tiles with failed chips on rerun
    prefetch: int = 0  # chips read and prepared ahead of the model by a reader thread
    share_model: bool = False  # one model per VM (the reader then reads ahead, unprepared)

    @property
    def label(self) -> str:
        """`2023` for a calendar year, `20230401_20240401` for any other period."""
        return period_label(self.t_start_ms, self.t_end_ms)

    @property
    def year(self) -> int:
        return _utc(self.t_start_ms).year

    @property
    def stac_period(self) -> int | tuple[dt.datetime, dt.datetime]:
        """The period as schemas.embedding takes it: a year, or (start, end)."""
        if self.label.isdigit():
            return self.year
        return _utc(self.t_start_ms), _utc(self.t_end_ms)

    @property
    def key(self) -> dict[str, Any]:
        """What makes two runs' tiles interchangeable (recorded in markers and the manifest)."""
        return {
            "model_sha256": self.model_sha256,
            "t_start_ms": self.t_start_ms,
            "t_end_ms": self.t_end_ms,
            "tile_size": self.tile_size,
            "chip_size": self.chip_size,
            "halo": self.halo,
            "sources": list(self.sources) if self.sources else None,
            "quantization": embedding.QUANTIZATION_RULE,
            "compute_dtype": self.compute_dtype,
        }

    def tile_key(self, tile: Tile) -> dict[str, Any]:
        """`key` plus the tile's chips inside the AOI: what makes two runs' tile interchangeable."""
        return {**self.key, "aoi_chips": aoi_chips_digest(tile, self)}

    def tile_path(self, tile: Tile, suffix: str) -> str:
        return posixpath.join(self.out, tile.path(self.label, suffix))

    def output_files(self, tile: Tile) -> list[str]:
        files = {
            "cog": [self.tile_path(tile, ".tif"), self.tile_path(tile, "_quality.tif")],
            "parquet": [self.tile_path(tile, ".parquet")],
            "stac": [self.tile_path(tile, ".json")],
        }
        return [f for fmt in self.formats for f in files[fmt]]

    def marker_path(self, tile: Tile) -> str:
        return self.tile_path(tile, DONE_SUFFIX)

    def failed_marker_path(self, tile: Tile) -> str:
        return self.tile_path(tile, FAILED_SUFFIX)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def period_label(start_ms: int, end_ms: int) -> str:
    """The output folder of a period: the year for a calendar year, else YYYYMMDD_YYYYMMDD."""
    s, e = _utc(start_ms), _utc(end_ms)
    if (s.month, s.day, s.hour, e.month, e.day, e.hour) == (1, 1, 0, 1, 1, 0) and (
        e.year == s.year + 1
    ):
        return str(s.year)
    return f"{s:%Y%m%d}_{e:%Y%m%d}"


def parse_formats(text: str) -> tuple[str, ...]:
    """'cog,parquet,stac' -> the formats in canonical order; ValueError naming --formats."""
    names = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ValueError(
            f"--formats takes a comma-separated subset of {','.join(FORMATS)}; got {text!r}"
        )
    if "stac" in names and "cog" not in names:
        raise ValueError("--formats stac needs cog: a STAC item points at the COG and its sidecar")
    return tuple(f for f in FORMATS if f in names)


def plan_tiles(geom_lonlat: shapely.Geometry, tile_size: int) -> tuple[list[Tile], dict]:
    """An AOI -> its tiles (zone by zone) and the AOI in each zone's coordinates (WKB)."""
    tiles = tiles_for_aoi(geom_lonlat, tile_size)
    parts = split_by_zone(geom_lonlat)
    aoi = {}
    for epsg, part in parts.items():
        dense = part.segmentize(0.001)
        aoi[epsg] = shapely.to_wkb(
            shapely.transform(
                dense, lambda c, e=epsg: np.column_stack(lonlat_to_utm(c[:, 0], c[:, 1], e))
            )
        )
    return tiles, aoi


# ------------------------------------------------------------------------------- pure functions


def chips_in_aoi(tile: Tile, spec: EmbedSpec) -> list[Chip]:
    """The tile's chips (row-major) whose core overlaps the AOI; all of them without an AOI."""
    chips = tile.chips(spec.chip_size, spec.halo)
    wkb = spec.aoi_wkb.get(tile.epsg)
    if wkb is None:
        return chips
    aoi = shapely.from_wkb(wkb)
    shapely.prepare(aoi)
    keep = []
    for c in chips:
        (rs, cs), _ = c.core_slices()
        w = tile.window.subwindow(rs.start, cs.start, rs.stop - rs.start, cs.stop - cs.start)
        box = shapely.box(*w.bounds)
        if aoi.intersects(box) and aoi.intersection(box).area > 0:
            keep.append(c)
    return keep


def count_chips_in_aoi(tile: Tile, spec: EmbedSpec) -> int:
    """len(chips_in_aoi(tile, spec)), without testing each chip of a tile inside the AOI."""
    wkb = spec.aoi_wkb.get(tile.epsg)
    if wkb is not None and shapely.from_wkb(wkb).contains(shapely.box(*tile.window.bounds)):
        return len(tile.chips(spec.chip_size, spec.halo))
    return len(chips_in_aoi(tile, spec))


def aoi_chips_digest(tile: Tile, spec: EmbedSpec) -> str:
    """'all' when every chip of the tile is in the AOI, else a hash of the chips that are."""
    chips = tile.chips(spec.chip_size, spec.halo)
    inside = chips_in_aoi(tile, spec) if count_chips_in_aoi(tile, spec) < len(chips) else chips
    if len(inside) == len(chips):
        return "all"
    text = ",".join(f"{c.i}_{c.j}" for c in inside)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ProgressTotals:
    """What the progress lines count against (beam_jobs/progress.py); `run_id` names the run."""

    run_id: str
    chips: int
    tiles: int

    def tracker(self) -> progress.Progress:
        """This process's tracker of the run."""
        return progress.tracker(
            self.run_id, "embed", self.chips, "chips", groups=(self.tiles, "tiles"), pixels=True
        )


@dataclasses.dataclass(frozen=True)
class ReadBlock:
    """Up to k x k neighbouring chips of one tile, read from the catalog in one window."""

    chips: tuple[Chip, ...]

    @property
    def window(self) -> GridWindow:
        """The smallest window holding every chip's window (halo included)."""
        first = self.chips[0]
        i0, j0 = min(c.i for c in self.chips), min(c.j for c in self.chips)
        i1, j1 = max(c.i for c in self.chips), max(c.j for c in self.chips)
        core, halo = first.core, first.halo
        return first.tile.window.subwindow(
            i0 * core - halo,
            j0 * core - halo,
            (i1 - i0) * core + first.size,
            (j1 - j0) * core + first.size,
        )

    def offset(self, chip: Chip) -> tuple[int, int]:
        """(row, col) of the chip window's top-left pixel in the block window."""
        i0, j0 = min(c.i for c in self.chips), min(c.j for c in self.chips)
        return (chip.i - i0) * chip.core, (chip.j - j0) * chip.core


def read_blocks(chips: Sequence[Chip], k: int) -> list[ReadBlock]:
    """A tile's chips grouped k x k (by chip row and column), in row-major block order."""
    groups: dict[tuple[int, int], list[Chip]] = {}
    for c in chips:
        groups.setdefault((c.i // k, c.j // k), []).append(c)
    return [ReadBlock(tuple(groups[key])) for key in sorted(groups)]


def crop_observations(obs: Observations, window: GridWindow, row: int, col: int) -> Observations:
    """The observations of a sub-window, as if read on their own: arrays copied, and frames
    with no finite value inside dropped (the reader leaves such frames out)."""
    rows, cols = slice(row, row + window.height), slice(col, col + window.width)
    sources = {}
    for name, sf in obs.sources.items():
        values = sf.values[:, rows, cols]
        keep = np.flatnonzero(np.isfinite(values).any(axis=(1, 2, 3)))
        sources[name] = SourceFrames(
            sf.source,
            values[keep],  # fancy indexing copies
            sf.valid[keep][:, rows, cols].copy(),
            sf.times_ms[keep],
            {g: v[keep] for g, v in sf.geometry.items()},
            sf.band_names,
        )
    return Observations(sources=sources, window=window, errors=list(obs.errors))


@dataclasses.dataclass(frozen=True)
class ChipObsSummary:
    """What a chip's result needs of its observations, per pixel of the core: taken when the
    chip is read, so the observations can be freed before the model runs (`chip_quality`)."""

    counts: dict[str, np.ndarray]  # valid observations per time-varying source
    clear_fraction: np.ndarray  # clear / observed optical acquisitions, NaN where none
    surface: np.ndarray  # clear optical + valid radar observations
    errors: tuple[str, ...] = ()  # the read errors the observations carry


def observation_summary(
    obs: Observations, rows: slice, cols: slice, *, t_start_ms: int, t_end_ms: int
) -> ChipObsSummary:
    """A chip's observations (window incl. halo) -> their `ChipObsSummary` over the core
    (`rows`, `cols`: the core's slices into the chip window)."""
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    counts: dict[str, np.ndarray] = {}
    clear = np.zeros(shape, np.float64)
    observed = np.zeros(shape, np.float64)
    for source in embedding.OBS_SOURCES:
        sf = obs.sources.get(source)
        if sf is None or sf.num_frames == 0:
            continue
        sf = sf.select_time(t_start_ms, t_end_ms).crop(rows, cols)
        counts[source] = sf.valid.sum(axis=0).astype(np.float64)
        if source in sensors.OPTICAL_SOURCES:  # their acquisitions define the clear fraction
            clear += counts[source]
            observed += np.isfinite(sf.values).any(axis=-1).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        clear_fraction = np.where(observed > 0, clear / observed, np.nan)
    surface = sum((counts[s] for s in sensors.SURFACE_SOURCES if s in counts), np.zeros(shape))
    return ChipObsSummary(counts, clear_fraction, surface, tuple(obs.errors))


def chip_obs_summary(chip: Chip, obs: Observations, spec: EmbedSpec) -> ChipObsSummary:
    """`observation_summary` of a chip's observations over its core, for the job's period."""
    _, (rows, cols) = chip.core_slices()
    return observation_summary(obs, rows, cols, t_start_ms=spec.t_start_ms, t_end_ms=spec.t_end_ms)


def chip_quality(
    obs: Observations,
    rows: slice,
    cols: slice,
    *,
    t_start_ms: int,
    t_end_ms: int,
    embedded: np.ndarray,
) -> np.ndarray:
    """The quality sidecar's stored bands over a chip's core: uint8 (Q, h, w).

    Args:
        obs: the chip's observations (window incl. halo).
        rows, cols: the core's slices into the chip window.
        t_start_ms, t_end_ms: the period.
        embedded: bool (h, w), pixels that got an embedding.

    Returns:
        `embedding.quality_layers` of: valid observations per time-varying source; the clear
        fraction (clear / observed acquisitions of the cloud-masked optical sources, unknown
        where none observed the pixel); `embedding.confidence` of the surface observations
        (clear optical + valid radar; not climate or the DEM), 0 where the pixel has no
        embedding.
    """
    summary = observation_summary(obs, rows, cols, t_start_ms=t_start_ms, t_end_ms=t_end_ms)
    return summary_quality(summary, embedded)


def summary_quality(summary: ChipObsSummary, embedded: np.ndarray) -> np.ndarray:
    """`chip_quality` from a chip's `ChipObsSummary` and its embedded pixels."""
    confidence = embedding.confidence(summary.surface, embedded)
    return embedding.quality_layers(summary.counts, summary.clear_fraction, confidence)


@dataclasses.dataclass
class ChipResult:
    """A chip's part of its tile: quantized core (or None = nodata) and quality, and an error
    (failed: no core; partial: a core embedded without the frames whose read failed)."""

    tile_id: str
    chip_id: str
    i: int
    j: int
    q: np.ndarray | None = None  # int8 (h, w, 64), the core clipped to the tile
    quality: np.ndarray | None = None  # uint8 (Q, h, w)
    error: str | None = None

    @property
    def valid_pixels(self) -> int:
        if self.q is None:
            return 0
        return int((~(self.q == embedding.NODATA).all(axis=-1)).sum())

    @property
    def partial(self) -> bool:
        """Embedded, but from observations some of whose reads failed."""
        return self.q is not None and self.error is not None

    def deadletter(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chip_id": self.chip_id,
            "tile_id": self.tile_id,
            "error": self.error or "",
        }
        if self.partial:
            out["embedded"] = True
        return out


def non_finite_embedding(core: np.ndarray) -> str | None:
    """Why a chip's core embeddings (h, w, 64) cannot be quantized, or None.

    An all-NaN row is a pixel without observations (nodata by design); a row with an
    infinite component, or NaN in only some components, is a model failure (a bundle marks
    an observed pixel whose embedding is not finite with inf: model/bundle.py).
    """
    finite = np.isfinite(core)
    bad = ~finite.all(axis=-1) & ~np.isnan(core).all(axis=-1)
    if not bad.any():
        return None
    r, c = (int(v) for v in np.argwhere(bad)[0])
    return (
        f"non-finite embedding (NaN/inf) at {int(bad.sum())} of {bad.size} core pixels, "
        f"first at core row {r}, col {c}"
    )


def chip_result(
    chip: Chip, emb: np.ndarray, obs: Observations | ChipObsSummary, spec: EmbedSpec
) -> ChipResult:
    """A chip's (S, S, 64) embeddings -> its core, quantized, with its quality bands; a
    failed chip if the core holds non-finite embeddings; partial (core and error) if its
    observations carry read errors. `obs`: the chip's observations or their summary."""
    _, (rows, cols) = chip.core_slices()
    core = emb[rows, cols]
    if why := non_finite_embedding(core):
        return failed_chip(chip, why)
    q = embedding.quantize(core)
    embedded = ~(q == embedding.NODATA).all(axis=-1)
    summary = obs if isinstance(obs, ChipObsSummary) else chip_obs_summary(chip, obs, spec)
    quality = summary_quality(summary, embedded)
    error = None
    if summary.errors:
        error = "embedded without the frames whose read failed: " + "; ".join(summary.errors)
    return ChipResult(chip.tile.id, chip.id, chip.i, chip.j, q=q, quality=quality, error=error)


def failed_chip(chip: Chip, error: str) -> ChipResult:
    return ChipResult(chip.tile.id, chip.id, chip.i, chip.j, error=error)


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """A tile and how many of its chips were sent to be embedded."""

    tile: Tile
    chips: int


class TileCodes:
    """A tile's int8 codes and quality bands, assembled from its chips' results on demand:
    any window of the tile without the whole (T, T, 64) array (4.3 GB at 8192 px).

    Chips that failed or were never embedded stay nodata (-128 / 255).
    """

    def __init__(self, tile: Tile, chip_size: int, results: Iterable[ChipResult]):
        self.size = tile.size
        self.chip_size = chip_size
        self._chips = {(r.i, r.j): r for r in results if r.q is not None}

    @property
    def valid_pixels(self) -> int:
        return sum(r.valid_pixels for r in self._chips.values())

    def bounds(self) -> tuple[int, int, int, int] | None:
        """(r0, r1, c0, c1): the smallest window holding every embedded chip; None if none."""
        if not self._chips:
            return None
        c = self.chip_size
        r0 = min(i * c for i, _ in self._chips)
        c0 = min(j * c for _, j in self._chips)
        r1 = max(r.i * c + r.q.shape[0] for r in self._chips.values())
        c1 = max(r.j * c + r.q.shape[1] for r in self._chips.values())
        return r0, r1, c0, c1

    def _paste(self, out: np.ndarray, r0: int, r1: int, c0: int, c1: int, quality: bool) -> None:
        c = self.chip_size
        for i in range(r0 // c, (r1 - 1) // c + 1):
            for j in range(c0 // c, (c1 - 1) // c + 1):
                res = self._chips.get((i, j))
                if res is None:
                    continue
                h, w = res.q.shape[:2]
                a0, a1 = max(r0, i * c), min(r1, i * c + h)
                b0, b1 = max(c0, j * c), min(c1, j * c + w)
                if a1 <= a0 or b1 <= b0:
                    continue
                src = (slice(a0 - i * c, a1 - i * c), slice(b0 - j * c, b1 - j * c))
                dst = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
                if quality:
                    out[(slice(None), *dst)] = res.quality[(slice(None), *src)]
                else:
                    out[dst] = res.q[src]

    def codes(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """int8 (r1 - r0, c1 - c0, 64): the codes of rows [r0, r1) and columns [c0, c1)."""
        out = np.full((r1 - r0, c1 - c0, embedding.EMBEDDING_DIM), embedding.NODATA, np.int8)
        self._paste(out, r0, r1, c0, c1, quality=False)
        return out

    def quality(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """uint8 (Q, r1 - r0, c1 - c0): the quality bands of that window."""
        shape = (len(embedding.QUALITY_BANDS), r1 - r0, c1 - c0)
        out = np.full(shape, embedding.QUALITY_NODATA, np.uint8)
        self._paste(out, r0, r1, c0, c1, quality=True)
        return out

    def embeddings(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """float32 (r1 - r0, c1 - c0, 64), dequantized (NaN rows where nodata)."""
        return embedding.dequantize(self.codes(r0, r1, c0, c1))


def assemble_tile(
    tile: Tile, chip_size: int, results: Iterable[ChipResult]
) -> tuple[np.ndarray, np.ndarray]:
    """Chip results -> the tile's int8 (T, T, 64) codes and uint8 (Q, T, T) quality, whole
    (`TileCodes` gives any window of them without the whole arrays).

    Chips that failed or were never embedded stay nodata (-128 / 255).
    """
    t = tile.size
    codes = TileCodes(tile, chip_size, results)
    return codes.codes(0, t, 0, t), codes.quality(0, t, 0, t)


def cog_tags(spec: EmbedSpec) -> dict[str, str]:
    return {
        "model_version": spec.model_version,
        "model_sha256": spec.model_sha256,
        "year": str(spec.year),
        "valid_period": f"{_utc(spec.t_start_ms).isoformat()}/{_utc(spec.t_end_ms).isoformat()}",
        "chip_size": str(spec.chip_size),
        "halo": str(spec.halo),
    }


# ------------------------------------------------------------------------------- file helpers


@contextlib.contextmanager
def local_target(dest: str) -> Iterator[str]:
    """A local path to write `dest` through: `dest` itself (the writers are atomic), or for an
    object store a scratch file uploaded when the writer is done."""
    if not files.is_remote(dest):
        yield dest
        return
    with tempfile.TemporaryDirectory(prefix="earthembed-") as scratch:
        local = os.path.join(scratch, posixpath.basename(dest))
        yield local
        with open(local, "rb") as src, FileSystems.create(dest) as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)


def _read_json(path: str) -> Any:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _relative(path: str, start_dir: str) -> str:
    return "./" + posixpath.relpath(path, start_dir)


def item_document(spec: EmbedSpec, tile: Tile) -> dict:
    """The tile's STAC item as JSON, hrefs relative to the item file."""
    here = posixpath.dirname(spec.tile_path(tile, ".json"))
    item = embedding.stac_item(
        tile.id,
        cog_href=_relative(spec.tile_path(tile, ".tif"), here),
        quality_href=_relative(spec.tile_path(tile, "_quality.tif"), here),
        parquet_href=(
            _relative(spec.tile_path(tile, ".parquet"), here) if "parquet" in spec.formats else None
        ),
        epsg=tile.epsg,
        transform=tile.transform,
        shape=(tile.size, tile.size),
        period=spec.stac_period,
        model_version=spec.model_version,
        model_sha256=spec.model_sha256,
    )
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["collection"] = collection_id(spec)
    up = posixpath.relpath(posixpath.join(spec.out, COLLECTION_FILE), here)
    doc["links"] = [
        {"rel": rel, "href": up, "type": "application/json"}
        for rel in ("root", "parent", "collection")
    ]
    return doc


def collection_id(spec: EmbedSpec) -> str:
    return f"earthembed-{spec.label}"


# ------------------------------------------------------------------------------- tile writing


def write_tile(spec: EmbedSpec, tile: Tile, results: Sequence[ChipResult], planned: int) -> dict:
    """Write a tile's files (COG and sidecar, GeoParquet, STAC item), then its done marker.

    Returns:
        The tile summary (also the marker's content): counts, dead letters, files, lon/lat bbox.
    """
    remove_stale_temporaries(spec, tile)
    for old in (spec.marker_path(tile), spec.failed_marker_path(tile)):  # no longer true
        if FileSystems.exists(old):
            FileSystems.delete([old])
    # From the chips' int8 codes a window at a time: never the tile's float (T, T, 64) array
    # (17 GB at 8192 px) nor its int8 one; only the quality bands (6 B/px) are whole.
    codes = TileCodes(tile, spec.chip_size, results)
    t = tile.size
    crs = f"EPSG:{tile.epsg}"
    if "cog" in spec.formats:
        with local_target(spec.tile_path(tile, "_quality.tif")) as p:
            embeddings.write_quality_cog(
                p, codes.quality(0, t, 0, t), tile.transform, crs, tags=cog_tags(spec)
            )
        with local_target(spec.tile_path(tile, ".tif")) as p:
            # exact: quantize(dequantize(q)) == q, and the overviews are those of the
            # dequantized codes, as when the whole tile was written at once
            embeddings.write_embedding_cog_blocks(
                p, (t, t), codes.embeddings, tile.transform, crs, tags=cog_tags(spec)
            )
    if "parquet" in spec.formats:
        r0, r1, c0, c1 = codes.bounds() or (0, 0, 0, 0)
        table = embedding.embedding_table(
            codes.codes(r0, r1, c0, c1),
            transform=tile.transform,
            epsg=tile.epsg,
            tile_id=tile.id,
            year=spec.year,
            origin=(r0, c0),
            shape=(t, t),
        )
        with local_target(spec.tile_path(tile, ".parquet")) as p:
            embeddings.write_embedding_parquet(p, table)
    item = None
    if "stac" in spec.formats:
        item = item_document(spec, tile)
        runner.write_bytes_atomic(spec.tile_path(tile, ".json"), _json_bytes(item))
    failed = sorted((r for r in results if r.error is not None), key=lambda r: r.chip_id)
    valid = codes.valid_pixels
    summary = {
        "tile_id": tile.id,
        "epsg": tile.epsg,
        "key": spec.tile_key(tile),
        "formats": list(spec.formats),
        "files": [posixpath.relpath(f, spec.out) for f in spec.output_files(tile)],
        "chips": len(tile.chips(spec.chip_size, spec.halo)),
        "chips_embedded": planned - sum(r.q is None for r in failed),
        "chips_failed": sum(r.q is None for r in failed),
        "chips_partial": sum(r.partial for r in failed),
        "chips_outside_aoi": len(tile.chips(spec.chip_size, spec.halo)) - planned,
        "pixels": tile.size * tile.size,
        "pixels_valid": valid,
        "bbox_lonlat": list(item["bbox"]) if item else list(tile.window.lonlat_bounds()),
        "deadletters": [r.deadletter() for r in failed],
    }
    # Done means done: a tile with failed chips gets the other marker, which a rerun retries.
    marker = spec.failed_marker_path(tile) if failed else spec.marker_path(tile)
    runner.write_bytes_atomic(marker, _json_bytes(summary))
    return summary


def remove_stale_temporaries(spec: EmbedSpec, tile: Tile) -> list[str]:
    """Delete temporary files (and their scratch folders) an earlier, killed attempt at this
    tile left (`{tile_id}*.tmp-*`; object stores have none: an upload appears whole or not at
    all). Under the --out lock no other run is writing, so they are a dead run's."""
    stale = files.remove_temporaries(posixpath.dirname(spec.tile_path(tile, ".tif")), tile.id)
    for path in stale:
        log.info("removed %s, left by an interrupted attempt", path)
    return stale


def completed_summary(spec: EmbedSpec, tile: Tile) -> dict | None:
    """The summary of a tile a previous run completed for this spec (with failed chips too
    when `spec.retry_failed` is off), else None."""
    markers = [spec.marker_path(tile)]
    if not spec.retry_failed:
        markers.append(spec.failed_marker_path(tile))
    marker = next((m for m in markers if FileSystems.exists(m)), None)
    if marker is None:
        return None
    try:
        summary = _read_json(marker)
    except (OSError, ValueError):
        return None
    if summary.get("key") != spec.tile_key(tile) or not set(spec.formats) <= set(
        summary.get("formats", [])
    ):
        return None
    if not all(FileSystems.exists(f) for f in spec.output_files(tile)):
        return None
    return summary


def write_run_files(spec: EmbedSpec, summaries: Sequence[dict], run_info: Mapping) -> dict:
    """deadletter.jsonl, collection.json (with `stac`) and manifest.json over every tile."""
    summaries = sorted(summaries, key=lambda s: s["tile_id"])
    dead = [d for s in summaries for d in s["deadletters"]]
    runner.write_bytes_atomic(
        posixpath.join(spec.out, DEADLETTER_FILE),
        "".join(json.dumps(d, sort_keys=True) + "\n" for d in dead).encode(),
    )
    if "stac" in spec.formats and summaries:
        boxes = np.array([s["bbox_lonlat"] for s in summaries])
        extent = [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
        coll = embedding.stac_collection(
            collection_id(spec),
            description=(
                f"earthembed embeddings for {spec.label}: 64-d unit vectors per 10 m pixel, "
                f"model {spec.model_version}"
            ),
            extent_bbox=extent,
            period=spec.stac_period,
            model_version=spec.model_version,
        )
        doc = coll.to_dict(include_self_link=False, transform_hrefs=False)
        doc["links"] = [
            {"rel": "root", "href": f"./{COLLECTION_FILE}", "type": "application/json"}
        ] + [
            {
                "rel": "item",
                "href": "./"
                + posixpath.relpath(spec.tile_path(_tile_of(s, spec.tile_size), ".json"), spec.out),
                "type": "application/geo+json",
            }
            for s in summaries
        ]
        runner.write_bytes_atomic(posixpath.join(spec.out, COLLECTION_FILE), _json_bytes(doc))
    manifest = manifest_document(spec, summaries, run_info, previous_runs(spec.out))
    runner.write_bytes_atomic(posixpath.join(spec.out, MANIFEST_FILE), _json_bytes(manifest))
    return manifest


def previous_runs(out: str) -> list[dict]:
    """The run records of the manifest already in --out (none when there is none)."""
    path = posixpath.join(out, MANIFEST_FILE)
    try:
        if not FileSystems.exists(path):
            return []
        doc = _read_json(path)
    except (OSError, ValueError):
        return []
    runs = doc.get("runs")
    if isinstance(runs, list):
        return runs
    return [doc["run"]] if isinstance(doc.get("run"), dict) else []


def _tile_of(summary: Mapping, size: int) -> Tile:
    return parse_tile_id(summary["tile_id"], size)


def manifest_document(
    spec: EmbedSpec,
    summaries: Sequence[dict],
    run_info: Mapping,
    earlier_runs: Sequence[Mapping] = (),
) -> dict:
    """The manifest: the outputs (deterministic), this run's facts under `run`, and every run
    into --out (earlier ones first, this one last) under `runs`."""
    keys = ("chips", "chips_embedded", "chips_failed", "chips_outside_aoi", "pixels_valid")
    return {
        "schema": "earthembed-embed-manifest/1",
        "model": {
            "path": spec.model,
            "version": spec.model_version,
            "sha256": spec.model_sha256,
        },
        "period": {
            "label": spec.label,
            "start": _utc(spec.t_start_ms).isoformat(),
            "end": _utc(spec.t_end_ms).isoformat(),
            "start_ms": spec.t_start_ms,
            "end_ms": spec.t_end_ms,
        },
        "stac": spec.stac,
        "grid": {"tile_size": spec.tile_size, "chip_size": spec.chip_size, "halo": spec.halo},
        "formats": list(spec.formats),
        "sources": list(spec.sources) if spec.sources else "all in the catalog",
        "key": spec.key,
        "quantization": embedding.QUANTIZATION_RULE,
        "confidence": embedding.CONFIDENCE_RULE + " (observation support, not a model output)",
        "counts": {
            "tiles": len(summaries),
            **{k: int(sum(s[k] for s in summaries)) for k in keys},
        },
        "tiles": [{k: s[k] for k in ("tile_id", "files", *keys)} for s in summaries],
        "run": dict(run_info),
        "runs": [*map(dict, earlier_runs), dict(run_info)],
    }


# ------------------------------------------------------------------------------- DoFns


class SkipCompleteTilesFn(beam.DoFn):
    """Tile -> itself if it still needs embedding | ('complete', its summary) if it is done."""

    COMPLETE = "complete"

    def __init__(self, spec: EmbedSpec, totals: ProgressTotals | None = None):
        self._spec = spec
        self._totals = totals
        self._progress = None
        self._skipped = Metrics.counter(NAMESPACE, "tiles_skipped")

    def setup(self):
        self._progress = self._totals.tracker() if self._totals else None

    def process(self, tile: Tile) -> Iterator:
        summary = completed_summary(self._spec, tile)
        if summary is None:
            yield tile
            return
        self._skipped.inc()
        log.info("tile %s: complete from an earlier run, skipped", tile.id)
        if self._progress:
            chips = int(summary.get("chips_embedded", 0)) + int(summary.get("chips_failed", 0))
            self._progress.add(0, skipped=chips)
            self._progress.add_group()
        yield beam.pvalue.TaggedOutput(self.COMPLETE, {**summary, "written_now": False})


class PlanChipsFn(beam.DoFn):
    """Tile -> read blocks of its chips inside the AOI, plus one (tile_id, ('plan', TilePlan))."""

    PLANS = "plans"

    def __init__(self, spec: EmbedSpec):
        self._spec = spec
        self._outside = Metrics.counter(NAMESPACE, "chips_outside_aoi")

    def process(self, tile: Tile) -> Iterator:
        chips = chips_in_aoi(tile, self._spec)
        n_all = len(tile.chips(self._spec.chip_size, self._spec.halo))
        self._outside.inc(n_all - len(chips))
        yield beam.pvalue.TaggedOutput(self.PLANS, (tile.id, ("plan", TilePlan(tile, len(chips)))))
        yield from read_blocks(chips, self._spec.read_block)


class ReadChipsFn(beam.DoFn):
    """ReadBlock -> (chip, EmbedRequest) per chip | (tile_id, ('chip', failed ChipResult)) for
    every chip of a block whose read raised or carried read errors.

    With `spec.prefetch` > 0 a reader thread (`prefetch.Prefetcher`) reads the blocks and
    prepares their chips' model inputs (`bundle.prepare`, unless `spec.share_model`: then
    the model's process prepares them) while the model runs the chips before them: this
    DoFn hands a block's chips on once the next block is submitted (its downstream stages,
    the model among them, run inside that hand-over), and the last ones in finish_bundle. At
    most `spec.prefetch` prepared chips wait, plus the block in progress. 0 reads and hands
    on each block in line, and the handler prepares its chips.
    """

    FAILED = "failed"

    def __init__(self, spec: EmbedSpec, totals: ProgressTotals | None = None):
        self._spec = spec
        self._totals = totals
        self._progress = None
        self._catalog = None
        self._bundle = None
        self._feed = None
        self._failed = Metrics.counter(NAMESPACE, "chips_failed")
        self._masked = Metrics.counter(NAMESPACE, "values_masked")
        self._retries = Metrics.counter(NAMESPACE, "read_retries")
        self._read_ms = Metrics.distribution(NAMESPACE, "block_read_ms")

    def setup(self):
        from beam_jobs.io import stac

        spec = self._spec
        self._catalog = stac.StacCatalog.open(
            spec.stac, provider=spec.provider, requester_pays=spec.requester_pays, sign=spec.sign
        )
        self._progress = self._totals.tracker() if self._totals else None
        if spec.prefetch and not spec.share_model:
            # the process's bundle (the handler's too: the same cache key), for prepare
            self._bundle = inference.load_bundle_cached(spec.model, spec.compute_dtype)

    def start_bundle(self):
        if self._feed is not None:  # a bundle that failed midway left its reader
            self._feed.close()
        self._feed = None

    def process(self, block: ReadBlock) -> Iterator:
        if not self._spec.prefetch:
            for out in self._block_outputs(block):
                yield from self._emit(out)
            return
        if self._feed is None:
            self._feed = prefetch.Prefetcher(
                self._block_outputs, max_ready=self._spec.prefetch, name="embed-read"
            )
        self._feed.submit(block)
        # hand on the blocks before this one: the thread reads this one meanwhile
        for out in self._feed.take(until=self._feed.submitted - 1):
            yield from self._emit(out)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        feed, self._feed = self._feed, None
        if feed is None:
            return
        try:
            for out in feed.take(until=feed.submitted):
                for o in self._emit(out):
                    if isinstance(o, beam.pvalue.TaggedOutput):
                        w = WindowedValue(o.value, MIN_TIMESTAMP, [GlobalWindow()])
                        yield beam.pvalue.TaggedOutput(o.tag, w)
                    else:
                        yield WindowedValue(o, MIN_TIMESTAMP, [GlobalWindow()])
        finally:
            feed.close()

    def teardown(self):
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def _emit(self, out: tuple) -> Iterator:
        """One record of `_block_outputs` -> this DoFn's outputs; counted here (Beam's
        metrics belong to the thread processing the element, not the reader's)."""
        kind = out[0]
        if kind == "read":
            _, read_ms, masked, retries = out
            if read_ms is not None:
                self._read_ms.update(read_ms)
            self._masked.inc(masked)
            if retries:
                self._retries.inc(retries)
        elif kind == "failed":
            _, chip, error = out
            self._failed.inc()
            log.warning("chip %s dead-lettered: %s", chip.id, error)
            if self._progress:
                self._progress.add(1)
            yield beam.pvalue.TaggedOutput(
                self.FAILED, (chip.tile.id, ("chip", failed_chip(chip, error)))
            )
        else:
            _, chip, request = out
            yield chip, request

    def _block_outputs(self, block: ReadBlock) -> Iterator[tuple]:
        """Read a block (retried) and cut it into chip requests, prepared when this DoFn has
        the bundle: ('read', ms, values masked, retries) once the read is done, then per chip
        ('chip', chip, EmbedRequest) or ('failed', chip, reason)."""
        from beam_jobs.io import stac

        spec = self._spec
        window = block.window
        started = time.perf_counter()
        retries = 0
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                obs = stac.read_observations(
                    self._catalog, window, spec.t_start_ms, spec.t_end_ms, sources=spec.sources
                )
                break
            except Exception as e:  # an I/O boundary: retried, then these chips' dead letter
                why = f"{type(e).__name__}: {stac.error_reason(e)}"
                if attempt == READ_ATTEMPTS:
                    yield "read", None, 0, retries  # no read time: the read never finished
                    for chip in block.chips:
                        yield "failed", chip, f"read failed ({attempt} attempts): {why}"
                    return
                log.warning("read of %s failed (attempt %d): %s", block.chips[0].id, attempt, why)
                retries += 1
                time.sleep(READ_RETRY_WAIT_S * attempt)
        read_ms = int((time.perf_counter() - started) * 1000)
        yield "read", read_ms, sum(obs.out_of_range.values()), retries
        # Read errors invalidated their frames only: the chips are embedded from the rest and
        # carry the errors (crop_observations) into their partial results. In line (no
        # bundle here) the block is cropped whole and freed before the first chip goes on (a
        # full batch runs the model inside the yield), and this frame keeps no chip: the
        # handler frees each chip's observations once prepared (their summary rides along
        # for the quality bands). The reader thread instead cuts and prepares one chip at a
        # time from the block (the block and one chip's crop, not every crop at once).
        prepare = self._bundle is not None
        chips = list(block.chips)
        crops = (
            [] if prepare else [crop_observations(obs, c.window, *block.offset(c)) for c in chips]
        )
        if not prepare:
            del obs
        chips.reverse()
        crops.reverse()
        while chips:
            chip = chips.pop()
            if prepare:
                chip_obs = crop_observations(obs, chip.window, *block.offset(chip))
                if not chips:
                    del obs  # the last chip's crop is taken
            else:
                chip_obs = crops.pop()
            request = inference.EmbedRequest(
                chip_obs,
                spec.t_start_ms,
                spec.t_end_ms,
                extra=chip_obs_summary(chip, chip_obs, spec),
                release=True,
            )
            del chip_obs
            if self._bundle is not None:
                try:
                    request.items = inference.prepare_items(self._bundle, request)
                except Exception as e:  # this chip's inputs: its dead letter, not the job's
                    request = None
                    yield "failed", chip, f"prepare failed: {type(e).__name__}: {e}"
                    continue
                request.release_observations()
            yield "chip", chip, request
            del request


class CollectChipFn(beam.DoFn):
    """(chip, PredictionResult) -> (tile_id, ('chip', ChipResult)): quantized core + quality."""

    def __init__(self, spec: EmbedSpec, totals: ProgressTotals | None = None):
        self._spec = spec
        self._totals = totals
        self._progress = None
        self._chips = Metrics.counter(NAMESPACE, "chips")
        self._pixels = Metrics.counter(NAMESPACE, "pixels")
        self._failed = Metrics.counter(NAMESPACE, "chips_failed")
        self._partial = Metrics.counter(NAMESPACE, "chips_partial")

    def setup(self):
        self._progress = self._totals.tracker() if self._totals else None

    def process(self, keyed: tuple[Chip, PredictionResult]) -> Iterator:
        chip, result = keyed
        request = result.example
        obs = request.obs if request.extra is None else request.extra
        res = chip_result(chip, np.asarray(result.inference), obs, self._spec)
        if res.q is None:
            self._failed.inc()
            log.warning("chip %s dead-lettered: %s", chip.id, res.error)
            if self._progress:
                self._progress.add(1)
            yield chip.tile.id, ("chip", res)
            return
        if res.partial:
            self._partial.inc()
        self._chips.inc()
        self._pixels.inc(res.valid_pixels)
        if self._progress:
            self._progress.add(1, pixels=res.valid_pixels)
        yield chip.tile.id, ("chip", res)


def batch_failure_text(exc: Any) -> str:
    """The error of a failed RunInference batch as `Type: message`.

    Beam's exception handling hands over `(exception type, repr, formatted traceback lines)`,
    not the exception: the message is the traceback's last line (for a chained exception, the
    one raised last).
    """
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, tuple) and len(exc) == 3 and isinstance(exc[0], type):
        lines = "".join(exc[2] or []).strip().splitlines()
        return lines[-1].strip() if lines else f"{exc[0].__name__}: {exc[1]}"
    return str(exc)


class FailedBatchFn(beam.DoFn):
    """(failed batch of (chip, request), exception) -> a failed ChipResult per chip, its reason
    the model's error."""

    def __init__(self, totals: ProgressTotals | None = None):
        self._totals = totals
        self._progress = None
        self._failed = Metrics.counter(NAMESPACE, "chips_failed")

    def setup(self):
        self._progress = self._totals.tracker() if self._totals else None

    def process(self, failure: tuple[Sequence[tuple[Chip, Any]], BaseException]) -> Iterator:
        batch, exc = failure
        reason = f"inference failed: {batch_failure_text(exc)}"
        for chip, _ in batch:
            self._failed.inc()
            log.warning("chip %s dead-lettered: %s", chip.id, reason)
            if self._progress:
                self._progress.add(1)
            yield chip.tile.id, ("chip", failed_chip(chip, reason))


class WriteTileFn(beam.DoFn):
    """(tile_id, [plan, chip results...]) -> the tile's files; yields its summary."""

    def __init__(
        self,
        spec: EmbedSpec,
        writer: Callable[..., dict] | None = None,
        totals: ProgressTotals | None = None,
    ):
        self._spec = spec
        self._writer = writer
        self._totals = totals
        self._progress = None
        self._written = Metrics.counter(NAMESPACE, "tiles_written")

    def setup(self):
        self._progress = self._totals.tracker() if self._totals else None

    def process(self, grouped: tuple[str, Iterable[tuple[str, Any]]]) -> Iterator:
        tile_id, parts = grouped
        plans = [p for kind, p in parts if kind == "plan"]
        results = [p for kind, p in parts if kind == "chip"]
        if len(plans) != 1 or len(results) != plans[0].chips:
            raise RuntimeError(
                f"tile {tile_id}: {len(plans)} plans and {len(results)} chip results "
                f"(planned {plans[0].chips if plans else '?'})"
            )
        started = time.perf_counter()
        writer = self._writer or write_tile
        summary = writer(self._spec, plans[0].tile, results, plans[0].chips)
        self._written.inc()
        log.info(
            "tile %s written: %d chips embedded, %d failed, %d outside the AOI, %d valid px "
            "(%.1f s)",
            tile_id,
            summary["chips_embedded"],
            summary["chips_failed"],
            summary["chips_outside_aoi"],
            summary["pixels_valid"],
            time.perf_counter() - started,
        )
        if self._progress:
            self._progress.add_group()
        yield {**summary, "written_now": True}


# ------------------------------------------------------------------------------- PTransforms


class EmbedChips(beam.PTransform):
    """Read blocks -> (tile_id, ('chip', ChipResult)) for every chip: embedded or failed."""

    def __init__(
        self,
        spec: EmbedSpec,
        handler: inference.FlaxEmbeddingModelHandler,
        totals: ProgressTotals | None = None,
    ):
        super().__init__()
        self._spec = spec
        self._handler = handler
        self._totals = totals

    def expand(self, chips):
        totals = self._totals
        read = chips | "ReadChips" >> beam.ParDo(ReadChipsFn(self._spec, totals)).with_outputs(
            ReadChipsFn.FAILED, main="requests"
        )
        embedded, dlq = (
            read.requests
            | "RunInference"
            >> RunInference(inference.keyed_handler(self._handler)).with_exception_handling()
        )
        collected = embedded | "QuantizeChips" >> beam.ParDo(CollectChipFn(self._spec, totals))
        failed = dlq.failed_inferences | "FailedBatches" >> beam.ParDo(FailedBatchFn(totals))
        return (collected, read[ReadChipsFn.FAILED], failed) | "AllChips" >> beam.Flatten()


class EmbedTiles(beam.PTransform):
    """Tiles -> summaries of every tile (written now or complete before) + run files."""

    def __init__(
        self,
        spec: EmbedSpec,
        handler: inference.FlaxEmbeddingModelHandler,
        run_info: Mapping[str, Any],
        writer: Callable[..., dict] | None = None,
        *,
        totals: ProgressTotals | None = None,
    ):
        super().__init__()
        self._spec = spec
        self._handler = handler
        self._run_info = dict(run_info)
        self._writer = writer
        self._totals = totals

    def expand(self, tiles):
        spec, totals = self._spec, self._totals
        todo = tiles | "SkipCompleteTiles" >> beam.ParDo(
            SkipCompleteTilesFn(spec, totals)
        ).with_outputs(SkipCompleteTilesFn.COMPLETE, main="todo")
        planned = todo.todo | "PlanChips" >> beam.ParDo(PlanChipsFn(spec)).with_outputs(
            PlanChipsFn.PLANS, main="blocks"
        )
        chip_results = (
            planned.blocks
            | "Redistribute" >> beam.Reshuffle()
            | "EmbedChips" >> EmbedChips(spec, self._handler, totals)
        )
        written = (
            (planned[PlanChipsFn.PLANS], chip_results)
            | "PlansAndChips" >> beam.Flatten()
            | "GroupByTile" >> beam.GroupByKey()
            | "WriteTiles" >> beam.ParDo(WriteTileFn(spec, self._writer, totals))
        )
        summaries = (written, todo[SkipCompleteTilesFn.COMPLETE]) | "AllTiles" >> beam.Flatten()
        run_info = self._run_info

        def finish(all_summaries: list[dict]) -> dict:
            info = {
                **run_info,
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "tiles_written": sum(1 for s in all_summaries if s["written_now"]),
                "tiles_skipped": sum(1 for s in all_summaries if not s["written_now"]),
            }
            return write_run_files(spec, all_summaries, info)

        return (
            summaries
            | "CollectSummaries" >> beam.combiners.ToList()
            | "WriteRunFiles" >> beam.Map(finish)
        )


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[Tile],
    spec: EmbedSpec,
    handler: inference.FlaxEmbeddingModelHandler,
    *,
    run_info: Mapping[str, Any] | None = None,
    writer: Callable[..., dict] | None = None,
) -> beam.Pipeline:
    """Add the job to `pipeline`: planned tiles -> tile files, collection, manifest.

    Args:
        pipeline: the pipeline to add to.
        tiles: the tiles of the AOI.
        spec: the run.
        handler: the RunInference handler.
        run_info: facts about this run for the manifest's `run` section.
        writer: replaces `write_tile` (same signature); tests inject failures with it.
    """
    totals = ProgressTotals(
        uuid.uuid4().hex, sum(count_chips_in_aoi(t, spec) for t in tiles), len(tiles)
    )
    _ = (
        pipeline
        | "Tiles" >> beam.Create(list(tiles))
        | "EmbedTiles" >> EmbedTiles(spec, handler, run_info or {}, writer, totals=totals)
    )
    return pipeline


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    try:
        if args.stac is not None:
            args.stac = _checked_stac(args.stac)
        args.out = _checked_out(args.out)
        if args.aoi:
            args.aoi = files.local_path(args.aoi)
        aoi_doc = files.read_json(_local_copy(args.aoi)) if args.aoi else None
        args.geometry = aoi_geometry(args.bbox, aoi_doc, aoi_name=args.aoi or "AOI")
        if args.year is not None:
            if not 1980 <= args.year <= 2100:
                raise ValueError(f"--year out of range 1980-2100: {args.year}")
            args.t_start_ms, args.t_end_ms = runner.year_bounds_ms(args.year)
        else:
            args.t_start_ms, args.t_end_ms = runner.parse_period(args.period)
        args.format_list = parse_formats(args.formats)
        remote = not runner.is_local(runner.pipeline_options(beam_args))
        args.collection_list = stac_search.check_search_options(
            args.stac_api, args.collections, remote_run=remote
        )
        args.source_list = None
        if args.sources:
            args.source_list = tuple(s.strip() for s in args.sources.split(",") if s.strip())
            for s in args.source_list:
                try:
                    sensors.get_sensor(s)
                except KeyError as e:
                    raise ValueError(f"--sources: {e.args[0]}") from None
    except ValueError as e:
        msg = str(e)
        if args.aoi and "--" not in msg:
            msg = f"--aoi: {msg}"
        elif args.bbox and msg.startswith("bbox"):
            msg = f"--bbox: {msg}"
        p.error(msg)
    if args.tile_size < 16:
        p.error(f"--tile-size must be >= 16 px; got {args.tile_size}")
    if not 1 <= args.chip_size <= args.tile_size:
        p.error(f"--chip-size must be in 1..--tile-size ({args.tile_size}); got {args.chip_size}")
    if args.halo < 0:
        p.error(f"--halo must be >= 0; got {args.halo}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.read_block < 1:
        p.error(f"--read-block must be >= 1; got {args.read_block}")
    if args.prefetch is None:
        args.prefetch = args.batch_size  # the next batch ready when the model ends one
    if args.prefetch < 0:
        p.error(f"--prefetch must be >= 0; got {args.prefetch}")
    return args, beam_args


# Schemes Beam cannot write to, or that name no folder (`file://` is turned into a path).
_READ_ONLY_SCHEMES = ("http", "https", "ftp")


def _checked_out(out: str) -> str:
    """--out as a folder path (no trailing /); ValueError naming --out when it cannot be one."""
    out = files.local_path(out).rstrip("/") or "/"
    if "://" in out:
        scheme = out.split("://", 1)[0].lower()
        if scheme in _READ_ONLY_SCHEMES:
            raise ValueError(
                f"--out {out}: {scheme}:// is read-only; give a local folder or an object "
                "store prefix (gs://bucket/path)"
            )
        try:
            FileSystems.get_filesystem(out)
        except ValueError:
            raise ValueError(f"--out {out}: no file system for {scheme}:// here") from None
        return out
    if out.startswith("/vsi"):
        raise ValueError(f"--out {out}: GDAL virtual paths are read-only here; use gs://...")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is an existing file; --out names a folder")
    parent = next((a for a in [path, *path.absolute().parents] if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: {parent} is not writable")
    return out


def _checked_stac(stac: str) -> str:
    """--stac as a path or URL; ValueError naming --stac for a missing local catalog."""
    stac = files.local_path(stac)
    if files.is_remote(stac):
        return stac  # opened (and its errors reported) by `check_catalog`
    if Path(stac).is_dir():
        raise ValueError(f"--stac {stac} is a folder; give its catalog.json")
    if not Path(stac).is_file():
        raise ValueError(f"--stac {stac}: no such catalog")
    return stac


def _fail(message: str) -> NoReturn:
    """A request that cannot run: one line on stderr, exit code 2 (like argparse's errors)."""
    print(f"earthembed embed: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _shown(bbox: Sequence[float]) -> str:
    return ",".join(f"{v:.4f}" for v in bbox)


def _date(ms: int) -> str:
    return f"{_utc(ms):%Y-%m-%d}"


def check_catalog(
    catalog: Any,
    geometry: shapely.Geometry,
    t_start_ms: int,
    t_end_ms: int,
    sources: Sequence[str] | None,
    *,
    aoi_option: str,
    period_option: str,
) -> None:
    """The request against the catalog's items; ValueError naming the option that is wrong.

    Args:
        catalog: a `stac.StacCatalog` (anything with `sources` and `item_refs`).
        geometry: the AOI in lon/lat.
        t_start_ms, t_end_ms: the period.
        sources: --sources, or None for all in the catalog.
        aoi_option, period_option: how the AOI and the period were given (for messages).

    The AOI must touch an item of a requested source (a box whose lat/lon swap would touch
    one is named as swapped), and unless every requested source is static (DEM), the period
    must hold an item of a time-varying one inside the AOI.
    """
    available = tuple(catalog.sources)
    if not available:
        raise ValueError("--stac: the catalog has no items")
    missing = [s for s in sources or () if s not in available]
    if missing:
        raise ValueError(
            f"--sources {','.join(missing)}: not in the catalog (it has {','.join(available)})"
        )
    wanted = tuple(sources or available)
    bbox = geometry.bounds
    if not any(catalog.item_refs(s, bbox_lonlat=bbox) for s in wanted):
        boxes = np.array(
            [r.bbox for s in wanted for r in catalog.item_refs(s) if r.bbox is not None]
        )
        if not len(boxes):
            return  # items without bboxes: nothing to check against
        extent = (*boxes[:, :2].min(0), *boxes[:, 2:].max(0))
        shown = _shown(extent)
        swapped = (bbox[1], bbox[0], bbox[3], bbox[2])
        if bbox_intersects(swapped, extent):
            raise ValueError(
                f"{aoi_option} does not touch the catalog (extent {shown}) but its lat/lon swap "
                f"does: lon/lat order is lon,lat (x,y); did you mean "
                f"--bbox {','.join(str(v) for v in swapped)}?"
            )
        bounds = "" if aoi_option.startswith("--bbox") else f" (bounds {_shown(bbox)})"
        raise ValueError(
            f"{aoi_option}{bounds} does not intersect the catalog's extent {shown} (lon/lat)"
        )
    varying = [s for s in wanted if not (s in sensors.SENSORS and sensors.get_sensor(s).is_static)]
    if varying and not any(
        catalog.item_refs(s, t_start_ms, t_end_ms, bbox_lonlat=bbox) for s in varying
    ):
        times = [r.time_ms for s in varying for r in catalog.item_refs(s, bbox_lonlat=bbox)]
        span = f"; its items there span {_date(min(times))} to {_date(max(times))}" if times else ""
        raise ValueError(
            f"{period_option}: no item of {','.join(varying)} in the period "
            f"{_date(t_start_ms)}/{_date(t_end_ms)} over the AOI{span}"
        )


# The catalog unit check reads this many items per source (spread over the period) ...
UNIT_CHECK_ITEMS = 3
# ... and at most this many values a side of each of their band assets (decimated).
UNIT_CHECK_PIXELS = 32


def check_catalog_units(
    catalog: Any,
    geometry: shapely.Geometry,
    t_start_ms: int,
    t_end_ms: int,
    sources: Sequence[str] | None,
    *,
    items: int = UNIT_CHECK_ITEMS,
) -> None:
    """Each band of each requested source against its physical range in `schemas/sensors.py`,
    before the model loads; ValueError naming the source, the band and the likely unit mistake
    ("sentinel2_l2a B04 median 1131 looks like reflectance x 10000 (DN); divide by 10000").

    Bounded: `items` items per source over the AOI and period (spread over it), one decimated
    read of at most UNIT_CHECK_PIXELS^2 values per band asset, the median over them compared
    (`sensors.unit_mistake`, not strict: a median inside the physical range passes). An asset
    that cannot be read is left to the job, which dead-letters it with its reason.
    """
    from beam_jobs.io import stac

    bbox = geometry.bounds
    for source in sources or catalog.sources:
        if source not in sensors.SENSORS:
            continue
        sensor = sensors.get_sensor(source)
        if sensor.is_static:
            refs = catalog.item_refs(source, bbox_lonlat=bbox)
        else:
            refs = catalog.item_refs(source, t_start_ms, t_end_ms, bbox_lonlat=bbox)
        if not refs:
            continue
        picked = [refs[i] for i in sorted(set(np.linspace(0, len(refs) - 1, items).astype(int)))]
        for band in sensor.stored_bands:
            values = []
            for ref in picked:
                try:
                    values.append(stac.sample_band(ref, band, UNIT_CHECK_PIXELS).ravel())
                except stac.AssetReadError:
                    continue
            if not values:
                continue
            why = sensors.unit_mistake(band, np.concatenate(values), strict=False)
            if why is not None:
                ids = ", ".join(r.id for r in picked)
                raise ValueError(f"{source} {why} (median of items {ids})")


def _open_and_check_catalog(args: argparse.Namespace) -> None:
    """Open --stac and check the request against it (`check_catalog`); exit 2 if wrong."""
    from beam_jobs.io import providers, stac

    access = providers.Access(requester_pays=args.requester_pays, sign=not args.no_sign)
    try:
        if args.found_items is not None:  # --stac-api: what the search found
            pairs = ((i.collection_id, i) for i in args.found_items)
            catalog = stac.StacCatalog(
                pairs, href=args.stac_api, provider=args.provider, access=access
            )
        else:
            catalog = stac.StacCatalog.open(
                args.stac,
                provider=args.provider,
                requester_pays=args.requester_pays,
                sign=not args.no_sign,
            )
    except Exception as e:  # any reader failure means the catalog is unusable; say why
        cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        option = f"--stac-api {args.stac_api}" if args.stac_api else f"--stac {args.stac}"
        _fail(f"{option}: cannot read the catalog: {type(e).__name__}: {e}{cause}")
    aoi_option = f"--aoi {args.aoi}" if args.aoi else f"--bbox {args.bbox}"
    period_option = f"--year {args.year}" if args.year is not None else f"--period {args.period}"
    try:
        check_catalog(
            catalog,
            args.geometry,
            args.t_start_ms,
            args.t_end_ms,
            args.source_list,
            aoi_option=aoi_option,
            period_option=period_option,
        )
    except ValueError as e:
        _fail(str(e))
    if not args.unit_check:
        return
    option = f"--stac-api {args.stac_api}" if args.stac_api else f"--stac {args.stac}"
    try:
        check_catalog_units(
            catalog, args.geometry, args.t_start_ms, args.t_end_ms, args.source_list
        )
    except ValueError as e:
        _fail(f"{option}: {e}; --no-unit-check skips this check")


def _local_copy(path: str) -> str:
    """A local path for a small input file (an AOI on GCS is copied to a temp file)."""
    if not files.is_remote(path):
        return path
    if not FileSystems.exists(path):
        raise ValueError(f"--aoi {path}: no such file")
    with FileSystems.open(path) as src:
        data = src.read()
    fd, local = tempfile.mkstemp(suffix=".geojson", prefix="earthembed-aoi-")
    with os.fdopen(fd, "wb") as dst:
        dst.write(data)
    return local


def _check_previous_run(out: str, key: Mapping, overwrite: bool) -> None:
    """Refuse to mix runs in one --out (a different model, period or chip layout)."""
    path = posixpath.join(out, MANIFEST_FILE)
    if overwrite or not FileSystems.exists(path):
        return
    try:
        previous = _read_json(path).get("key")
    except (OSError, ValueError):
        return
    if previous is not None and previous != dict(key):
        diff = sorted(k for k in set(previous) | set(key) if previous.get(k) != key.get(k))
        raise SystemExit(
            f"earthembed embed: {out} holds a run with different {', '.join(diff)} "
            f"({path}); pick another --out or pass --overwrite to re-embed its tiles"
        )


@dataclasses.dataclass
class RunPlan:
    """A parsed, checked command line: what `run` hands to `build_pipeline`."""

    tiles: list[Tile]
    spec: EmbedSpec
    handler: inference.FlaxEmbeddingModelHandler
    run_info: dict[str, Any]
    beam_args: list[str]


def check_request(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parse the options and check them, and the request against the catalog, before any
    expensive work; a wrong request exits 2 with one line naming the option."""
    args, beam_args = _parse_args(argv)
    runner.setup_logging(args.verbose)
    args.found_items = None
    if args.stac_api:  # searched once, here, before the model loads
        try:
            args.found_items = stac_search.search_items(
                args.stac_api,
                args.collection_list,
                geometry=args.geometry,
                start_ms=args.t_start_ms,
                end_ms=args.t_end_ms,
            )
        except stac_search.StacApiError as e:
            _fail(str(e))
    _open_and_check_catalog(args)
    return args, beam_args


def plan_run(
    argv: Sequence[str] | None = None,
    checked: tuple[argparse.Namespace, list[str]] | None = None,
) -> RunPlan:
    """Check the request (`check_request`, unless `checked` is its result), load the model
    once, plan the tiles; create --out."""
    args, beam_args = checked or check_request(argv)
    out = args.out
    found = args.found_items
    if found is not None:
        catalog = posixpath.join(out, stac_search.SEARCH_ITEMS_FILE)
    else:
        catalog = args.stac
    dtype = "bfloat16" if args.bf16 else "float32"
    try:
        bundle = inference.load_bundle_cached(args.model, dtype)
    except Exception as e:  # any loader failure means the option is wrong; say which
        raise SystemExit(
            f"earthembed embed: --model {args.model}: cannot load a model bundle: "
            f"{type(e).__name__}: {e}"
        ) from e
    if int(bundle.embedding_dim) != embedding.EMBEDDING_DIM:
        raise SystemExit(
            f"earthembed embed: --model {args.model} embeds to {bundle.embedding_dim} dims; "
            f"the outputs hold {embedding.EMBEDDING_DIM}"
        )
    tiles, aoi = plan_tiles(args.geometry, args.tile_size)
    if not tiles:
        raise SystemExit("earthembed embed: the AOI (--aoi/--bbox) covers no tile")
    spec = EmbedSpec(
        out=out,
        stac=catalog,
        model=args.model,
        model_version=str(bundle.version),
        model_sha256=str(bundle.sha256),
        t_start_ms=args.t_start_ms,
        t_end_ms=args.t_end_ms,
        tile_size=args.tile_size,
        chip_size=args.chip_size,
        halo=args.halo,
        formats=args.format_list,
        sources=args.source_list,
        read_block=args.read_block,
        aoi_wkb=aoi,
        provider=args.provider,
        requester_pays=args.requester_pays,
        sign=not args.no_sign,
        compute_dtype=dtype,
        retry_failed=args.retry_failed,
        prefetch=args.prefetch,
        share_model=args.share_model,
    )
    _check_previous_run(out, spec.key, args.overwrite)
    if not files.is_remote(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    if found is not None:  # the workers' catalog: what the search found, as an item table
        stac.write_item_table(found, catalog)
    handler = inference.FlaxEmbeddingModelHandler(
        args.model,
        batch_size=args.batch_size,
        compute_dtype=dtype,
        share_across_processes=args.share_model,
    )
    run_info = {
        "command": "earthembed embed " + shlex.join(list(argv) if argv is not None else []),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "batch_size": args.batch_size,
        "compute_dtype": dtype,
    }
    if found is not None:
        run_info["stac_api"] = {
            "url": args.stac_api,
            "collections": list(args.collection_list),
            "items": len(found),
        }
    return RunPlan(tiles, spec, handler, run_info, beam_args)


def _lock_out(args: argparse.Namespace, command: str) -> files.LockInfo:
    """Take --out's lock (exit 2 if another run holds it); report a dead run it replaces."""
    if not files.is_remote(args.out):
        Path(args.out).mkdir(parents=True, exist_ok=True)
    try:
        me, stale = files.acquire_lock(
            args.out, command=command, extra={"batch_size": args.batch_size}
        )
    except files.LockedError as e:
        _fail(f"--out {e}")
    if stale is not None:
        log.warning(
            "the previous %s into %s ended without finishing (killed? if it ran out of "
            "memory with --batch-size %s, lower it); resuming from its completed tiles",
            stale.describe(),
            args.out,
            stale.extra.get("batch_size", "?"),
        )
    for path in files.remove_temporaries(args.out, recursive=True):
        log.info("removed %s, left by an interrupted run", path)
    return me


def _no_valid_pixels_reason(manifest: Mapping) -> str | None:
    """Why a finished run holds no valid pixel (None when it holds some)."""
    counts = manifest.get("counts", {})
    if counts.get("pixels_valid", 0) > 0:
        return None
    failed = counts.get("chips_failed", 0)
    if failed and not counts.get("chips_embedded", 0):
        return f"all {failed} chips failed (reasons in {DEADLETTER_FILE})"
    return (
        f"{counts.get('chips_embedded', 0)} chips embedded, {failed} failed, and no pixel got "
        "an embedding: no usable observation of the sources in the period over the AOI "
        "(--sources, --year/--period, --aoi/--bbox)"
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed embed`: 0 when done, 1 when it wrote no valid pixel."""
    started = time.time()
    if argv is None:
        argv = sys.argv[1:]
    checked = check_request(argv)  # before the lock and the model: a wrong request exits 2
    command = "earthembed embed " + shlex.join(list(argv))
    out = checked[0].out
    me = _lock_out(checked[0], command)
    try:
        plan = plan_run(argv, checked)
        spec = plan.spec
        log.info(
            "embedding %d tiles of %d px (%s) with model %s (%s) into %s",
            len(plan.tiles),
            spec.tile_size,
            spec.label,
            spec.model_version,
            spec.model_sha256[:12],
            spec.out,
        )
        plan.run_info["run_id"] = me.run_id
        options = runner.pipeline_options(plan.beam_args)
        pipeline = build_pipeline(
            runner.create_pipeline(options),
            plan.tiles,
            spec,
            plan.handler,
            run_info=plan.run_info,
        )
        with runner.fail_on_dead_worker(MEMORY_ADVICE, lambda: files.release_lock(out, me)):
            try:
                result = pipeline.run()
                result.wait_until_finish()
            except MemoryError:
                log.error("the job ran out of memory (MemoryError); %s", MEMORY_ADVICE)
                return 1
    finally:
        files.release_lock(out, me)
    counts = counters(result)
    elapsed = time.time() - started
    if not counts:  # Beam's Dask runner reports no metrics
        log.info("done in %.1f s (this runner reports no counters: see %s)", elapsed, out)
    else:
        log.info(
            "done in %.1f s: %d tiles written, %d skipped; %d chips embedded, %d failed; "
            "%d valid px (%.0f px/s)",
            elapsed,
            counts.get("tiles_written", 0),
            counts.get("tiles_skipped", 0),
            counts.get("chips", 0),
            counts.get("chips_failed", 0),
            counts.get("pixels", 0),
            counts.get("pixels", 0) / elapsed if elapsed else math.nan,
        )
    if counts.get("chips_failed", 0):
        log.warning(
            "%d chips failed and are nodata; reasons in %s; their tiles are re-embedded when "
            "the same command is run again",
            counts["chips_failed"],
            posixpath.join(spec.out, DEADLETTER_FILE),
        )
    reason = _no_valid_pixels_reason(_read_json(posixpath.join(spec.out, MANIFEST_FILE)))
    if reason:
        log.error("the run wrote no valid pixel: %s", reason)
        return 1
    return 0


def counters(result, namespace: str = NAMESPACE) -> dict[str, int]:
    """Committed counter values of a namespace (empty if the runner gives none)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        q = result.metrics().query(MetricsFilter().with_namespace(namespace))
    except (AttributeError, RuntimeError):  # runners without metrics
        return {}
    return {c.key.metric.name: int(c.committed or 0) for c in q["counters"]}
