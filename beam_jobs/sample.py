"""Points -> their embeddings, read from embedding tiles (ours or AEF's), as GeoParquet.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed sample --embeddings demo_out/embeddings --points sites.parquet --period 2023 \\
        --out /tmp/sites_2023.parquet
    earthembed sample --embeddings /data/aef --points sites.csv --out /tmp/sites.parquet
                                                   # CSV with lon, lat; every period found

On Dataflow (tiles and points on GCS)::

    earthembed sample --embeddings gs://bucket/emb --points gs://bucket/sites.parquet \\
        --period 2023 --out gs://bucket/sites_2023.parquet --runner DataflowRunner \\
        --project P --region R --temp_location gs://bucket/tmp --setup_file ./setup.py

Input points: GeoParquet (point geometries, any CRS) or Parquet/CSV with `lon`, `lat`
(beam_jobs/io/points.read_point_locations). Output (GeoParquet 1.1, atomically): a row per
point and period, in point order: `point_id`, `geometry` (the point, EPSG:4326), `bbox`,
`embedding` fixed_size_list<float32>[64] (dequantized), `embedding_int8` (the stored codes),
`valid`, `period`, `tile_id`, `row`, `col` (north-up pixel of the tile), and the input's
other columns. A point outside every tile, or on a nodata (or masked) pixel, has valid false,
NaN embeddings and codes -128 (the COG nodata); outside every tile its tile_id, row and col are
null. (Not null lists: pyarrow cannot read back a fixed_size_list column holding nulls.) Schema metadata `earthembed`: the tiles' model version(s), periods.

How: the driver reads the points and the tiles' headers and assigns each point to the tile
holding it (per period: the first in listing order where tiles overlap); each tile with points
becomes one element, so a worker opens each tile ONCE and reads only the windows spanning its
points, cell by cell (`embeddings.read_tile_pixels`). Beam counters (namespace `sample`):
tiles_opened, points_sampled, points_nodata, points_outside.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import sample_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile, read_tile_pixels, read_tile_quality
from schemas import embedding

log = logging.getLogger(__name__)

NAMESPACE = "sample"


# ------------------------------------------------------------------------------- pure functions


def assign_points(
    tiles: Sequence[EmbeddingTile], lon: np.ndarray, lat: np.ndarray
) -> list[tuple[EmbeddingTile, np.ndarray, np.ndarray, np.ndarray]]:
    """(tile, point indices, rows, cols) for every tile holding points, per period.

    Within a period a point goes to the first tile (in `tiles` order) that holds it.
    """
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    taken: dict[str | None, np.ndarray] = {}
    out = []
    for tile in tiles:
        free = taken.setdefault(tile.period, np.ones(lon.size, bool))
        rows, cols, inside = analysis.lonlat_to_pixel(tile, lon, lat)
        mine = inside & free
        if not mine.any():
            continue
        free &= ~mine
        idx = np.flatnonzero(mine)
        out.append((tile, idx, rows[idx], cols[idx]))
    return out


def sample_tile(
    tile: EmbeddingTile,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    min_confidence: float | None = None,
) -> np.ndarray:
    """int8 codes (N, 64) at pixels of one tile (NODATA where masked by the confidence)."""
    codes = read_tile_pixels(tile, rows, cols)
    if min_confidence is not None and rows.size:
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        quality = read_tile_quality(tile, (int(r0), int(r1), int(c0), int(c1)))
        if quality is None:
            raise ValueError(f"--min-confidence needs a quality sidecar; {tile.path} has none")
        conf = quality["confidence"][rows - r0, cols - c0]
        codes[~(conf >= min_confidence)] = embedding.NODATA
    return codes


def sample_table(
    points,
    samples: Sequence[tuple[str | None, np.ndarray, np.ndarray, str, np.ndarray, np.ndarray]],
    periods: Sequence[str | None],
    *,
    id_column: str | None = None,
    metadata: dict | None = None,
) -> pa.Table:
    """The output table: a row per point and period (module doc).

    Args:
        points: DataFrame from `read_point_locations`.
        samples: (period, point indices, codes (n, 64), tile_id, rows, cols) per sampled tile.
        periods: the periods, in output order (a block of rows per period).
        id_column: column of point ids (None: `point_id` if present, else the row number).
        metadata: extra `earthembed` schema metadata.
    """
    from beam_jobs.embed_points import points_table

    n = len(points)
    if id_column is not None and id_column not in points.columns:
        raise ValueError(f"--id-column {id_column!r} is not a column of the points")
    col = id_column or ("point_id" if "point_id" in points.columns else None)
    ids = [str(v) for v in points[col]] if col else [str(i) for i in range(n)]
    parts = []
    for period in periods:
        codes = np.full((n, embedding.EMBEDDING_DIM), embedding.NODATA, np.int8)
        tile_ids = np.full(n, None, object)
        rows = np.full(n, -1, np.int64)
        cols = np.full(n, -1, np.int64)
        for p, idx, c, tid, rr, cc in samples:
            if p != period:
                continue
            codes[idx], tile_ids[idx], rows[idx], cols[idx] = c, tid, rr, cc
        t = points_table(
            ids,
            points["lon"].to_numpy(),
            points["lat"].to_numpy(),
            embedding.dequantize(codes),
            metadata=metadata,
        )
        inside = rows >= 0
        t = _without_null_lists(t, codes)
        t = t.append_column("period", pa.array([period] * n, pa.string()))
        t = t.append_column("tile_id", pa.array(list(tile_ids), pa.string()))
        t = t.append_column("row", pa.array(rows, pa.int32(), mask=~inside))
        t = t.append_column("col", pa.array(cols, pa.int32(), mask=~inside))
        for name in points.columns:
            if name in ("lon", "lat", col) or name in t.column_names:
                continue
            t = t.append_column(name, pa.array(points[name].to_numpy(), from_pandas=True))
        parts.append(t)
    return pa.concat_tables(parts)


def _without_null_lists(table: pa.Table, codes: np.ndarray) -> pa.Table:
    """Embeddings as non-null lists (NaN / NODATA rows) plus a `valid` column: pyarrow
    (17-19) cannot read back a Parquet fixed_size_list column holding nulls."""
    valid = ~(codes == embedding.NODATA).all(axis=1)
    values = embedding.dequantize(codes).astype(np.float32)
    dim = embedding.EMBEDDING_DIM
    for name, arr in (("embedding", values), ("embedding_int8", codes)):
        col = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), dim)
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table.append_column("valid", pa.array(valid))


# ------------------------------------------------------------------------------- DoFns


class SampleTileFn(beam.DoFn):
    """(tile, indices, rows, cols) -> (period, indices, codes, tile_id, rows, cols)."""

    def __init__(self, min_confidence: float | None = None):
        self._conf = min_confidence
        self._opened = Metrics.counter(NAMESPACE, "tiles_opened")
        self._sampled = Metrics.counter(NAMESPACE, "points_sampled")
        self._nodata = Metrics.counter(NAMESPACE, "points_nodata")

    def process(self, group) -> Iterator[tuple]:
        tile, idx, rows, cols = group
        self._opened.inc()
        codes = sample_tile(tile, rows, cols, min_confidence=self._conf)
        nodata = int((codes == embedding.NODATA).all(axis=1).sum())
        self._sampled.inc(len(idx) - nodata)
        self._nodata.inc(nodata)
        yield tile.period, idx, codes, tile.tile_id, rows, cols


# ------------------------------------------------------------------------------- PTransforms


class SampleEmbeddings(beam.PTransform):
    """Points -> (period, indices, codes, tile_id, rows, cols), one element per tile opened."""

    def __init__(self, tiles, lon, lat, min_confidence: float | None = None):
        super().__init__()
        self._groups = assign_points(tiles, lon, lat)
        self._conf = min_confidence
        outside = int(np.asarray(lon).size) * len({t.period for t in tiles}) - sum(
            len(g[1]) for g in self._groups
        )
        self.outside = outside

    def expand(self, pbegin):
        return (
            pbegin
            | "PointsByTile" >> beam.Create(self._groups)
            | "Spread" >> beam.Reshuffle()
            | "ReadPixels" >> beam.ParDo(SampleTileFn(self._conf))
        )


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[EmbeddingTile],
    points,
    out: str,
    *,
    id_column: str | None = None,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: points grouped by tile -> pixels read -> one GeoParquet file."""
    from beam_jobs.io.embeddings import write_embedding_parquet

    periods = sorted({t.period for t in tiles}, key=str)
    meta = analysis.output_tags(tiles)

    def write(samples: list[tuple]) -> int:
        table = sample_table(points, samples, periods, id_column=id_column, metadata=meta)
        from beam_jobs.embed import local_target

        with local_target(out) as path:
            write_embedding_parquet(path, table)
        log.info("wrote %d rows to %s", table.num_rows, out)
        return table.num_rows

    sample = SampleEmbeddings(
        tiles, points["lon"].to_numpy(), points["lat"].to_numpy(), min_confidence
    )
    if sample.outside:
        log.warning("%d point-periods lie outside every tile (null embeddings)", sample.outside)
    _ = (
        pipeline
        | "Sample" >> sample
        | "Gather" >> beam.combiners.ToList()
        | "WriteGeoParquet" >> beam.Map(write)
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed sample`."""
    from beam_jobs.io.points import read_point_locations

    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        tiles = analysis.tiles_from_args(args)
        points = read_point_locations(args.points)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    log.info("sampling %d points from %d tiles", len(points), len(tiles))
    analysis.run_pipeline(
        beam_args, build_pipeline, tiles, points, args.out, id_column=args.id_column,
        min_confidence=args.min_confidence,
    )  # fmt: skip
    return 0
