"""Read speed: `beam_jobs.io.stac.read_observations` over a year of a simulated catalog.

Runbook:

    earthembed simulate --out /tmp/demo_sim --sim-region demo --years 2023   # once
    python -m benchmarks.read_speed --catalog /tmp/demo_sim/catalog.json --size 32 256
    python -m benchmarks.read_speed --catalog /tmp/demo_sim/catalog.json --size 32 --profile

Each size is read once to warm up (imports, the open-dataset cache), then `--runs` times; the
figures are the median wall-clock (and process CPU) seconds of one `read_observations` call of
a size x size window at (x0, y0), all sources, the calendar year. `--warmup 0 --runs 1` times a
cold read (every dataset opened).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", default="/tmp/demo_sim/catalog.json")
    p.add_argument("--size", type=int, nargs="+", default=[32, 256])
    p.add_argument("--epsg", type=int, default=32631)
    p.add_argument("--x0", type=float, default=614720.0)
    p.add_argument("--y0", type=float, default=5606080.0)
    p.add_argument("--year", type=int, default=2023)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="cProfile one run, print the top 25")
    args = p.parse_args(argv)

    from beam_jobs.io import stac
    from beam_jobs.runner import year_bounds_ms
    from schemas.grid import GridWindow

    catalog = stac.StacCatalog.open(args.catalog)
    start, end = year_bounds_ms(args.year)
    for size in args.size:
        window = GridWindow(args.epsg, args.x0, args.y0, size, size)
        for _ in range(args.warmup):
            stac.read_observations(catalog, window, start, end)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            stac.read_observations(catalog, window, start, end)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        times, cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            obs = stac.read_observations(catalog, window, start, end)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        frames = {s: obs[s].num_frames for s in obs.sources}
        print(
            f"{size}x{size}: median {statistics.median(times):.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f}, runs {args.runs}), "
            f"CPU median {statistics.median(cpu):.3f} s; "
            f"frames {frames}; errors {len(obs.errors)}"
        )


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    main()
