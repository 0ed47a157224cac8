"""Simulate a multi-sensor region as a static STAC catalog of COGs, with labels.

Runbook
-------
Locally (Python FnApiRunner; the demo takes a few minutes on 2 cores)::

    earthembed simulate --out demo_out/sim --sim-region demo --years 2023,2024 --seed 0
    earthembed simulate --out /tmp/sim_tropics --biome tropical --size-km 2.56 \
        --years 2023 --cloud-cover 0.6 --direct_num_workers 2 \
        --direct_running_mode multi_processing

A bbox across a UTM zone boundary (each zone is simulated in its own coordinates)::

    earthembed simulate --out /tmp/sim_zones --bbox 5.98,50.60,6.02,50.62 --years 2023

On Dataflow (output on GCS through a FUSE mount or a local worker disk is not supported; write
to a path every worker shares)::

    earthembed simulate --out /gcs/my-bucket/sim --bbox 4.0,50.0,5.0,51.0 --years 2022-2024 \
        --tile-size 1024 --runner DataflowRunner --project my-project --region europe-west1 \
        --temp_location gs://my-bucket/tmp --setup_file ./setup.py

Outputs under --out::

    catalog.json                          written last: its presence means the run finished
    sim_params.json                       every option, the derived region, software version
    {source}/collection.json              one collection per registry source id
    {source}/{item_id}/{item_id}.json     one item per acquisition and granule
    {source}/{item_id}/{BAND}.tif         one COG per band (+ SCL or QA_PIXEL)
    labels/landcover_{year}.tif           uint8 classes, 10 m (`_{epsg}` suffix per zone when
                                          the region spans zones)
    labels/points_{year}.parquet          stratified sample points, EPSG:4326
    labels/changes.parquet                change-event polygons, EPSG:4326

The pipeline: Create(work units) -> Reshuffle -> render and write COGs (one unit per granule
and acquisition, plus label units) -> STAC item dicts -> gather -> write the catalog once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import os
import sys
import uuid
from pathlib import Path

import apache_beam as beam
import pystac
from apache_beam.metrics import Metrics

import simulation as sim
from beam_jobs import progress, runner
from beam_jobs.flags import simulate_parser as build_parser
from beam_jobs.io import files
from beam_jobs.io.cog import write_cog
from schemas import sensors
from schemas.grid import GridWindow, Tile
from simulation import labels as sim_labels
from simulation import render
from simulation.world import SimRegion

LOG = logging.getLogger(__name__)

CATALOG_ID = "earthembed-simulation"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
POINTS_PER_CLASS = 200
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
}


# ---------------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Job options and the leftover Beam options (Dataflow's --region among them)."""
    return runner.parse_job_args(build_parser(), sys.argv[1:] if argv is None else argv)


def region_from_args(args: argparse.Namespace) -> SimRegion:
    """The SimRegion the options describe (ValueError naming the bad option)."""
    return sim.make_region(
        seed=args.seed,
        years=runner.parse_years(args.years),
        biome=args.biome,
        region=args.region,
        bbox=args.bbox,
        size_km=args.size_km,
        tile_size=args.tile_size,
        cloud_cover=args.cloud_cover,
        sources=[s.strip() for s in args.sources.split(",") if s.strip()],
    )


def software_version() -> str:
    try:
        return importlib.metadata.version("earthembed")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------------------------- pure functions


def make_work_units(region: SimRegion) -> list[dict]:
    """Every unit of work: one per (source, acquisition, granule), plus the label units."""
    units: list[dict] = []
    granules = region.granules()
    for source in region.sources:
        times = render.acquisition_times(region, source)
        if source == "era5_land":
            units.extend({"kind": "era5", "source": source, "time_ms": t} for t in times)
            continue
        for tile, g in granules:
            for t in times:
                units.append(
                    {
                        "kind": "frame",
                        "source": source,
                        "time_ms": int(t),
                        "tile": [tile.epsg, tile.col, tile.row, tile.size],
                        "granule": g.to_dict(),
                    }
                )
    units.extend({"kind": "landcover", "year": y} for y in region.year_span)
    units.append({"kind": "changes"})
    return units


def _raster_band(asset: render.Asset) -> dict:
    enc = asset.encoding
    nodata = enc.nodata
    if nodata is not None and nodata != nodata:  # NaN: STAC writes it as a string
        nodata = "nan"
    out = {
        "data_type": enc.dtype,
        "scale": enc.scale,
        "offset": enc.offset,
        "nodata": nodata,
        "spatial_resolution": asset.resolution_m,
    }
    if asset.unit:
        out["unit"] = asset.unit
    return out


def frame_to_item(frame: render.Frame, asset_hrefs: dict[str, str]) -> dict:
    """A STAC item dict for a rendered frame whose assets were written to `asset_hrefs`."""
    t = dt.datetime.fromtimestamp(frame.time_ms / 1000, tz=dt.UTC)
    first = frame.assets[0]
    geom = {"type": "Polygon", "coordinates": [[list(p) for p in frame.footprint_lonlat]]}
    lons = [p[0] for p in frame.footprint_lonlat]
    lats = [p[1] for p in frame.footprint_lonlat]
    props = {
        "proj:epsg": first.epsg,
        "proj:shape": list(first.data.shape),
        "proj:transform": list(first.transform)[:6],
        "sim:tile_id": frame.tile_id,
        **frame.properties,
    }
    exts = [EXTENSIONS["proj"], EXTENSIONS["raster"]]
    if any(k.startswith("view:") for k in props):
        exts.append(EXTENSIONS["view"])
    if any(k.startswith("sat:") for k in props):
        exts.append(EXTENSIONS["sat"])
    if any(k.startswith("sar:") for k in props):
        exts.append(EXTENSIONS["sar"])
    item = pystac.Item(
        id=frame.item_id,
        geometry=geom,
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=t,
        properties=props,
        collection=frame.source,
        stac_extensions=exts,
    )
    sensor = sensors.get_sensor(frame.source)
    eo = False
    for a in frame.assets:
        extra = {
            "raster:bands": [_raster_band(a)],
            "proj:shape": list(a.data.shape),
            "proj:transform": list(a.transform)[:6],
        }
        roles = ["data"]
        if a.categorical:
            roles = ["data", "cloud"]
        elif a.key in sensor.band_names and sensor.band(a.key).center_nm is not None:
            b = sensor.band(a.key)
            extra["eo:bands"] = [
                {
                    "name": b.name,
                    "center_wavelength": round(b.center_nm / 1000.0, 4),
                    "full_width_half_max": round(b.fwhm_nm / 1000.0, 4),
                }
            ]
            eo = True
        item.add_asset(
            a.key,
            pystac.Asset(
                href=asset_hrefs[a.key],
                media_type=COG_MEDIA_TYPE,
                title=a.title or a.key,
                roles=roles,
                extra_fields=extra,
            ),
        )
    if eo:
        item.stac_extensions.append(EXTENSIONS["eo"])
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def write_frame(frame: render.Frame, out_dir: str) -> tuple[dict, int]:
    """Write a frame's COGs under `{out}/{source}/{item_id}/` -> (item dict, assets written)."""
    folder = Path(out_dir) / frame.source / frame.item_id
    hrefs = {}
    for a in frame.assets:
        path = folder / f"{a.key}.tif"
        write_cog(
            path,
            a.data,
            a.transform,
            a.epsg,
            nodata=a.encoding.nodata,
            band_names=[a.key],
            tags={"source": frame.source, "time_ms": frame.time_ms, "unit": a.unit},
            resampling="nearest" if a.categorical else "average",
        )
        hrefs[a.key] = str(path.resolve())
    return frame_to_item(frame, hrefs), len(frame.assets)


def landcover_path(region: SimRegion, year: int, epsg: int) -> str:
    suffix = "" if len(region.windows) == 1 else f"_{epsg}"
    return f"labels/landcover_{year}{suffix}.tif"


def write_landcover(region: SimRegion, year: int, out_dir: str) -> list[str]:
    """Land-cover COG(s) and the stratified point sample of a year; the paths written."""
    paths = []
    names = region.biome_preset.class_names
    for w in region.windows:
        path = os.path.join(out_dir, landcover_path(region, year, w.epsg))
        write_cog(
            path,
            sim.landcover(region, w, year),
            w.transform,
            w.epsg,
            nodata=0,
            band_names=["landcover"],
            tags={"year": year, "classes": json.dumps(names)},
            resampling="mode",
        )
        paths.append(path)
    pts = sim_labels.sample_points(region, year, POINTS_PER_CLASS)
    path = os.path.join(out_dir, f"labels/points_{year}.parquet")
    _write_parquet(pts, path)
    paths.append(path)
    return paths


def write_changes(region: SimRegion, out_dir: str) -> str:
    path = os.path.join(out_dir, "labels/changes.parquet")
    _write_parquet(sim_labels.change_polygons(region), path)
    return path


def _write_parquet(gdf, path: str) -> None:
    with files.atomic_target(path) as tmp:
        gdf.to_parquet(tmp, index=False)


def _write_json_atomic(obj: dict, path: str) -> None:
    with files.atomic_target(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def sim_params(region: SimRegion, args: argparse.Namespace, beam_args: list[str]) -> dict:
    """The content of sim_params.json."""
    return {
        "software": {"name": "earthembed", "version": software_version()},
        "options": {k: v for k, v in sorted(vars(args).items())},
        "beam_args": list(beam_args),
        "region": region.to_params(),
        "classes": {str(k): v for k, v in region.biome_preset.class_names.items()},
        "event_types": list(sim.EVENT_TYPES),
        "granules": [[t.id, g.to_dict()] for t, g in region.granules()],
        "acquisitions": {s: len(render.acquisition_times(region, s)) for s in region.sources},
    }


def write_catalog(items: list[dict], region: SimRegion, out_dir: str) -> str:
    """Assemble the static catalog from item dicts and save it; catalog.json goes last.

    Returns:
        The path of catalog.json.
    """
    out = os.path.abspath(out_dir)
    cat = pystac.Catalog(
        id=CATALOG_ID,
        description=(
            f"Simulated multi-sensor region ({region.biome}, seed {region.seed}, "
            f"years {list(region.years)}); see sim_params.json"
        ),
        title="earthembed simulated Earth",
    )
    by_source: dict[str, list[dict]] = {}
    for d in items:
        by_source.setdefault(d["collection"], []).append(d)
    start = dt.datetime(min(region.years), 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(max(region.years), 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    for source in region.sources:
        sensor = sensors.get_sensor(source)
        col = pystac.Collection(
            id=source,
            description=f"Simulated {sensor.title}.",
            title=sensor.title,
            extent=pystac.Extent(
                pystac.SpatialExtent([list(region.bbox)]),
                pystac.TemporalExtent([[start, end]]),
            ),
            license="CC0-1.0",
        )
        for d in sorted(by_source.get(source, []), key=lambda d: d["id"]):
            item = pystac.Item.from_dict(d, preserve_dict=False, migrate=False)
            item.collection_id = None
            col.add_item(item)
        cat.add_child(col)
    # A trailing separator: pystac would take a last path part with a dot for a file name.
    cat.normalize_hrefs(str(out).rstrip(os.sep) + os.sep)
    cat.make_all_asset_hrefs_relative()
    for col in cat.get_children():
        col.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    cat.catalog_type = pystac.CatalogType.SELF_CONTAINED
    path = os.path.join(out, "catalog.json")
    _write_json_atomic(cat.to_dict(include_self_link=False), path)
    return path


# ---------------------------------------------------------------------------------- DoFns


class RenderUnitFn(beam.DoFn):
    """Renders one work unit, writes its files, and emits the STAC item dict (frames only)."""

    def __init__(self, region_json: str, out_dir: str, progress_of: tuple[str, int] | None = None):
        self._region_json = region_json
        self._out_dir = out_dir
        self._progress_of = progress_of  # (run id, work units): beam_jobs/progress.py
        self._progress = None
        self.items = Metrics.counter("simulate", "items_written")
        self.assets = Metrics.counter("simulate", "assets_written")
        self.labels = Metrics.counter("simulate", "label_files_written")

    def setup(self) -> None:
        self._region = SimRegion.from_params(json.loads(self._region_json))
        if self._progress_of:
            run_id, total = self._progress_of
            self._progress = progress.tracker(run_id, "simulate", total, "work units")

    def process(self, unit: dict):
        kind = unit["kind"]
        if kind == "landcover":
            paths = write_landcover(self._region, unit["year"], self._out_dir)
            self.labels.inc(len(paths))
            LOG.info("wrote land cover and points for %s", unit["year"])
            self._tick()
            return
        if kind == "changes":
            write_changes(self._region, self._out_dir)
            self.labels.inc()
            LOG.info("wrote change polygons")
            self._tick()
            return
        if kind == "era5":
            frame = render.render_era5(self._region, unit["time_ms"])
        else:
            epsg, col, row, size = unit["tile"]
            frame = render.render_frame(
                self._region,
                unit["source"],
                unit["time_ms"],
                Tile(epsg, col, row, size),
                GridWindow.from_dict(unit["granule"]),
            )
        item, n = write_frame(frame, self._out_dir)
        self.items.inc()
        self.assets.inc(n)
        self._tick()
        yield item

    def _tick(self) -> None:
        if self._progress:
            self._progress.add(1)


# ---------------------------------------------------------------------------------- PTransforms


class SimulateRegion(beam.PTransform):
    """Work units -> files on disk -> STAC item dicts."""

    def __init__(self, region: SimRegion, out_dir: str):
        super().__init__()
        self._region = region
        self._out_dir = out_dir

    def expand(self, pbegin):
        units = make_work_units(self._region)
        render_fn = RenderUnitFn(
            self._region.to_json(), self._out_dir, progress_of=(uuid.uuid4().hex, len(units))
        )
        return (
            pbegin
            | "CreateWorkUnits" >> beam.Create(units)
            | "Spread" >> beam.Reshuffle()
            | "RenderAndWrite" >> beam.ParDo(render_fn)
        )


class WriteCatalog(beam.PTransform):
    """Item dicts -> one static STAC catalog, written once all items exist."""

    def __init__(self, region: SimRegion, out_dir: str):
        super().__init__()
        self._region_json = region.to_json()
        self._out_dir = out_dir

    def expand(self, items):
        region_json, out_dir = self._region_json, self._out_dir
        return (
            items
            | "Gather" >> beam.combiners.ToList()
            | "Save"
            >> beam.Map(
                lambda xs: write_catalog(
                    xs, SimRegion.from_params(json.loads(region_json)), out_dir
                )
            )
        )


def build_pipeline(pipeline: beam.Pipeline, region: SimRegion, out_dir: str) -> beam.PCollection:
    """Attach the simulation to a pipeline; returns the PCollection of catalog.json's path."""
    return (
        pipeline
        | "Simulate" >> SimulateRegion(region, out_dir)
        | "WriteCatalog" >> WriteCatalog(region, out_dir)
    )


def run(argv: list[str] | None = None) -> int:
    """Entry point of `earthembed simulate`."""
    args, beam_args = parse_args(argv)
    runner.setup_logging(args.verbose)
    try:
        region = region_from_args(args)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"earthembed simulate: {e}") from None
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    # A stale catalog.json would claim an unfinished rerun complete.
    stale = os.path.join(out_dir, "catalog.json")
    if os.path.exists(stale):
        os.remove(stale)
    _write_json_atomic(sim_params(region, args, beam_args), os.path.join(out_dir, sim.PARAMS_FILE))
    units = make_work_units(region)
    LOG.info(
        "simulating %s (%s, seed %d, years %s): %d granules, %d work units -> %s",
        region.bbox,
        region.biome,
        region.seed,
        list(region.years),
        len(region.granules()),
        len(units),
        out_dir,
    )
    start = dt.datetime.now()
    with runner.create_pipeline(runner.pipeline_options(beam_args)) as p:
        build_pipeline(p, region, out_dir)
    LOG.info("simulation done in %.1f s: %s", (dt.datetime.now() - start).total_seconds(), stale)
    return 0
