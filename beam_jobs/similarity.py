"""Query points -> similarity of every pixel to them: a COG per tile, the top k, a PNG.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed similarity --embeddings demo_out/embeddings --period 2023 \\
        --query 4.615,50.589 --query 4.620,50.590 --out /tmp/sim_2023
    earthembed similarity --embeddings /data/aef --period 2023 --query-file forests.parquet \\
        --k 500 --dtype int16 --out /tmp/forest_like

On Dataflow::

    earthembed similarity --embeddings gs://bucket/emb --period 2023 --query-file \\
        gs://bucket/q.parquet --out gs://bucket/sim --runner DataflowRunner --project P \\
        --region R --temp_location gs://bucket/tmp --setup_file ./setup.py

Similarity (Earth Engine's Satellite Embedding tutorial): the query vector is the mean of the
query points' embeddings, renormalized to unit length; a pixel's similarity is its dot product
with it (cosine, as embeddings are unit vectors; 1 = identical; the tutorial maps > ~0.9).

Outputs under --out (atomically): `{tile_id}_similarity.tif` per tile (float32, NaN nodata;
or `--dtype int16`: round(s * 10000), nodata -32768, GDAL scale 1e-4), `topk.parquet` (the k
most similar valid pixels over all tiles: score, tile_id, row, col, x, y, point geometry at
the pixel centre in EPSG:4326, rank), `query.json` (the query points, how many had an
embedding, the query vector), `similarity.png`. Tags: the inputs' model version and period.

How: the query points are sampled like `sample` (each tile holding one opened once), their
vectors averaged by a CombineGlobally into a side input; each tile is read in windows, its
similarity written, and its own k best pixels go to a global `Top.Of(k)` combiner.
Beam counters (namespace `similarity`): tiles, pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import similarity_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile
from beam_jobs.sample import SampleEmbeddings
from schemas import embedding

log = logging.getLogger(__name__)

NAMESPACE = "similarity"
INT16_SCALE = 1e-4
INT16_NODATA = -32768
CANDIDATES = "candidates"


# ------------------------------------------------------------------------------- pure functions


def query_vector(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean of the valid (finite) query vectors (n, 64) -> (64,) float32."""
    vectors = np.asarray(vectors, np.float32).reshape(-1, embedding.EMBEDDING_DIM)
    vectors = vectors[np.isfinite(vectors).all(axis=1)]
    if len(vectors) == 0:
        raise ValueError("no query point has an embedding (outside the tiles or nodata)")
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0:
        raise ValueError("the query embeddings cancel out (their mean is zero)")
    return (mean / norm).astype(np.float32)


def similarity(values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(H, W, 64) embeddings . (64,) query -> (H, W) float32, NaN where there is none."""
    return np.einsum("hwc,c->hw", values, query).astype(np.float32)


def encode(sim: np.ndarray, dtype: str) -> tuple[np.ndarray, float | int, float]:
    """Similarity as stored: (array, nodata, GDAL scale)."""
    if dtype == "float32":
        return sim.astype(np.float32), np.nan, 1.0
    q = np.where(np.isfinite(sim), np.round(np.nan_to_num(sim) / INT16_SCALE), INT16_NODATA)
    return q.astype(np.int16), INT16_NODATA, INT16_SCALE


def best_pixels(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the k highest finite values (ties: row-major order)."""
    flat = np.where(np.isfinite(sim), sim, -np.inf).ravel()
    n = int(min(k, np.isfinite(sim).sum()))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.argsort(-flat, kind="stable")[:n]
    return np.divmod(idx, sim.shape[1])


# ------------------------------------------------------------------------------- DoFns


class MeanVector(beam.CombineFn):
    """Sum and count of vectors -> their unit-length mean (`query_vector`)."""

    def create_accumulator(self):
        return np.zeros(embedding.EMBEDDING_DIM, np.float64), 0

    def add_input(self, acc, vec):
        return acc[0] + vec, acc[1] + 1

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), sum(a[1] for a in accs)

    def extract_output(self, acc):
        if acc[1] == 0:
            raise ValueError("no query point has an embedding (outside the tiles or nodata)")
        return query_vector(acc[0][None] / acc[1])


class SimilarityTileFn(beam.DoFn):
    """tile (+ query side input) -> writes its COG; yields its preview, and its k best pixels
    as (score, tile_id, row, col, x, y, lon, lat) on the `candidates` output."""

    def __init__(self, out, k, dtype, tags, step, block, min_confidence):
        self._out, self._k, self._dtype, self._tags = out, k, dtype, tags
        self._step, self._block, self._conf = step, block, min_confidence
        self._tiles = Metrics.counter(NAMESPACE, "tiles")
        self._pixels = Metrics.counter(NAMESPACE, "pixels")

    def process(self, tile: EmbeddingTile, query: np.ndarray) -> Iterator:
        sim = np.full((tile.height, tile.width), np.nan, np.float32)
        for (r0, r1, c0, c1), field in analysis.iter_windows(tile, self._block, self._conf):
            sim[r0:r1, c0:c1] = similarity(field.values, query)
        stored, nodata, scale = encode(sim, self._dtype)
        path = analysis.map_path(self._out, tile, "similarity")
        analysis.write_map(
            path, stored, tile, nodata=nodata, tags=self._tags, band_names=["similarity"],
            scales=[scale],
        )  # fmt: skip
        self._tiles.inc()
        self._pixels.inc(int(np.isfinite(sim).sum()))
        rows, cols = best_pixels(sim, self._k)
        x, y = analysis.pixel_xy(tile, rows, cols)
        lon, lat = analysis.pixel_lonlat(tile, rows, cols)
        for i in range(rows.size):
            yield beam.pvalue.TaggedOutput(
                CANDIDATES,
                (float(sim[rows[i], cols[i]]), tile.tile_id, int(rows[i]), int(cols[i]),
                 float(x[i]), float(y[i]), float(lon[i]), float(lat[i])),
            )  # fmt: skip
        yield analysis.preview(tile, sim, self._step)


# ------------------------------------------------------------------------------- outputs


def topk_frame(candidates: Sequence[tuple]):
    """Top candidates -> GeoDataFrame (EPSG:4326 points), best first, with a rank."""
    import geopandas as gpd
    import pandas as pd

    cols = ["score", "tile_id", "row", "col", "x", "y", "lon", "lat"]
    df = pd.DataFrame(sorted(candidates, key=lambda c: (-c[0], c[1], c[2], c[3])), columns=cols)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    geom = gpd.points_from_xy(df.pop("lon"), df.pop("lat"))
    return gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[EmbeddingTile],
    query_lon: np.ndarray,
    query_lat: np.ndarray,
    out: str,
    *,
    k: int = 100,
    dtype: str = "float32",
    block: int = analysis.DEFAULT_BLOCK,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: query vector -> similarity COG per tile, topk.parquet, PNG."""
    tags = analysis.output_tags(tiles, analysis="similarity", query_points=len(query_lon))
    step = analysis.preview_step(tiles)

    def vectors(sampled):
        _, _, codes, *_ = sampled
        values = embedding.dequantize(codes)
        yield from values[np.isfinite(values).all(axis=1)]

    query = (
        pipeline
        | "SampleQuery" >> SampleEmbeddings(tiles, query_lon, query_lat, min_confidence)
        | "QueryVectors" >> beam.FlatMap(vectors)
        | "MeanQuery" >> beam.CombineGlobally(MeanVector())
    )
    results = (
        pipeline
        | "Tiles" >> analysis.TilesOfPeriod(tiles)
        | "Similarity"
        >> beam.ParDo(
            SimilarityTileFn(out, k, dtype, tags, step, block, min_confidence),
            beam.pvalue.AsSingleton(query),
        ).with_outputs(CANDIDATES, main="previews")
    )

    def write_topk(best):
        analysis.write_geoparquet(
            topk_frame(best), analysis.out_path(out, "topk.parquet"), tags=tags
        )

    def write_query(q):
        analysis.write_json(
            analysis.out_path(out, "query.json"),
            {"lon": list(map(float, query_lon)), "lat": list(map(float, query_lat)),
             "vector": [float(v) for v in q], **tags},
        )  # fmt: skip

    def write_png(previews, q):
        import pyproj

        arr, extent, crs = analysis.mosaic_previews(previews)
        qx, qy = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
            np.asarray(query_lon), np.asarray(query_lat)
        )
        analysis.render_png(
            analysis.out_path(out, "similarity.png"), arr, extent,
            title=f"similarity to the mean of {len(query_lon)} query point(s), "
            f"period {tags['source_period']}",
            cmap="magma", vmin=float(np.nanpercentile(arr, 2)), vmax=1.0,
            label="dot product", points=(np.asarray(qx), np.asarray(qy)), tags=tags,
        )  # fmt: skip

    _ = (
        results[CANDIDATES]
        | "TopK" >> beam.combiners.Top.Of(k, key=lambda c: (c[0], c[1], -c[2], -c[3]))
        | "WriteTopK" >> beam.Map(write_topk)
    )
    _ = query | "WriteQuery" >> beam.Map(write_query)
    _ = (
        results.previews
        | "GatherPreviews" >> beam.combiners.ToList()
        | "WritePNG" >> beam.Map(write_png, beam.pvalue.AsSingleton(query))
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed similarity`."""
    from beam_jobs.io.points import read_point_locations

    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        if args.k < 1:
            raise ValueError(f"--k must be >= 1; got {args.k}")
        tiles = analysis.tiles_from_args(args)
        if args.query_file:
            q = read_point_locations(args.query_file)
            lon, lat = q["lon"].to_numpy(), q["lat"].to_numpy()
        else:
            lon, lat = np.array([analysis.parse_lonlat(t) for t in args.query]).T
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    log.info("similarity to %d query point(s) over %d tiles", len(lon), len(tiles))
    analysis.run_pipeline(
        beam_args, build_pipeline, tiles, lon, lat, args.out, k=args.k, dtype=args.dtype,
        block=args.block, min_confidence=args.min_confidence,
    )  # fmt: skip
    return 0
