"""Two periods -> per-pixel dot product, a change mask at an automatic threshold, polygons, PNG.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed change --embeddings demo_out/embeddings --periods 2023,2024 --out /tmp/chg
    earthembed change --embeddings /data/aef --periods 2022,2023 --threshold 0.8 \\
        --min-area-ha 5 --out /tmp/chg_aef

On Dataflow::

    earthembed change --embeddings gs://bucket/emb --periods 2023,2024 --out gs://bucket/chg \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

Change (Earth Engine's Satellite Embedding tutorial): the dot product of a pixel's embeddings
of the two periods (1 = unchanged; the tutorial flags change below ~0.8 and keeps polygons
above ~2 ha). The threshold here is automatic unless `--threshold` is given: Otsu's threshold
on the histogram of the dot products of all valid pixels of all tiles (400 bins on [-1, 1]);
it splits the stable mode (near 1) from the changed pixels by maximizing the between-class
variance. Otsu assumes two populations: where almost nothing changed it can fall inside the
stable mode (many false alarms), so the threshold and the changed fraction are reported and
`--threshold` overrides it.

Outputs under --out (atomically): `{tile_id}_dot.tif` (float32, NaN nodata),
`{tile_id}_change.tif` (uint8: 1 change, 0 none, 255 nodata; colour table), `changes.parquet`
(GeoParquet, EPSG:4326 polygons of 4-connected changed pixels of at least `--min-area-ha`,
per tile: polygons are cut at tile edges; columns area_m2, area_ha, mean_dot, tile_id,
period_from, period_to), `threshold.json` (threshold, rule, changed fraction), `change.png`.

How: tiles of the two periods are paired by grid (CRS, geotransform, size; names may differ);
pass 1 reads each pair in windows, writes the dot product and adds its histogram to a global
CombineGlobally; pass 2 takes the threshold as a side input, writes the mask and polygonizes it
(rasterio.features.shapes, shapely). Beam counters (namespace `change`): tile_pairs,
tiles_unpaired, polygons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import change_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile, read_tile, tile_windows

log = logging.getLogger(__name__)

NAMESPACE = "change"
HIST_BINS = 400
MASK_NODATA = 255
HISTOGRAMS = "histograms"


# ------------------------------------------------------------------------------- pure functions


def parse_periods(text: str) -> tuple[str, str]:
    """'P1,P2' -> two period labels."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) != 2 or parts[0] == parts[1]:
        raise ValueError(f"--periods must be two different periods P1,P2; got {text!r}")
    return analysis.parse_period(parts[0]), analysis.parse_period(parts[1])


def pair_tiles(
    first: Sequence[EmbeddingTile], second: Sequence[EmbeddingTile]
) -> tuple[list[tuple[EmbeddingTile, EmbeddingTile]], int]:
    """Tiles of the two periods on the same grid, and how many had no partner."""
    by_key = {analysis.grid_key(t): t for t in second}
    pairs = [(t, by_key[analysis.grid_key(t)]) for t in first if analysis.grid_key(t) in by_key]
    return pairs, len(first) + len(second) - 2 * len(pairs)


def dot_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 64) x (H, W, 64) -> (H, W) float32 dot products, NaN where either is missing."""
    return np.einsum("hwc,hwc->hw", a, b).astype(np.float32)


def histogram(dot: np.ndarray) -> np.ndarray:
    """Counts of the finite dot products in HIST_BINS bins on [-1, 1] (clipped)."""
    v = np.clip(dot[np.isfinite(dot)], -1.0, 1.0)
    return np.histogram(v, bins=HIST_BINS, range=(-1.0, 1.0))[0].astype(np.int64)


def otsu_threshold(counts: np.ndarray) -> float:
    """Otsu's threshold of a histogram on [-1, 1]: the bin edge maximizing the between-class
    variance of the values below and above it."""
    counts = np.asarray(counts, np.float64)
    if counts.sum() == 0:
        raise ValueError("no pixel valid in both periods: no dot products to threshold")
    edges = np.linspace(-1.0, 1.0, len(counts) + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts)
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def change_mask(dot: np.ndarray, threshold: float) -> np.ndarray:
    """uint8: 1 where dot < threshold, 0 where not, MASK_NODATA where dot is NaN."""
    mask = np.where(dot < threshold, 1, 0).astype(np.uint8)
    mask[~np.isfinite(dot)] = MASK_NODATA
    return mask


def change_polygons(
    mask: np.ndarray, dot: np.ndarray, tile: EmbeddingTile, min_area_m2: float
) -> list[dict]:
    """Polygons (in the tile's CRS) of 4-connected changed pixels with area >= min_area_m2."""
    import rasterio.features
    import shapely.geometry

    changed = mask == 1
    if not changed.any():
        return []
    out = []
    shapes = rasterio.features.shapes(
        changed.astype(np.uint8), mask=changed, transform=tile.affine, connectivity=4
    )
    for geom, _ in shapes:
        poly = shapely.geometry.shape(geom)
        if poly.area < min_area_m2:
            continue
        inside = (
            rasterio.features.geometry_mask([geom], mask.shape, tile.affine, invert=True) & changed
        )
        out.append({"geometry": poly, "area_m2": float(poly.area),
                    "mean_dot": float(np.nanmean(dot[inside]))})  # fmt: skip
    return out


# ------------------------------------------------------------------------------- DoFns


class DotTileFn(beam.DoFn):
    """(tile1, tile2) -> writes the dot COG; yields (tile1, dot); histogram on `histograms`."""

    def __init__(self, out, tags, block, min_confidence):
        self._out, self._tags, self._block, self._conf = out, tags, block, min_confidence
        self._pairs = Metrics.counter(NAMESPACE, "tile_pairs")

    def process(self, pair) -> Iterator:
        a_tile, b_tile = pair
        dot = np.full((a_tile.height, a_tile.width), np.nan, np.float32)
        for window in tile_windows(a_tile, self._block):
            a = read_tile(a_tile, window, min_confidence=self._conf)
            b = read_tile(b_tile, window, min_confidence=self._conf)
            r0, r1, c0, c1 = window
            dot[r0:r1, c0:c1] = dot_product(a.values, b.values)
        analysis.write_map(
            analysis.map_path(self._out, a_tile, "dot"), dot, a_tile, nodata=np.nan,
            tags=self._tags, band_names=["dot_product"],
        )  # fmt: skip
        self._pairs.inc()
        yield beam.pvalue.TaggedOutput(HISTOGRAMS, histogram(dot))
        yield a_tile, dot


class MaskTileFn(beam.DoFn):
    """(tile, dot) + threshold -> writes the mask COG; yields polygon records and a preview."""

    def __init__(self, out, tags, min_area_m2, step):
        self._out, self._tags, self._min_area, self._step = out, tags, min_area_m2, step
        self._polygons = Metrics.counter(NAMESPACE, "polygons")

    def process(self, element, threshold: float) -> Iterator:
        tile, dot = element
        mask = change_mask(dot, threshold)
        analysis.write_map(
            analysis.map_path(self._out, tile, "change"), mask, tile, nodata=MASK_NODATA,
            tags={**self._tags, "threshold": f"{threshold:.4f}"}, band_names=["change"],
            resampling="nearest",
            colormap={0: (230, 230, 230, 255), 1: (220, 30, 30, 255), MASK_NODATA: (0, 0, 0, 0)},
        )  # fmt: skip
        polys = change_polygons(mask, dot, tile, self._min_area)
        self._polygons.inc(len(polys))
        for p in polys:
            yield beam.pvalue.TaggedOutput(
                "polygons", {**p, "tile_id": tile.tile_id, "crs": tile.crs_wkt}
            )
        yield analysis.preview(tile, dot, self._step)


# ------------------------------------------------------------------------------- outputs


def polygons_frame(records: Sequence[dict], period_from: str, period_to: str):
    """Polygon records (tile CRS) -> GeoDataFrame in EPSG:4326, largest first."""
    import geopandas as gpd

    parts = []
    for crs in sorted({r["crs"] for r in records}):
        rs = [r for r in records if r["crs"] == crs]
        g = gpd.GeoDataFrame(
            {"area_m2": [r["area_m2"] for r in rs], "mean_dot": [r["mean_dot"] for r in rs],
             "tile_id": [r["tile_id"] for r in rs]},
            geometry=[r["geometry"] for r in rs], crs=crs,
        )  # fmt: skip
        parts.append(g.to_crs("EPSG:4326"))
    if parts:
        import pandas as pd

        gdf = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    else:
        gdf = gpd.GeoDataFrame(
            {"area_m2": [], "mean_dot": [], "tile_id": []}, geometry=[], crs="EPSG:4326"
        )
    gdf["area_ha"] = gdf["area_m2"] / 10_000
    gdf["period_from"], gdf["period_to"] = period_from, period_to
    return gdf.sort_values(["area_m2", "tile_id"], ascending=[False, True], ignore_index=True)


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    pairs: Sequence[tuple[EmbeddingTile, EmbeddingTile]],
    out: str,
    *,
    threshold: float | None = None,
    min_area_ha: float = 2.0,
    block: int = analysis.DEFAULT_BLOCK,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: tile pairs -> dot COGs -> threshold -> masks, polygons, PNG."""
    p1, p2 = pairs[0][0].period, pairs[0][1].period
    tags = analysis.output_tags([t for pair in pairs for t in pair], analysis="change",
                                period_from=p1, period_to=p2)  # fmt: skip
    rule = "fixed (--threshold)" if threshold is not None else "otsu"
    tags["threshold_rule"] = rule
    step = analysis.preview_step([a for a, _ in pairs])
    dots = (
        pipeline
        | "Pairs" >> beam.Create(list(pairs))
        | "Spread" >> beam.Reshuffle()
        | "DotProduct"
        >> beam.ParDo(DotTileFn(out, tags, block, min_confidence)).with_outputs(
            HISTOGRAMS, main="dots"
        )
    )
    hist = dots[HISTOGRAMS] | "Histogram" >> beam.CombineGlobally(
        lambda hs: np.sum(list(hs), axis=0) if hs else np.zeros(HIST_BINS, np.int64)
    )
    if threshold is None:
        thr = hist | "Otsu" >> beam.Map(otsu_threshold)
    else:
        thr = pipeline | "FixedThreshold" >> beam.Create([float(threshold)])
    masks = dots.dots | "Mask" >> beam.ParDo(
        MaskTileFn(out, tags, min_area_ha * 10_000, step), beam.pvalue.AsSingleton(thr)
    ).with_outputs("polygons", main="previews")

    def write_report(t, counts):
        edges = np.linspace(-1, 1, HIST_BINS + 1)
        below = float(counts[edges[1:] <= t + 1e-9].sum() / max(counts.sum(), 1))
        analysis.write_json(
            analysis.out_path(out, "threshold.json"),
            {"threshold": t, "rule": rule, "changed_fraction": below,
             "valid_pixels": int(counts.sum()), "min_area_ha": min_area_ha, **tags},
        )  # fmt: skip

    def write_polygons(records):
        gdf = polygons_frame(records, str(p1), str(p2))
        analysis.write_geoparquet(gdf, analysis.out_path(out, "changes.parquet"), tags=tags)
        return gdf

    def write_png(previews, t, records):
        arr, extent, crs = analysis.mosaic_previews(previews)
        outlines = [r["geometry"] for r in records if r["crs"] == crs]
        analysis.render_png(
            analysis.out_path(out, "change.png"), arr, extent,
            title=f"dot product {p1} vs {p2}; change < {t:.3f} ({rule}), "
            f"{len(records)} polygons >= {min_area_ha:g} ha (red)",
            cmap="viridis", vmin=float(np.nanpercentile(arr, 1)), vmax=1.0,
            label="dot product", outlines=outlines, tags={**tags, "threshold": f"{t:.4f}"},
        )  # fmt: skip

    _ = thr | "WriteThreshold" >> beam.Map(write_report, beam.pvalue.AsSingleton(hist))
    gathered = masks.polygons | "GatherPolygons" >> beam.combiners.ToList()
    _ = gathered | "WritePolygons" >> beam.Map(write_polygons)
    _ = (
        masks.previews
        | "GatherPreviews" >> beam.combiners.ToList()
        | "WritePNG"
        >> beam.Map(write_png, beam.pvalue.AsSingleton(thr), beam.pvalue.AsSingleton(gathered))
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed change`."""
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        p1, p2 = parse_periods(args.periods)
        if args.threshold is not None and not -1 <= args.threshold <= 1:
            raise ValueError(f"--threshold must be in [-1, 1]; got {args.threshold}")
        if args.min_area_ha < 0:
            raise ValueError(f"--min-area-ha must be >= 0; got {args.min_area_ha}")
        first = analysis.tiles_from_args(args, p1)
        second = analysis.tiles_from_args(args, p2)
        pairs, unpaired = pair_tiles(first, second)
        if not pairs:
            raise ValueError(f"no tile of {p1} lies on the grid of a tile of {p2}")
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    if unpaired:
        log.warning("%d tile(s) have no partner in the other period and are left out", unpaired)
    log.info("change %s -> %s over %d tile pairs", p1, p2, len(pairs))
    analysis.run_pipeline(
        beam_args, build_pipeline, pairs, args.out, threshold=args.threshold,
        min_area_ha=args.min_area_ha, block=args.block, min_confidence=args.min_confidence,
    )  # fmt: skip
    return 0
