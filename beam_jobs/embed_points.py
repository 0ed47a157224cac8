"""Point observation table -> GeoParquet of embeddings, one row per point.

Runbook
-------
Locally (Python FnApiRunner):

    earthembed embed-points --observations points.parquet --period 2021-01-01/2022-01-01 \\
        --out /tmp/points_emb.parquet                 # the shipped tiny model by default

    earthembed embed-points --observations points.parquet --year 2021 \\
        --model model/weights/tiny --batch-size 512 --out /tmp/points_emb.parquet

On Dataflow (the table and the output on GCS; CPU workers suffice for P = 1 inputs):

    earthembed embed-points --observations gs://bucket/points.parquet --year 2021 \\
        --model /opt/earthembed/model/weights/base --out gs://bucket/emb/points_2021.parquet \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

Input: the point observation table (ARCHITECTURE.md; beam_jobs/io/points.py), acquisitions
kept where start <= time < end of the period (static sources always). Output (GeoParquet 1.1,
written atomically): `point_id` string, `geometry` WKB point (lon/lat, EPSG:4326), `bbox`
covering struct, `embedding` fixed_size_list<float32>[64] (unit vectors), `embedding_int8`
fixed_size_list<int8>[64] (the COG quantization of schemas/embedding.py), in the table's point
order; a point with no valid observation in the period has null embeddings. Schema metadata:
`geo` and `earthembed` (model version and sha256, period, quantization).

How: the table is read once per worker; its points go in chunks of --batch-size through
RunInference with the same handler as `embed` (beam_jobs/inference.py), each point a 1 x 1
model input made by the bundle's `prepare_points`; the chunks' embeddings are gathered and
written as one file. Beam counters (namespace `embed_points`): points, points_empty.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from beam_jobs import inference, runner
from beam_jobs.embed import counters, local_target, period_label
from beam_jobs.flags import embed_points_parser as build_parser
from beam_jobs.io import embeddings
from schemas import embedding
from schemas.observations import Observations

log = logging.getLogger(__name__)

NAMESPACE = "embed_points"


# ------------------------------------------------------------------------------- pure functions


def point_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of at most `size` points covering 0..n."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _fixed_list(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """(N, 64) -> fixed_size_list[64] with nulls where not valid."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    mask = pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, embedding.EMBEDDING_DIM, mask=mask)


def points_table(
    point_ids: Sequence[str],
    lon: np.ndarray,
    lat: np.ndarray,
    emb: np.ndarray,
    *,
    metadata: dict | None = None,
) -> pa.Table:
    """Points and their float embeddings -> the GeoParquet table (metadata attached).

    Args:
        point_ids: (N,) ids.
        lon, lat: (N,) EPSG:4326 coordinates.
        emb: float (N, 64) unit vectors, NaN rows where a point has no embedding.
        metadata: extra JSON stored under the `earthembed` schema metadata key.

    Returns:
        A table with point_id, geometry, bbox, embedding (float32), embedding_int8.
    """
    import shapely

    emb = np.asarray(emb, dtype=np.float32)
    n = len(point_ids)
    if emb.shape != (n, embedding.EMBEDDING_DIM):
        raise ValueError(f"embeddings have shape {emb.shape}; expected ({n}, 64)")
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    valid = embedding.valid_mask(emb)
    q = embedding.quantize(emb)
    table = pa.table(
        {
            "point_id": pa.array([str(p) for p in point_ids], pa.string()),
            "geometry": pa.array(shapely.to_wkb(shapely.points(lon, lat)), pa.binary()),
            "bbox": pa.StructArray.from_arrays(
                [pa.array(lon), pa.array(lat), pa.array(lon), pa.array(lat)],
                names=["xmin", "ymin", "xmax", "ymax"],
            ),
            "embedding": _fixed_list(np.where(valid[:, None], emb, 0), valid),
            "embedding_int8": _fixed_list(q, valid),
        }
    )
    bbox = [lon.min(), lat.min(), lon.max(), lat.max()] if n else None
    meta = {
        "geo": json.dumps(embedding.geo_metadata(4326, bbox)),
        "earthembed": json.dumps(
            {"quantization": embedding.QUANTIZATION_RULE, **(metadata or {})}, sort_keys=True
        ),
    }
    return table.replace_schema_metadata(meta)


# ------------------------------------------------------------------------------- DoFns


class PreparePointsFn(beam.DoFn):
    """(start, end) -> ((start, end), EmbedRequest of those points); the table read once."""

    def __init__(self, table_path: str, t_start_ms: int, t_end_ms: int):
        self._path = table_path
        self._t0 = t_start_ms
        self._t1 = t_end_ms
        self._obs: Observations | None = None

    def setup(self):
        from beam_jobs.io import points

        self._obs = points.read_point_table(self._path, start_ms=self._t0, end_ms=self._t1)

    def process(self, chunk: tuple[int, int]) -> Iterator:
        yield (
            chunk,
            inference.EmbedRequest(inference.take_points(self._obs, *chunk), self._t0, self._t1),
        )


class CollectPointsFn(beam.DoFn):
    """((start, end), PredictionResult) -> (start, ids, lon, lat, (N, 64) embeddings)."""

    def __init__(self):
        self._points = Metrics.counter(NAMESPACE, "points")
        self._empty = Metrics.counter(NAMESPACE, "points_empty")

    def process(self, keyed: tuple[tuple[int, int], PredictionResult]) -> Iterator:
        (start, _), result = keyed
        emb = np.asarray(result.inference, dtype=np.float32)
        empty = int((~embedding.valid_mask(emb)).sum())
        self._points.inc(len(emb) - empty)
        self._empty.inc(empty)
        obs = result.example.obs
        yield start, obs.point_ids, obs.lon, obs.lat, emb


# ------------------------------------------------------------------------------- PTransforms


@dataclasses.dataclass(frozen=True)
class PointsSpec:
    """The run: where the table is, the period, the output and what goes in its metadata."""

    observations: str
    out: str
    t_start_ms: int
    t_end_ms: int
    model_version: str
    model_sha256: str

    def metadata(self) -> dict:
        return {
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "period": period_label(self.t_start_ms, self.t_end_ms),
            "t_start_ms": self.t_start_ms,
            "t_end_ms": self.t_end_ms,
            "observations": self.observations,
        }


class EmbedPoints(beam.PTransform):
    """Point chunks -> the GeoParquet file (a singleton PCollection of its row count)."""

    def __init__(self, spec: PointsSpec, handler: inference.FlaxEmbeddingModelHandler):
        super().__init__()
        self._spec = spec
        self._handler = handler

    def expand(self, chunks):
        spec = self._spec

        def write(parts: list[tuple]) -> int:
            parts = sorted(parts, key=lambda p: p[0])  # the table's point order
            ids = [i for p in parts for i in p[1]]
            lon = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
            lat = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0)
            emb = (
                np.concatenate([p[4] for p in parts])
                if parts
                else np.zeros((0, embedding.EMBEDDING_DIM), np.float32)
            )
            table = points_table(ids, lon, lat, emb, metadata=spec.metadata())
            with local_target(spec.out) as path:
                embeddings.write_embedding_parquet(path, table)
            log.info("wrote %d points to %s", table.num_rows, spec.out)
            return table.num_rows

        return (
            chunks
            | "Redistribute" >> beam.Reshuffle()
            | "PreparePoints"
            >> beam.ParDo(PreparePointsFn(spec.observations, spec.t_start_ms, spec.t_end_ms))
            | "RunInference" >> RunInference(inference.keyed_handler(self._handler))
            | "CollectPoints" >> beam.ParDo(CollectPointsFn())
            | "Gather" >> beam.combiners.ToList()
            | "WriteGeoParquet" >> beam.Map(write)
        )


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    n_points: int,
    spec: PointsSpec,
    handler: inference.FlaxEmbeddingModelHandler,
) -> beam.Pipeline:
    """Add the job to `pipeline`: chunks of the table's points -> one GeoParquet file."""
    _ = (
        pipeline
        | "Chunks" >> beam.Create(point_chunks(n_points, handler.batch_size))
        | "EmbedPoints" >> EmbedPoints(spec, handler)
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed embed-points`."""
    from apache_beam.io.filesystems import FileSystems

    from beam_jobs.io import points

    started = time.time()
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        if args.year is not None:
            t0, t1 = runner.year_bounds_ms(args.year)
        else:
            t0, t1 = runner.parse_period(args.period)
    except ValueError as e:
        p.error(str(e))
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1; got {args.batch_size}")
    if not FileSystems.exists(args.observations):
        raise SystemExit(
            f"earthembed embed-points: --observations {args.observations}: no such file"
        )
    try:
        table = points.read_point_table(args.observations, start_ms=t0, end_ms=t1)
    except ValueError as e:
        raise SystemExit(f"earthembed embed-points: --observations: {e}") from None
    dtype = "bfloat16" if args.bf16 else "float32"
    try:
        bundle = inference.load_bundle_cached(args.model, dtype)
    except Exception as e:  # any loader failure means the option is wrong; say which
        raise SystemExit(
            f"earthembed embed-points: --model {args.model}: cannot load a model bundle: "
            f"{type(e).__name__}: {e}"
        ) from e
    n = len(table.point_ids)
    spec = PointsSpec(args.observations, args.out, t0, t1, str(bundle.version), str(bundle.sha256))
    handler = inference.FlaxEmbeddingModelHandler(
        args.model, batch_size=args.batch_size, compute_dtype=dtype
    )
    log.info("embedding %d points (%s) with model %s", n, period_label(t0, t1), spec.model_version)
    pipeline = build_pipeline(
        runner.create_pipeline(runner.pipeline_options(beam_args)), n, spec, handler
    )
    result = pipeline.run()
    result.wait_until_finish()
    counts = counters(result, NAMESPACE)
    elapsed = time.time() - started
    log.info(
        "done in %.1f s: %d points embedded, %d without observations (%.0f points/s)",
        elapsed,
        counts.get("points", 0),
        counts.get("points_empty", 0),
        n / elapsed if elapsed else math.nan,
    )
    return 0
