"""Three embedding bands (or the first three principal components) -> an RGB PNG and COG.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed quicklook --embeddings demo_out/embeddings --period 2023 --out /tmp/ql.png
    earthembed quicklook --embeddings /data/aef --period 2023 --pca --out /tmp/ql_pca.png

On Dataflow (the PNG and COG are written by one worker; keep the area quick-look sized)::

    earthembed quicklook --embeddings gs://bucket/emb --period 2023 --bbox 4.5,50.5,4.7,50.7 \\
        --out gs://bucket/ql.png --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

Colours: `--bands R,G,B` (default A01,A16,A09, as in Earth Engine's embedding tutorial) or
`--pca` (the first three principal components of a uniform pixel sample, `--sample-size`,
`--seed`; signs fixed so each component's largest loading is positive). Each channel is
stretched linearly from its 2nd to its 98th percentile over the same sample.

Outputs: `--out` (PNG of the mosaic, decimated to at most 1200 px a side) and beside it the
same name with `.tif` (uint8 RGB COG at full resolution, nodata 0 where there is no embedding,
tags: inputs' model version and period, bands or PCA, stretch). Tiles of the first CRS only.
Beam counters (namespace `quicklook`): tiles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import DEFAULT_QUICKLOOK_BANDS
from beam_jobs.flags import quicklook_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile
from schemas.embedding import BAND_NAMES

log = logging.getLogger(__name__)

NAMESPACE = "quicklook"
PERCENTILES = (2.0, 98.0)


# ------------------------------------------------------------------------------- pure functions


def parse_bands(text: str) -> list[int]:
    """'A01,A16,A09' -> band indices; ValueError naming --bands."""
    names = [b.strip().upper() for b in str(text).split(",")]
    if len(names) != 3 or any(n not in BAND_NAMES for n in names):
        raise ValueError(
            f"--bands must be three of {BAND_NAMES[0]}..{BAND_NAMES[-1]}; got {text!r}"
        )
    return [BAND_NAMES.index(n) for n in names]


def fit_colours(sample: np.ndarray, bands: Sequence[int] | None) -> dict:
    """The projection (64, 3) and the stretch (lo, hi per channel) from a pixel sample."""
    if bands is not None:
        proj = np.zeros((sample.shape[1], 3), np.float32)
        proj[list(bands), [0, 1, 2]] = 1.0
        mean = np.zeros(sample.shape[1], np.float32)
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=3, random_state=0).fit(sample)
        comps = pca.components_
        signs = np.sign(comps[np.arange(3), np.argmax(np.abs(comps), axis=1)])
        proj = (comps * signs[:, None]).T.astype(np.float32)
        mean = pca.mean_.astype(np.float32)
    rgb = (sample - mean) @ proj
    lo, hi = np.percentile(rgb, PERCENTILES, axis=0)
    return {"proj": proj, "mean": mean, "lo": lo.astype(np.float32), "hi": hi.astype(np.float32)}


def to_rgb(values: np.ndarray, colours: dict) -> np.ndarray:
    """(H, W, 64) -> uint8 (3, H, W): stretched to 1..255, 0 where there is no embedding."""
    h, w, c = values.shape
    flat = values.reshape(-1, c)
    valid = np.isfinite(flat).all(axis=1)
    out = np.zeros((h * w, 3), np.uint8)
    if valid.any():
        x = (flat[valid] - colours["mean"]) @ colours["proj"]
        span = np.maximum(colours["hi"] - colours["lo"], 1e-6)
        out[valid] = np.round(1 + 254 * np.clip((x - colours["lo"]) / span, 0, 1))
    return out.reshape(h, w, 3).transpose(2, 0, 1)


# ------------------------------------------------------------------------------- DoFns


class RgbTileFn(beam.DoFn):
    """tile + colours -> its full-resolution RGB as a Preview (step 1)."""

    def __init__(self, block, min_confidence):
        self._block, self._conf = block, min_confidence
        self._tiles = Metrics.counter(NAMESPACE, "tiles")

    def process(self, tile: EmbeddingTile, colours: dict) -> Iterator:
        rgb = np.zeros((3, tile.height, tile.width), np.uint8)
        for (r0, r1, c0, c1), field in analysis.iter_windows(tile, self._block, self._conf):
            rgb[:, r0:r1, c0:c1] = to_rgb(field.values, colours)
        self._tiles.inc()
        yield analysis.preview(tile, rgb, 1)


# ------------------------------------------------------------------------------- pipeline


def cog_path(png: str) -> str:
    """The RGB COG beside the PNG: same name, `.tif`."""
    root, _ = os.path.splitext(png)
    return root + ".tif"


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[EmbeddingTile],
    out: str,
    *,
    bands: Sequence[int] | None = (1, 16, 9),
    sample_size: int = 5000,
    seed: int = 0,
    block: int = analysis.DEFAULT_BLOCK,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: pixel sample -> colours -> RGB per tile -> PNG + RGB COG."""
    how = "pca" if bands is None else ",".join(BAND_NAMES[b] for b in bands)
    tags = analysis.output_tags(tiles, analysis="quicklook", colours=how)
    step = analysis.preview_step(tiles)
    listed = pipeline | "Tiles" >> analysis.TilesOfPeriod(tiles)
    colours = (
        listed
        | "SamplePixels"
        >> beam.ParDo(analysis.SampleTilePixels(sample_size, seed, block, min_confidence))
        | "KeepLowest" >> beam.combiners.Top.Smallest(sample_size, key=lambda p: p[0])
        | "Vectors" >> beam.Map(analysis.sample_vectors)
        | "FitColours" >> beam.Map(fit_colours, bands)
    )

    def write(previews, col):
        from affine import Affine

        from beam_jobs.io import cog

        rgb, extent, crs = analysis.mosaic_previews(previews, fill=0)
        x0, _, _, y0 = extent
        px = previews[0].transform[0]
        stretch = {"stretch_lo": ",".join(f"{v:.4f}" for v in col["lo"]),
                   "stretch_hi": ",".join(f"{v:.4f}" for v in col["hi"])}  # fmt: skip
        from beam_jobs.embed import local_target

        with local_target(cog_path(out)) as local:
            cog.write_cog(
                local, rgb.astype(np.uint8), Affine(px, 0, x0, 0, -px, y0), crs, nodata=0,
                band_names=["red", "green", "blue"], tags={**tags, **stretch},
                compress="DEFLATE",
            )  # fmt: skip
        small = rgb[:, ::step, ::step].astype(np.float32) / 255.0
        small[:, (rgb[:, ::step, ::step] == 0).all(axis=0)] = np.nan
        analysis.render_png(
            out, small, extent, kind="rgb", tags={**tags, **stretch},
            title=f"embeddings {how} as RGB, period {tags['source_period']}",
        )  # fmt: skip

    _ = (
        listed
        | "RGB" >> beam.ParDo(RgbTileFn(block, min_confidence), beam.pvalue.AsSingleton(colours))
        | "Gather" >> beam.combiners.ToList()
        | "Write" >> beam.Map(write, beam.pvalue.AsSingleton(colours))
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed quicklook`."""
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        bands = None if args.pca else parse_bands(args.bands or DEFAULT_QUICKLOOK_BANDS)
        if not args.out.lower().endswith(".png"):
            raise ValueError(f"--out must name a .png file; got {args.out!r}")
        if args.sample_size < 10:
            raise ValueError(f"--sample-size must be >= 10; got {args.sample_size}")
        tiles = analysis.tiles_from_args(args)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    analysis.run_pipeline(
        beam_args, build_pipeline, tiles, args.out, bands=bands, sample_size=args.sample_size,
        seed=args.seed, block=args.block, min_confidence=args.min_confidence,
    )  # fmt: skip
    return 0
