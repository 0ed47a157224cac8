"""The machine's measured float32 matmul peak and the fraction of it the tiny model reaches.

Runbook (a simulated catalog, e.g. `earthembed simulate --out /tmp/sim --sim-region demo
--years 2023 --seed 0`; about 2 GB peak, 2-4 minutes on 2 cores):

    python -m benchmarks.matmul_peak --stac /tmp/sim/catalog.json --year 2023 \\
        --chips 3 --out /tmp/matmul_peak.json

Peak: `jax.jit(jnp.dot)` of two n x n float32 matrices on every core JAX uses, for each
--sizes n the best of --repeats calls after a compiling one; the peak is the best size's
2 n^3 / s. Model: --chips chips of `embed`'s default size (--chip-size 96 px and a --halo of
16 px on each side: 128 x 128 px read from the catalog's first grid window, prepared untimed), each
embedded alone through `bundle.embed_batch` (the chunked encoder `embed` runs), the best of
--runs passes; every call of the three jitted stages (per-pixel frames, context paths,
per-pixel read-out) is timed (blocking on its outputs) and counted in FLOPs by XLA's cost
analysis of that call's compiled shapes. The model's GFLOP/s over the peak is the fraction
it reaches; the same per stage. `needed` is what an embedded-pixel rate (default 5,000 px/s,
issue 26) would ask of the machine at the model's FLOPs per embedded (core) pixel. The load
average (1 min) is recorded before and after each measurement: the cores may be shared.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import sys
import time
from pathlib import Path

STAGES = ("_frames", "_context", "_pixels")


def rates(
    flops: float, seconds: float, peak_gflops: float, pixels: int, target_px_per_s: float
) -> dict:
    """FLOPs spent on `pixels` embedded pixels in `seconds`, against a peak (GFLOP/s) ->
    the achieved GFLOP/s, its fraction of the peak, FLOPs per pixel, the pixel rate at the
    peak (all FLOPs at peak speed), and the GFLOP/s and fraction of the peak that
    `target_px_per_s` would need."""
    per_px = flops / pixels
    gflops = flops / seconds / 1e9
    need = target_px_per_s * per_px / 1e9
    return {
        "gflops": gflops,
        "fraction_of_peak": gflops / peak_gflops,
        "mflop_per_px": per_px / 1e6,
        "px_per_s": pixels / seconds,
        "px_per_s_at_peak": peak_gflops * 1e9 / per_px,
        "target_px_per_s": target_px_per_s,
        "target_gflops": need,
        "target_fraction_of_peak": need / peak_gflops,
    }


def matmul_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """Best float32 GFLOP/s of a jitted n x n matmul, per size and overall."""
    import jax
    import jax.numpy as jnp

    dot = jax.jit(jnp.dot)
    per_size = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        dot(a, b).block_until_ready()
        best = min(_timed(lambda a=a, b=b: dot(a, b).block_until_ready()) for _ in range(repeats))
        per_size[str(n)] = 2 * n**3 / best / 1e9
    return {"gflops_per_size": per_size, "peak_gflops": max(per_size.values())}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class StageMeter:
    """Wraps a bundle's jitted stages: wall seconds (blocking on outputs) and XLA's FLOPs of
    every call, per stage."""

    def __init__(self, bundle):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.flops: dict[str, float] = collections.defaultdict(float)
        self._cost: dict = {}
        for name in STAGES:
            setattr(bundle, name, self._wrap(name, getattr(bundle, name)))

    def reset(self) -> None:
        self.seconds.clear()
        self.flops.clear()

    def _wrap(self, name, fn):
        import jax

        def call(*args):
            key = (name, str(jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), args)))
            if key not in self._cost:
                cost = fn.lower(*args).compile().cost_analysis()
                cost = cost[0] if isinstance(cost, list) else cost
                self._cost[key] = float(cost["flops"])
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            self.seconds[name] += time.perf_counter() - t
            self.flops[name] += self._cost[key]
            return out

        return call


def _chips(stac: str, year: int, n: int, chip: int, halo: int):
    """n chip windows (chip + 2 halo px square) of the region's first grid window, read."""
    import simulation
    from beam_jobs import runner
    from beam_jobs.io import stac as stac_io
    from schemas.grid import GridWindow

    region = simulation.load_region(Path(stac).parent)
    w = region.windows[0]
    size = chip + 2 * halo
    per_row = w.width // size
    if n > per_row * (w.height // size):
        raise SystemExit(f"--chips {n}: the {w.shape} px window holds fewer {size} px chips")
    t0, t1 = runner.year_bounds_ms(year)
    catalog = stac_io.StacCatalog.open(stac)
    out = []
    for i in range(n):
        r, c = divmod(i, per_row)
        win = GridWindow(
            w.epsg,
            w.x0 + c * size * w.pixel_size,
            w.y0 - r * size * w.pixel_size,
            size,
            size,
            w.pixel_size,
        )
        out.append(stac_io.read_observations(catalog, win, t0, t1))
    return out, t0, t1


def _load() -> float:
    return os.getloadavg()[0]


def run(argv: list[str] | None = None) -> int:
    from beam_jobs import flags, inference
    from benchmarks.embed_points_speed import emit
    from evaluation.report import machine_description

    p = argparse.ArgumentParser(prog="python -m benchmarks.matmul_peak")
    p.add_argument("--stac", default=None, help="a simulated catalog; without it: peak only")
    p.add_argument("--year", type=int, default=2023)
    p.add_argument("--chips", type=int, default=3, help="chips embedded (one per call)")
    p.add_argument("--chip-size", type=int, default=flags.DEFAULT_CHIP_SIZE, help="core, px")
    p.add_argument("--halo", type=int, default=flags.DEFAULT_HALO, help="context, px a side")
    p.add_argument("--runs", type=int, default=2, help="timed passes over the chips (best)")
    p.add_argument("--sizes", default="256,512,1024,2048", help="matmul sizes n (n x n)")
    p.add_argument("--repeats", type=int, default=7, help="timed matmuls per size (best)")
    p.add_argument("--target-px-per-s", type=float, default=5000.0)
    p.add_argument("--model", default="model/weights/tiny")
    p.add_argument("--out", default=None, help="JSON of the figures")
    args = p.parse_args(argv)
    command = "python -m benchmarks.matmul_peak " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    doc: dict = {
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine_description(),
    }
    sizes = tuple(int(s) for s in args.sizes.split(","))
    load0 = _load()
    peak = matmul_peak(sizes, args.repeats)
    doc["matmul"] = {**peak, "load_before": load0, "load_after": _load()}
    if args.stac:
        bundle = inference.load_bundle_cached(args.model)
        chip, halo = args.chip_size, args.halo
        windows, t0, t1 = _chips(args.stac, args.year, args.chips, chip, halo)
        items = [bundle.prepare(o, t_start_ms=t0, t_end_ms=t1) for o in windows]
        meter = StageMeter(bundle)
        bundle.embed_batch(bundle.pad_batch(items[:1], 1))  # compile
        load0, best = _load(), None
        for _ in range(args.runs):
            meter.reset()
            t = time.perf_counter()
            for item in items:
                bundle.embed_batch(bundle.pad_batch([item], 1))
            wall = time.perf_counter() - t
            if best is None or wall < best[0]:
                best = (wall, dict(meter.seconds), dict(meter.flops))
        wall, seconds, flops = best
        core, inp = chip * chip * len(items), (chip + 2 * halo) ** 2 * len(items)
        model = rates(sum(flops.values()), wall, peak["peak_gflops"], core, args.target_px_per_s)
        model.update(
            chips=len(items),
            embed_batch_s=wall,
            mflop_per_input_px=sum(flops.values()) / inp / 1e6,
            load_before=load0,
            load_after=_load(),
        )
        model["stages"] = {
            name.strip("_"): {
                "s": seconds[name],
                "mflop_per_core_px": flops[name] / core / 1e6,
                "gflops": flops[name] / seconds[name] / 1e9,
                "fraction_of_peak": flops[name] / seconds[name] / 1e9 / peak["peak_gflops"],
            }
            for name in STAGES
        }
        model["stages_s_outside"] = wall - sum(seconds.values())
        doc["model"] = {"version": bundle.version, **model}
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
