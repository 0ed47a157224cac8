"""The command-line options of every Beam job, and the defaults they show.

`earthembed <job> --help` builds its parser from here without importing the job (Beam, numpy,
TensorFlow and JAX take seconds to import), and each job's `run(argv)` parses with the same
parser. An option name means one thing in every job; the shared `_add_*` helpers keep it so:

    --stac          STAC catalog.json or stac-geoparquet item table (build-training-data, embed)
    --stac-api      STAC API root URL, searched by AOI and period   (build-training-data, embed)
    --collections   the API's collection ids, comma-separated   (with --stac-api)
    --observations  point observation table (Parquet)       (build-training-data, embed-points)
    --bbox / --aoi  lon/lat box / GeoJSON file, EPSG:4326   (simulate, build-training-data, embed)
    --year          one calendar year                       (embed, embed-points)
    --years         several years: 2023,2024 or 2022-2024   (simulate, build-training-data)
    --period        START/END ISO dates, end exclusive      (embed, embed-points)
    --model         a model bundle directory                (embed, embed-points)
    --out           where the job's output goes             (every job)
    --batch-size    model inputs per model call             (embed, embed-points)
    --seed          the random seed of the sampling         (simulate, build-training-data)
    --sources       registry source ids, comma-separated    (simulate, embed)
    --tile-size     side of the square files written, px    (simulate, embed)
    --provider, --requester-pays, --no-sign: decoding and access of real catalogs
                                                            (build-training-data, embed)
    --embeddings    embedding tiles: folder, COG or STAC    (the analysis jobs)
    --period        in the analysis jobs also a period label (2023, 20230401_20240401): the
                    folder `embed` wrote; START/END ISO dates are converted to it
    --min-confidence  mask pixels below this sidecar confidence (the analysis jobs, index)

Beam's own options (--runner, --direct_num_workers, ...) are not listed: every job passes what
its parser does not know on to Beam.

Stdlib only. Defaults owned by lower layers (the simulated regions, biomes and sources, the
example sizes of schemas/examples.py) are mirrored here, and tests/beam_jobs/test_flags.py
checks each mirror against its owner.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------- defaults

# embed, embed-points
DEFAULT_MODEL = str(REPO_ROOT / "model" / "weights" / "tiny")
# Chips per model call. On CPU the encoder runs one 128 px chip at a time whatever the batch
# (model/bundle.py encode_chunked); each chip of a batch adds its prepared inputs (~44 MB) while
# the batch runs, and the reader prepares the next batch meanwhile (--prefetch): 2 and 2
# ran the demo region faster than 4 and 4, in less memory (benchmarks/RESULTS.md, embed). Raise
# it on accelerators (--batch-size 32 on a GPU).
DEFAULT_CHIP_BATCH_SIZE = 2
DEFAULT_POINT_BATCH_SIZE = 256
DEFAULT_FORMATS = "cog,parquet,stac"
DEFAULT_TILE_SIZE = 1024
DEFAULT_CHIP_SIZE = 96
DEFAULT_HALO = 16
# Chips per side read in one window: one 320 px read of 3 x 3 chips of the demo (a year, every
# source) takes 2.7 s against 4.8 s for nine 128 px reads, but holds the block and its nine
# chip crops (76 MB each) at once, 1.2-1.7 GB of RSS; 2 x 2 (a 224 px read, one batch of 4
# chips) keeps most of the saving within the 2.5 GB per-worker budget of issue 26.
DEFAULT_READ_BLOCK = 2
# Chips prepared ahead of the model by embed's reader thread (beam_jobs/prefetch.py), unless
# --prefetch says otherwise: a batch's worth (--batch-size), so the next batch is ready when the
# model finishes one (~44 MB each for a 128 px chip of the tiny bundle, plus the block in
# progress).

# build-training-data
DEFAULT_NUM_SAMPLES = 256
DEFAULT_EVAL_FRACTION = 0.1
COMPOSITES = ("none", "monthly", "dekadal")
# Mirrors of schemas/examples.py (which imports numpy).
EXAMPLE_PATCH_SIZE = 128  # examples.DEFAULT_PATCH_SIZE
EXAMPLE_MAX_FRAMES = 16  # examples.DEFAULT_MAX_FRAMES

# inspect-tfrecords
DEFAULT_STRIP_FRAMES = 8

# simulate: mirrors of simulation/ (whose package import takes seconds).
SIM_REGIONS = ("demo",)  # simulation.REGIONS
SIM_BIOMES = ("temperate", "tropical")  # sorted(simulation.classes.BIOMES)
SIM_SOURCES = ("sentinel2_l2a", "sentinel1", "landsat_c2l2", "cop_dem", "era5_land")  # ALL_SOURCES
SIM_TILE_SIZE = 2048  # simulation.world.DEFAULT_TILE_SIZE
SIM_CLOUD_COVER = 0.4

# embed, build-training-data: mirror of beam_jobs/io/providers.PROVIDER_NAMES
PROVIDER_NAMES = (
    "earthembed",
    "earth-search-v1",
    "earth-search-v0",
    "planetary-computer",
    "cdse",
    "usgs-landsatlook",
)
# analysis jobs (sample, similarity, change, cluster, classify, quicklook)
DEFAULT_BLOCK = 512  # beam_jobs.analysis.DEFAULT_BLOCK
DEFAULT_TOPK = 100
DEFAULT_MIN_AREA_HA = 2.0
DEFAULT_CLUSTERS = 5
DEFAULT_SAMPLE_SIZE = 5000
DEFAULT_CV_BLOCK_M = 1000.0
DEFAULT_CV_FOLDS = 5
CLASSIFY_METHODS = ("knn", "logistic", "forest")
DEFAULT_QUICKLOOK_BANDS = "A01,A16,A09"

# cloud
# A flex template each (templates/JOB/); `search` has none: it runs no pipeline.
TEMPLATE_JOBS = (
    "simulate",
    "build_training_data",
    "embed",
    "embed_points",
    "sample",
    "similarity",
    "index",
    "change",
    "cluster",
    "classify",
    "quicklook",
)
GPU_MACHINE_TYPE = "g2-standard-8"  # the L4 GPU comes only with G2 machine types


# ---------------------------------------------------------------------------------- helpers


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: X)` after every option that has a default; none after a required option, a
    flag (off unless given) or an option whose absence the help text explains."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


BEAM_EPILOG = (
    "Options not listed here go to Beam: e.g. --direct_num_workers 2 --direct_running_mode "
    "multi_processing locally, --runner DataflowRunner --project P --region R on Dataflow."
)


def _parser(command: str, description: str, **kwargs) -> argparse.ArgumentParser:
    kwargs.setdefault("epilog", BEAM_EPILOG)
    return argparse.ArgumentParser(
        prog=f"earthembed {command}",
        description=description,
        formatter_class=_Formatter,
        **kwargs,
    )


# `where` is the parser or a mutually exclusive group of it.
def _add_stac(where, *, required: bool = False) -> None:
    where.add_argument(
        "--stac",
        required=required,
        help="static STAC catalog.json, or a stac-geoparquet item table (.parquet)",
    )


def _add_stac_api(where) -> None:
    where.add_argument(
        "--stac-api",
        metavar="URL",
        help="STAC API root URL: the items of --collections over the AOI and period are "
        "searched once at the start (https only on Dataflow)",
    )


def _add_collections(p) -> None:
    p.add_argument("--collections", help="collection ids to search, comma-separated (--stac-api)")


def _add_access(p) -> None:
    """How items of a catalog decode and how their hrefs are reached (beam_jobs/io/providers.py)."""
    p.add_argument(
        "--provider",
        choices=PROVIDER_NAMES,
        default=None,
        help="decode every item with this provider's profiles (unset: chosen per item from "
        "its collection, links and properties)",
    )
    p.add_argument(
        "--requester-pays",
        action="store_true",
        help="read requester-pays s3:// assets (Landsat on Earth Search), billed to the AWS "
        "account of the environment's credentials (sets AWS_REQUEST_PAYER)",
    )
    p.add_argument(
        "--no-sign",
        action="store_true",
        help="do not sign Planetary Computer hrefs with a SAS token from the planetary-computer "
        "package (hrefs that already carry a token, or a mirror)",
    )


def _add_observations(where, *, required: bool = False) -> None:
    where.add_argument(
        "--observations",
        required=required,
        help="point observation table (Parquet, long format; beam_jobs/io/points.py)",
    )


def _add_bbox(where, note: str = "") -> None:
    where.add_argument("--bbox", help=f"lon/lat minx,miny,maxx,maxy (EPSG:4326){note}")


def _add_aoi(where) -> None:
    where.add_argument("--aoi", help="GeoJSON AOI file (EPSG:4326)")


def _add_year(where) -> None:
    where.add_argument("--year", type=int, help="calendar year (Jan 1 to Jan 1, UTC)")


def _add_years(p, *, default: str | None, note: str = "") -> None:
    p.add_argument("--years", default=default, help=f"years: 2023,2024 or 2022-2024{note}")


def _add_period(where) -> None:
    where.add_argument(
        "--period", help="START/END ISO dates, end exclusive, e.g. 2023-04-01/2024-04-01"
    )


def _add_model(p) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="model bundle directory")


def _add_out(p, what: str, *, required: bool = True) -> None:
    p.add_argument("--out", required=required, help=what)


def _add_batch_size(p, default: int, unit: str) -> None:
    p.add_argument("--batch-size", type=int, default=default, help=f"{unit} per model call")


def _add_bf16(p) -> None:
    p.add_argument("--bf16", action="store_true", help="run the model in bfloat16")


def _add_seed(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed")


def _add_sources(p, *, default: str | None, what: str) -> None:
    p.add_argument(
        "--sources", default=default, help=f"registry source ids, comma-separated, {what}"
    )


def _add_tile_size(p, *, default: int, what: str) -> None:
    p.add_argument("--tile-size", type=int, default=default, help=f"{what} side, px")


def _add_overwrite(p, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=what)


def _add_verbose(p) -> None:
    p.add_argument("--verbose", action="store_true", help="debug logging")


def _add_embeddings(p) -> None:
    p.add_argument(
        "--embeddings",
        required=True,
        help="embedding tiles: a folder (PERIOD/ZONE/*.tif, ours or AEF's *.tiff), one COG or "
        "a STAC catalog JSON",
    )


def _add_analysis_period(where, *, required: bool = True, what: str = "") -> None:
    where.add_argument(
        "--period",
        required=required,
        help="period: a year (2023), a label (20230401_20240401) or START/END ISO dates" + what,
    )


def _add_min_confidence(p) -> None:
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="mask pixels whose quality-sidecar confidence is below this, 0-1 (unset: none; "
        "AEF tiles have no sidecar)",
    )


def _add_analysis_common(p) -> None:
    """--bbox, --min-confidence, --block and --verbose of every analysis job."""
    _add_bbox(p, " (unset: every tile)")
    _add_min_confidence(p)
    p.add_argument(
        "--block", type=int, default=DEFAULT_BLOCK, help="window side read at a time, px"
    )
    _add_verbose(p)


def _add_sample_size(p, what: str) -> None:
    p.add_argument(
        "--sample-size",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        help=f"pixels sampled uniformly over all tiles {what}",
    )


# ---------------------------------------------------------------------------------- parsers


def simulate_parser() -> argparse.ArgumentParser:
    """`earthembed simulate` (Beam options pass through separately)."""
    p = _parser("simulate", "Simulate a multi-sensor region (STAC + COGs).")
    _add_out(p, "output folder")
    _add_years(p, default="2023")
    p.add_argument(
        "--sim-region",
        dest="region",
        default="demo",
        choices=SIM_REGIONS,
        help="named simulated region (--region is Dataflow's, as on every job)",
    )
    _add_bbox(p, " (instead of --sim-region)")
    p.add_argument(
        "--size-km", default=None, help="with --sim-region: W or WxH km (unset: 5.12x2.56)"
    )
    _add_seed(p)
    p.add_argument("--biome", default="temperate", choices=SIM_BIOMES, help="climate and classes")
    p.add_argument(
        "--cloud-cover", type=float, default=SIM_CLOUD_COVER, help="mean cloud fraction (0-1)"
    )
    _add_tile_size(p, default=SIM_TILE_SIZE, what="granule (one COG per band)")
    _add_sources(p, default=",".join(SIM_SOURCES), what="to simulate")
    _add_verbose(p)
    return p


def build_training_data_parser() -> argparse.ArgumentParser:
    """`earthembed build-training-data` (Beam options pass through separately)."""
    p = _parser(
        "build-training-data",
        "STAC catalog or point table -> sharded TFRecords + tf.Transform stats",
    )
    src = p.add_mutually_exclusive_group(required=True)
    _add_stac(src)
    _add_stac_api(src)
    _add_observations(src)
    _add_collections(p)
    _add_bbox(p, " (unset: the labels' or the catalog's extent)")
    _add_aoi(p)
    _add_years(p, default=None, note=" (required with --stac/--stac-api)")
    _add_access(p)
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help=f"patches (unset: {DEFAULT_NUM_SAMPLES}) or points (unset: all)",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help=f"patch side P, px (unset: {EXAMPLE_PATCH_SIZE}; point tables: 1)",
    )
    p.add_argument(
        "--max-frames", type=int, default=EXAMPLE_MAX_FRAMES, help="frames per source kept"
    )
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=DEFAULT_EVAL_FRACTION,
        help="share of samples in the eval split",
    )
    _add_seed(p)
    p.add_argument(
        "--composite",
        choices=COMPOSITES,
        default="none",
        help="monthly / dekadal: frames become monthly / 10-day median composites",
    )
    p.add_argument("--subperiods", type=int, default=1, help="extra random periods per point")
    _add_out(p, "output directory (local or gs://)")
    _add_overwrite(p, "replace a previous run in --out")
    _add_verbose(p)
    return p


def inspect_tfrecords_parser() -> argparse.ArgumentParser:
    """`earthembed inspect-tfrecords`."""
    p = _parser(
        "inspect-tfrecords",
        "counts, frames per source, value ranges and a PNG strip of TFRecords",
        epilog=None,
    )
    p.add_argument("directory", help="output directory of build-training-data")
    _add_out(p, "PNG path (unset: DIRECTORY/inspect.png)", required=False)
    p.add_argument(
        "--max-records", type=int, default=None, help="records read per split (unset: all)"
    )
    p.add_argument(
        "--frames", type=int, default=DEFAULT_STRIP_FRAMES, help="frames per row of the PNG"
    )
    return p


def embed_parser() -> argparse.ArgumentParser:
    """`earthembed embed` (Beam options are passed through)."""
    p = _parser("embed", "AOI + year -> int8 COG + GeoParquet + STAC embedding tiles")
    src = p.add_mutually_exclusive_group(required=True)
    _add_stac(src)
    _add_stac_api(src)
    _add_collections(p)
    where = p.add_mutually_exclusive_group(required=True)
    _add_aoi(where)
    _add_bbox(where)
    when = p.add_mutually_exclusive_group(required=True)
    _add_year(when)
    _add_period(when)
    _add_model(p)
    _add_out(p, "output directory (local or gs://)")
    _add_tile_size(p, default=DEFAULT_TILE_SIZE, what="output tile")
    p.add_argument("--chip-size", type=int, default=DEFAULT_CHIP_SIZE, help="chip core side, px")
    p.add_argument("--halo", type=int, default=DEFAULT_HALO, help="context around a chip, px")
    p.add_argument("--formats", default=DEFAULT_FORMATS, help="subset of cog,parquet,stac")
    _add_batch_size(p, DEFAULT_CHIP_BATCH_SIZE, "chips")
    _add_bf16(p)
    p.add_argument(
        "--share-model",
        action="store_true",
        help="one model per VM shared by the worker processes (accelerator workers)",
    )
    p.add_argument(
        "--read-block",
        type=int,
        default=DEFAULT_READ_BLOCK,
        help="read k x k neighbouring chips in one window (1: every chip on its own)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="chips a reader thread reads and prepares ahead of the model, overlapping "
        "them with it (default: --batch-size; 0: read and prepare in line)",
    )
    _add_sources(p, default=None, what="to read (unset: all in the catalog)")
    _add_access(p)
    _add_overwrite(p, "reuse --out although it holds another run")
    p.add_argument(
        "--retry-failed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on rerun, embed again the tiles whose chips failed (dead-lettered) in an earlier "
        "run; --no-retry-failed keeps them as they are",
    )
    p.add_argument(
        "--unit-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before the model loads, read a decimated sample of each band of up to 3 items "
        "per source and refuse a catalog whose median is outside the band's physical range "
        "(e.g. reflectance x 10000); --no-unit-check skips it (a slow remote catalog)",
    )
    _add_verbose(p)
    return p


def embed_points_parser() -> argparse.ArgumentParser:
    """`earthembed embed-points` (Beam options are passed through)."""
    p = _parser("embed-points", "point observation table -> GeoParquet embeddings")
    _add_observations(p, required=True)
    when = p.add_mutually_exclusive_group(required=True)
    _add_period(when)
    _add_year(when)
    _add_model(p)
    _add_out(p, "output GeoParquet file (local or gs://)")
    _add_batch_size(p, DEFAULT_POINT_BATCH_SIZE, "points")
    _add_bf16(p)
    _add_verbose(p)
    return p


def sample_parser() -> argparse.ArgumentParser:
    """`earthembed sample` (Beam options are passed through)."""
    p = _parser("sample", "embeddings at points (GeoParquet or CSV) -> GeoParquet")
    _add_embeddings(p)
    p.add_argument(
        "--points",
        required=True,
        help="points: GeoParquet (point geometry) or Parquet/CSV with lon, lat columns",
    )
    _add_analysis_period(p, required=False, what=" (unset: every period, a row per period)")
    p.add_argument("--id-column", default=None, help="column of point ids (unset: point_id if any)")
    _add_out(p, "output GeoParquet file")
    _add_analysis_common(p)
    return p


def similarity_parser() -> argparse.ArgumentParser:
    """`earthembed similarity` (Beam options are passed through)."""
    p = _parser("similarity", "query points -> similarity COG per tile, top-k GeoParquet, PNG")
    _add_embeddings(p)
    _add_analysis_period(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument(
        "--query", nargs="+", action="extend", metavar="LON,LAT", help="query points (lon,lat)"
    )
    q.add_argument("--query-file", help="query points: GeoParquet or Parquet/CSV with lon, lat")
    _add_out(p, "output folder")
    p.add_argument("--k", type=int, default=DEFAULT_TOPK, help="most similar pixels listed")
    p.add_argument(
        "--dtype",
        choices=("float32", "int16"),
        default="float32",
        help="similarity COG values: float32, or int16 scaled by 1/10000 (nodata -32768)",
    )
    _add_analysis_common(p)
    return p


def change_parser() -> argparse.ArgumentParser:
    """`earthembed change` (Beam options are passed through)."""
    p = _parser("change", "two periods -> dot-product COG, change mask and polygons, PNG")
    _add_embeddings(p)
    p.add_argument("--periods", required=True, help="P1,P2: the periods compared (labels or years)")
    _add_out(p, "output folder")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="change where the dot product is below this (unset: Otsu's threshold on the "
        "dot products of all tiles; Earth Engine's tutorial uses 0.8)",
    )
    p.add_argument(
        "--min-area-ha",
        type=float,
        default=DEFAULT_MIN_AREA_HA,
        help="change polygons smaller than this are dropped, hectares",
    )
    _add_analysis_common(p)
    return p


def cluster_parser() -> argparse.ArgumentParser:
    """`earthembed cluster` (Beam options are passed through)."""
    p = _parser("cluster", "k-means on a uniform pixel sample -> class COG per tile, PNG")
    _add_embeddings(p)
    _add_analysis_period(p)
    p.add_argument("--k", type=int, default=DEFAULT_CLUSTERS, help="clusters")
    _add_sample_size(p, "to fit k-means on")
    _add_seed(p)
    _add_out(p, "output folder")
    _add_analysis_common(p)
    return p


def classify_parser() -> argparse.ArgumentParser:
    """`earthembed classify` (Beam options are passed through)."""
    p = _parser(
        "classify",
        "labelled points -> class (or value) COG per tile, confidence COG, report.json, PNG",
    )
    _add_embeddings(p)
    _add_analysis_period(p)
    p.add_argument(
        "--label-points",
        "--labels",
        dest="labels",
        required=True,
        help="labelled points: GeoParquet or Parquet/CSV with lon, lat (--labels is the same "
        "option; its template parameter is label_points: Beam's Dataflow options have --labels)",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--label-column", help="class column (classification)")
    what.add_argument("--target", help="numeric column (regression)")
    p.add_argument(
        "--method",
        choices=CLASSIFY_METHODS,
        default="knn",
        help="k nearest neighbours (k=3), logistic regression (ridge for --target) or a "
        "random forest",
    )
    p.add_argument(
        "--cv-block",
        type=float,
        default=DEFAULT_CV_BLOCK_M,
        help="side of the square spatial blocks of the cross-validation, m",
    )
    p.add_argument("--folds", type=int, default=DEFAULT_CV_FOLDS, help="cross-validation folds")
    _add_seed(p)
    _add_out(p, "output folder")
    _add_analysis_common(p)
    return p


def quicklook_parser() -> argparse.ArgumentParser:
    """`earthembed quicklook` (Beam options are passed through)."""
    p = _parser("quicklook", "three bands or PCA -> RGB PNG and RGB COG")
    _add_embeddings(p)
    _add_analysis_period(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--bands", default=None, help=f"three bands as R,G,B (unset: {DEFAULT_QUICKLOOK_BANDS})"
    )
    how.add_argument("--pca", action="store_true", help="the first three principal components")
    _add_sample_size(p, "for the stretch (and the PCA)")
    _add_seed(p)
    _add_out(p, "output PNG (the RGB COG is written beside it, .tif)")
    _add_analysis_common(p)
    return p


def cloud_parser() -> argparse.ArgumentParser:
    """`earthembed cloud`: its own options; job parameters follow as --key value."""
    p = _parser(
        "cloud",
        "Build and run the Dataflow flex templates (templates/) with gcloud.",
        allow_abbrev=False,  # a job parameter must never pass for an abbreviated option here
        epilog="Job parameters follow as --key value (see templates/JOB/metadata.json); a job "
        "parameter whose name is also an option here goes in --parameters key=value.",
    )
    p.add_argument("action", choices=("build", "run"), help="build templates or run a job")
    p.add_argument("job", help=f"{', '.join(TEMPLATE_JOBS)}; build also takes all")
    p.add_argument("--project", required=True, help="Google Cloud project id")
    p.add_argument("--region", required=True, help="e.g. europe-west1 (Dataflow, Cloud Build)")
    p.add_argument("--bucket", required=True, help="bucket for templates, staging and temp")
    p.add_argument("--gpu", action="store_true", help="CUDA image; run: one L4 per G2 worker")
    p.add_argument("--dry-run", action="store_true", help="print the gcloud commands only")
    p.add_argument("--service-account", help="worker service account email")
    p.add_argument("--network", help="VPC network")
    p.add_argument("--subnetwork", help="subnetwork, e.g. regions/R/subnetworks/S")
    p.add_argument("--max-workers", type=int, help="autoscaling ceiling")
    p.add_argument("--machine-type", help=f"worker machine type (--gpu: {GPU_MACHINE_TYPE})")
    p.add_argument("--job-name", help="Dataflow job name (unset: earthembed-JOB-TIMESTAMP)")
    p.add_argument("--image-version", help="image tag (unset: the package version)")
    p.add_argument("--skip-image", action="store_true", help="build: reuse the pushed image")
    p.add_argument(
        "--parameters",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="job parameters whose names are options of this command",
    )
    p.add_argument("--source", type=Path, default=REPO_ROOT, help="repository root")
    return p


# index, search: mirrors of beam_jobs/index.py (which imports numpy and faiss).
INDEX_KINDS = ("exact", "ivf-fp16", "ivf-sq8")  # index.KINDS
DEFAULT_INDEX_KIND = "ivf-fp16"  # index.DEFAULT_KIND
DEFAULT_SHARD_VECTORS = 1 << 26  # index.DEFAULT_SHARD_VECTORS
DEFAULT_TRAIN_SIZE = 1 << 17  # index.DEFAULT_TRAIN_SIZE


def _add_period_label(where, *, required: bool, note: str = "") -> None:
    where.add_argument(
        "--period",
        required=required,
        help="period of the tiles: their folder name (2023, 20230401_20240401) or START/END "
        f"ISO dates{note}",
    )


def index_parser() -> argparse.ArgumentParser:
    """`earthembed index` (Beam options are passed through)."""
    p = _parser("index", "embedding tiles of a period -> sharded ANN index (faiss) + manifest")
    p.add_argument("--embeddings", required=True, help="embedding tiles: folder, STAC or COG")
    _add_period_label(p, required=True)
    _add_out(p, "index directory (local or gs://)")
    p.add_argument(
        "--kind",
        choices=INDEX_KINDS,
        default=DEFAULT_INDEX_KIND,
        help="exact: flat float32; ivf-fp16: inverted file, float16 vectors; ivf-sq8: inverted "
        "file, 8-bit residuals (half the size, recall@10 < 0.95)",
    )
    p.add_argument(
        "--shard-vectors", type=int, default=DEFAULT_SHARD_VECTORS, help="most vectors a shard"
    )
    p.add_argument(
        "--train-size", type=int, default=DEFAULT_TRAIN_SIZE, help="IVF training sample, vectors"
    )
    p.add_argument("--nlist", type=int, help="IVF cells (unset: a power of two <= sqrt(vectors))")
    p.add_argument("--nprobe", type=int, help="default cells searched (unset: max(16, nlist/8))")
    _add_min_confidence(p)
    _add_verbose(p)
    return p


def search_parser() -> argparse.ArgumentParser:
    """`earthembed search` (no pipeline: reads the index's shards in this process)."""
    p = _parser("search", "top-k most similar pixels of an index (`earthembed index`)", epilog=None)
    p.add_argument("--index", required=True, help="index directory built by `earthembed index`")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--query",
        action="append",
        metavar="LON,LAT",
        help="the stored vector of the pixel there (repeat for several queries)",
    )
    what.add_argument(
        "--vector-file",
        help="query vectors: .npy (float or int8 codes), Parquet (`embedding` column) or text",
    )
    p.add_argument("--k", type=int, default=10, help="hits per query")
    p.add_argument("--nprobe", type=int, help="IVF cells searched per shard (unset: the index's)")
    p.add_argument(
        "--embeddings", help="read --query pixels from these tiles (unset: the indexed tiles)"
    )
    _add_period_label(p, required=False, note=" (unset: the index's)")
    _add_out(p, "hits as Parquet (unset: print them)", required=False)
    return p


# command -> its parser
PARSERS = {
    "simulate": simulate_parser,
    "build-training-data": build_training_data_parser,
    "inspect-tfrecords": inspect_tfrecords_parser,
    "embed": embed_parser,
    "embed-points": embed_points_parser,
    "sample": sample_parser,
    "similarity": similarity_parser,
    "change": change_parser,
    "cluster": cluster_parser,
    "classify": classify_parser,
    "quicklook": quicklook_parser,
    "cloud": cloud_parser,
    "index": index_parser,
    "search": search_parser,
}
