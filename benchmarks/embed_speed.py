"""Speed of `earthembed embed` end to end against the bare model on the same chips; storage.

Runbook:

    earthembed simulate --out /tmp/emb_demo_sim --sim-region demo --years 2023 --seed 0
    python -m benchmarks.embed_speed --stac /tmp/emb_demo_sim/catalog.json --work /tmp/embed_speed
    python -m benchmarks.embed_speed --stac ... --work ... -- --direct_num_workers 2 \\
        --direct_running_mode multi_processing          # after `--`: passed to the embed job

Figures (printed as a markdown block, written to WORK/embed_speed.json):
- end to end: the wall time of `earthembed embed` on the region (planning, model load and
  compile, reading every chip from the catalog, inference, quantization, writing COG, sidecar,
  GeoParquet, STAC, manifest), as pixels of the written tiles per second;
- bare model: the same chips, read and prepared beforehand (untimed), through
  `bundle.embed_batch` in fixed batches of --batch-size after one compiling batch; the median
  of --runs passes, as the same pixels (every chip's core) per second;
- the ratio end-to-end / bare (the pipeline's efficiency; goal >= 0.9, issue 26), and the per-chip read
  and prepare times that explain it;
- bytes per pixel on disk: the embedding COG, the quality sidecar, and the GeoParquet (per
  row, i.e. per valid pixel).

The AOI defaults to the simulated region (sim_params.json beside the catalog) less 1 m, so
the demo's two 256 px tiles are embedded whole.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def peak_rss(every_s: float = 0.05) -> Iterator[dict]:
    """The peak resident memory of this process (GB) while the block runs, sampled by a
    thread every `every_s` from /proc/self/statm (ru_maxrss is the peak of the whole
    process, not of a phase). Linux only."""
    page, out, done = os.sysconf("SC_PAGE_SIZE"), {"gb": 0.0}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as f:
                out["gb"] = max(out["gb"], int(f.read().split()[1]) * page / 1e9)
            done.wait(every_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        done.set()
        t.join()


def region_aoi(catalog: Path, out: Path) -> Path:
    """A GeoJSON AOI: the simulated region beside the catalog (sim_params.json), less 1 m."""
    import simulation

    geometry = simulation.region_aoi(simulation.load_region(catalog.parent), inset_m=1.0)
    out.write_text(json.dumps(geometry))
    return out


def bare_model(plan, runs: int) -> dict:
    """Read (in the job's blocks) and prepare the plan's chips, timing each stage, then time
    embed_batch alone over them."""
    from beam_jobs import embed, inference
    from beam_jobs.io import stac
    from benchmarks.speed import time_callable

    spec, handler = plan.spec, plan.handler
    bundle = inference.load_bundle_cached(spec.model, handler._compute_dtype)
    catalog = stac.StacCatalog.open(spec.stac)
    items, core_px, read_s, prep_s = [], 0, [], []
    for tile in plan.tiles:
        for block in embed.read_blocks(embed.chips_in_aoi(tile, spec), spec.read_block):
            t0 = time.perf_counter()
            obs = stac.read_observations(
                catalog, block.window, spec.t_start_ms, spec.t_end_ms, sources=spec.sources
            )
            read_s.append(time.perf_counter() - t0)
            for chip in block.chips:
                t1 = time.perf_counter()
                chip_obs = embed.crop_observations(obs, chip.window, *block.offset(chip))
                items.append(
                    bundle.prepare(
                        chip_obs, t_start_ms=spec.t_start_ms, t_end_ms=spec.t_end_ms, seed=0
                    )
                )
                prep_s.append(time.perf_counter() - t1)
                (rs, cs), _ = chip.core_slices()
                core_px += (rs.stop - rs.start) * (cs.stop - cs.start)
    bs = handler.batch_size
    batches = [bundle.pad_batch(items[i : i + bs], bs) for i in range(0, len(items), bs)]

    def embed_all() -> None:
        for b in batches:
            np.asarray(bundle.embed_batch(b))

    np.asarray(bundle.embed_batch(batches[0]))  # compile (one batch; every batch has its shape)
    timing = time_callable(
        embed_all, items=core_px, unit="pixels", warmup=0, runs=runs, name="embed_batch"
    )
    return {
        "chips": len(items),
        "batches": len(batches),
        "core_pixels": core_px,
        "embed_batch_s": timing.median_s,
        "px_per_s": timing.items_per_s,
        "read_s_per_chip": float(np.sum(read_s) / len(items)),
        "read_blocks": len(read_s),
        "prepare_s_per_chip": float(np.mean(prep_s)),
    }


def end_to_end_run(embed_argv: list[str]) -> dict:
    """Run the job as `earthembed embed` does; return where its time went (job metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    from beam_jobs import embed, runner

    plan = embed.plan_run(embed_argv)
    pipeline = embed.build_pipeline(
        runner.create_pipeline(runner.pipeline_options(plan.beam_args)),
        plan.tiles,
        plan.spec,
        plan.handler,
        run_info=plan.run_info,
    )
    result = pipeline.run()
    result.wait_until_finish()
    dists = {}
    for ns in (embed.NAMESPACE, plan.handler.get_metrics_namespace()):
        q = result.metrics().query(MetricsFilter().with_namespace(ns))
        for d in q["distributions"]:
            dists[d.key.metric.name] = d.committed
    infer = dists.get("inference_batch_latency_micro_secs")
    reads = dists.get("block_read_ms")
    return {
        "model_s": infer.sum / 1e6 if infer else None,
        "model_batches": infer.count if infer else None,
        "read_s": reads.sum / 1e3 if reads else None,
        "read_blocks": reads.count if reads else None,
    }


def storage(out: Path) -> dict:
    """Bytes per pixel of the COGs, the sidecars and the GeoParquet files under `out`."""
    from benchmarks.storage import bytes_per_pixel

    groups: dict[str, list] = {"cog": [], "quality": [], "parquet": []}
    for f in sorted(out.rglob("*")):
        if f.name.endswith("_quality.tif"):
            groups["quality"].append(bytes_per_pixel(f))
        elif f.suffix == ".tif":
            groups["cog"].append(bytes_per_pixel(f))
        elif f.suffix == ".parquet":
            groups["parquet"].append(bytes_per_pixel(f))
    res = {}
    for k, figs in groups.items():
        b, n = sum(f.bytes for f in figs), sum(f.pixels for f in figs)
        res[k] = {
            "files": len(figs),
            "bytes": b,
            "pixels": n,
            "bytes_per_pixel": b / n if n else None,
        }
    return res


def _gb(value: float | None) -> str:
    """A sampled peak in GB, or a dash for a JSON written before the peaks were sampled."""
    return "—" if value is None else f"{value:.2f} GB"


def markdown(doc: dict) -> str:
    e, b, s = doc["end_to_end"], doc["bare"], doc["storage"]
    lines = [
        "## embed speed: the demo region",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Date {doc['date']}; machine: {doc['machine']}; model {doc['model']} "
        f"({doc['compute_dtype']}), tiles {doc['tile_size']} px, chips {doc['chip_size']} + "
        f"2 x {doc['halo']} px halo, batch {doc['batch_size']}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| end to end (`earthembed embed`) | {e['wall_s']:.1f} s for {e['tile_pixels']:,} px "
        f"({e['tiles']} tiles, {e['chips']} chips): **{e['px_per_s']:,.0f} px/s** |",
        f"| bare `bundle.embed_batch`, same chips | {b['embed_batch_s']:.2f} s for "
        f"{b['core_pixels']:,} px ({b['batches']} batches): **{b['px_per_s']:,.0f} px/s** |",
        f"| ratio end to end / bare (goal >= 0.9) | **{doc['ratio']:.3f}** |",
        f"| inside the end-to-end run: model (RunInference batches) / block reads | "
        f"{e['model_s']:.1f} s ({e['model_batches']} batches) / {e['read_s']:.1f} s "
        f"({e['read_blocks']} blocks) |",
        f"| per chip: read / prepare | {b['read_s_per_chip']:.2f} s / "
        f"{b['prepare_s_per_chip']:.3f} s |",
        f"| embedding COG | {s['cog']['bytes_per_pixel']:.2f} B/px "
        f"({s['cog']['bytes']:,} B, {s['cog']['files']} files) |",
        f"| quality sidecar | {s['quality']['bytes_per_pixel']:.2f} B/px |",
        f"| GeoParquet | {s['parquet']['bytes_per_pixel']:.2f} B per row (valid pixel) |",
        f"| valid pixels | {e['valid_pixels']:,} of {e['tile_pixels']:,} |",
        f"| peak resident memory: end-to-end run / bare model (sampled) | "
        f"{_gb(e.get('peak_rss_gb'))} / {_gb(b.get('peak_rss_gb'))} |",
        f"| peak memory of the benchmark process (ru_maxrss) | {doc['max_rss_gb']:.1f} GB |",
    ]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.embed_speed`: print the markdown block, write the JSON."""
    import datetime as dt

    from beam_jobs import embed, inference
    from evaluation.report import machine_description

    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m benchmarks.embed_speed " + " ".join(argv)
    beam_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, beam_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m benchmarks.embed_speed")
    p.add_argument("--stac", required=True, help="catalog.json (e.g. the simulated demo)")
    p.add_argument("--aoi", help="GeoJSON AOI (default: the simulated region less 1 m)")
    p.add_argument("--work", required=True, help="scratch folder (its embed/ is replaced)")
    p.add_argument("--model", default=embed.DEFAULT_MODEL)
    p.add_argument("--year", type=int, default=2023)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--chip-size", type=int, default=embed.DEFAULT_CHIP_SIZE)
    p.add_argument("--halo", type=int, default=embed.DEFAULT_HALO)
    p.add_argument("--batch-size", type=int, default=inference.DEFAULT_BATCH_SIZE)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--runs", type=int, default=1, help="timed passes of the bare model")
    p.add_argument(
        "--skip-bare", action="store_true", help="the end-to-end run only (print its JSON)"
    )
    args = p.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "embed"
    if out.exists():
        shutil.rmtree(out)
    aoi = args.aoi or str(region_aoi(Path(args.stac), work / "aoi.geojson"))
    embed_argv = [
        "--stac", args.stac, "--aoi", aoi, "--year", str(args.year), "--model", args.model,
        "--out", str(out), "--tile-size", str(args.tile_size), "--chip-size",
        str(args.chip_size), "--halo", str(args.halo), "--batch-size", str(args.batch_size),
        *(["--bf16"] if args.bf16 else []), *beam_args,
    ]  # fmt: skip
    started = time.perf_counter()
    with peak_rss() as e2e_rss:
        result = end_to_end_run(embed_argv)
    wall = time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    tile_px = c["tiles"] * args.tile_size**2
    end_to_end = {
        "wall_s": wall,
        "tiles": c["tiles"],
        "chips": c["chips_embedded"],
        "chips_failed": c["chips_failed"],
        "tile_pixels": tile_px,
        "valid_pixels": c["pixels_valid"],
        "px_per_s": tile_px / wall,
        "peak_rss_gb": e2e_rss["gb"],
        **result,
    }
    if args.skip_bare:
        print(json.dumps(end_to_end, indent=1))
        return 0
    plan = embed.plan_run(embed_argv)  # the same chips, model and batch size
    with peak_rss() as bare_rss:
        bare = bare_model(plan, args.runs)
    bare["peak_rss_gb"] = bare_rss["gb"]
    doc = {
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine_description(),
        "model": f"{manifest['model']['version']} {manifest['model']['sha256'][:12]}",
        "compute_dtype": "bfloat16" if args.bf16 else "float32",
        "tile_size": args.tile_size,
        "chip_size": args.chip_size,
        "halo": args.halo,
        "batch_size": args.batch_size,
        "embed_argv": embed_argv,
        "end_to_end": end_to_end,
        "bare": bare,
        "ratio": end_to_end["px_per_s"] / bare["px_per_s"],
        "storage": storage(out),
        "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    (work / "embed_speed.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
