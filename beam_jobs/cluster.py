"""k-means on a uniform pixel sample -> a class COG per tile (colour table), PNG.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed cluster --embeddings demo_out/embeddings --period 2023 --k 5 --out /tmp/clu
    earthembed cluster --embeddings /data/aef --period 2023 --k 8 --sample-size 20000 \\
        --seed 1 --out /tmp/clu_aef

On Dataflow::

    earthembed cluster --embeddings gs://bucket/emb --period 2023 --k 6 --out gs://bucket/clu \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

Unsupervised segmentation (Earth Engine's tutorial: k-means with 4-5 clusters on ~1,000
samples). The sample is uniform over all valid pixels of all tiles, of fixed size
(`--sample-size`), deterministic: each pixel gets a pseudo-random key from its place on the
grid and `--seed` (`analysis.pixel_priority`), each tile offers its lowest keys and a global
`Top.Smallest` keeps the run's lowest: the same sample whatever the tiling, names or order.
scikit-learn's KMeans (k-means++, 10 starts, `--seed`) is fitted on it; clusters are numbered
1..k by decreasing size in the sample (ties by centroid), and every pixel takes its nearest
centroid.

Outputs under --out (atomically): `{tile_id}_cluster.tif` per tile (uint8, 1..k, nodata 0,
colour table, nearest-neighbour overviews), `clusters.json` (centroids, sample size, sample
counts per cluster), `cluster.png`. Beam counters (namespace `cluster`): tiles, pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import cluster_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile

log = logging.getLogger(__name__)

NAMESPACE = "cluster"


# ------------------------------------------------------------------------------- pure functions


def fit_kmeans(sample: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k, 64) centroids, ordered by decreasing cluster size in the sample (then centroid)."""
    from sklearn.cluster import KMeans

    if len(sample) < k:
        raise ValueError(f"--k {k} needs at least {k} valid pixels; the sample has {len(sample)}")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(sample.astype(np.float64))
    sizes = np.bincount(km.labels_, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], tuple(km.cluster_centers_[c])))
    return km.cluster_centers_[order].astype(np.float32)


def assign_clusters(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(H, W, 64) -> uint8 (H, W) nearest centroid + 1; 0 (nodata) where there is no vector."""
    h, w, c = values.shape
    flat = values.reshape(-1, c)
    valid = np.isfinite(flat).all(axis=1)
    out = np.zeros(h * w, np.uint8)
    if valid.any():
        v = flat[valid].astype(np.float32)
        d = (v**2).sum(1)[:, None] - 2 * v @ centroids.T + (centroids**2).sum(1)[None]
        out[valid] = np.argmin(d, axis=1).astype(np.uint8) + 1
    return out.reshape(h, w)


# ------------------------------------------------------------------------------- DoFns


class ClusterTileFn(beam.DoFn):
    """tile + centroids -> writes its class COG; yields its preview."""

    def __init__(self, out, tags, k, step, block, min_confidence):
        self._out, self._tags, self._k, self._step = out, tags, k, step
        self._block, self._conf = block, min_confidence
        self._tiles = Metrics.counter(NAMESPACE, "tiles")
        self._pixels = Metrics.counter(NAMESPACE, "pixels")

    def process(self, tile: EmbeddingTile, centroids: np.ndarray) -> Iterator:
        classes = np.zeros((tile.height, tile.width), np.uint8)
        for (r0, r1, c0, c1), field in analysis.iter_windows(tile, self._block, self._conf):
            classes[r0:r1, c0:c1] = assign_clusters(field.values, centroids)
        analysis.write_map(
            analysis.map_path(self._out, tile, "cluster"), classes, tile,
            nodata=analysis.CLASS_NODATA, tags=self._tags, band_names=["cluster"],
            resampling="nearest", colormap=analysis.class_colormap(self._k),
        )  # fmt: skip
        self._tiles.inc()
        self._pixels.inc(int((classes > 0).sum()))
        yield analysis.preview(tile, classes, self._step)


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[EmbeddingTile],
    out: str,
    *,
    k: int = 5,
    sample_size: int = 5000,
    seed: int = 0,
    block: int = analysis.DEFAULT_BLOCK,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: uniform sample -> k-means -> class COG per tile, clusters.json, PNG."""
    tags = analysis.output_tags(tiles, analysis="cluster", k=k, sample_size=sample_size, seed=seed)
    step = analysis.preview_step(tiles)
    listed = pipeline | "Tiles" >> analysis.TilesOfPeriod(tiles)
    sample = (
        listed
        | "SamplePixels"
        >> beam.ParDo(analysis.SampleTilePixels(sample_size, seed, block, min_confidence))
        | "KeepLowest" >> beam.combiners.Top.Smallest(sample_size, key=lambda p: p[0])
        | "Vectors" >> beam.Map(analysis.sample_vectors)
    )
    centroids = sample | "KMeans" >> beam.Map(fit_kmeans, k, seed)

    def write_report(c, s):
        counts = np.bincount(assign_clusters(s[None], c)[0], minlength=k + 1)[1:]
        analysis.write_json(
            analysis.out_path(out, "clusters.json"),
            {**tags, "centroids": c.round(6).tolist(), "sample_size": len(s),
             "sample_counts": counts.tolist()},
        )  # fmt: skip

    def write_png(previews):
        arr, extent, _ = analysis.mosaic_previews(previews, fill=0)
        analysis.render_png(
            analysis.out_path(out, "cluster.png"), arr.astype(np.float32), extent,
            title=f"k-means, k={k}, on {sample_size} sampled pixels, period "
            f"{tags['source_period']}",
            kind="classes", class_names={c: f"cluster {c}" for c in range(1, k + 1)}, tags=tags,
        )  # fmt: skip

    _ = centroids | "WriteClusters" >> beam.Map(write_report, beam.pvalue.AsSingleton(sample))
    _ = (
        listed
        | "Assign"
        >> beam.ParDo(
            ClusterTileFn(out, tags, k, step, block, min_confidence),
            beam.pvalue.AsSingleton(centroids),
        )
        | "GatherPreviews" >> beam.combiners.ToList()
        | "WritePNG" >> beam.Map(write_png)
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed cluster`."""
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        if not 2 <= args.k <= 254:
            raise ValueError(f"--k must be in 2..254; got {args.k}")
        if args.sample_size < args.k:
            raise ValueError(f"--sample-size must be >= --k; got {args.sample_size}")
        tiles = analysis.tiles_from_args(args)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    log.info("k-means (k=%d) over %d tiles", args.k, len(tiles))
    analysis.run_pipeline(
        beam_args, build_pipeline, tiles, args.out, k=args.k, sample_size=args.sample_size,
        seed=args.seed, block=args.block, min_confidence=args.min_confidence,
    )  # fmt: skip
    return 0
