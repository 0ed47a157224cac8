"""embed-points preparation: all points of a request at once against one point at a time.

Runbook (a simulated catalog, e.g. `earthembed simulate --out /tmp/sim --sim-region demo
--years 2023 --seed 0`; about 4 GB peak with the tiny bundle):

    python -m benchmarks.embed_points_speed --stac /tmp/sim/catalog.json --year 2023 \\
        --points 10000 --one-at-a-time 200 --one-call-per-point 200 --out /tmp/points_speed.json

The points are every pixel of a square window in the region's first grid window (100 x 100
px for 10,000 points), read once (`read_observations`, not timed) and turned into a point set
(`points.window_to_points`). Timed, after one untimed warm-up of each path on the first
points (compilation): "batched" = `inference.embed_requests` on one request of all points
(`bundle.prepare_points` vectorized over the request, then `embed_batch` in --batch-size
batches), what `embed-points` runs per chunk; "one at a time" = the previous path, each point
prepared alone (`bundle.prepare` of a 1 x 1 point: example arrays and the per-pixel summary
one point per call), timed on the first --one-at-a-time points (at most one batch), then
embedded in one batch; its rate over all points is extrapolated as that preparation time
per point x points + that batch's time x batches.
The vectors of those points from both paths are compared (largest absolute difference);
`prepare_s` times `bundle.prepare_points` of all points alone (the rest is the model).

"one call per point" is what a user looping over points gets: each point prepared alone and
embedded alone (`embed_batch` of a batch of 1, one model call per point), timed on the first
--one-call-per-point points after an untimed pass over the same points (every input shape
compiled, so the figure is its steady rate, the most favourable to it); its rate over all
points is that time per point x points. Its vectors are compared with the batched ones too.
The batched path's ratio against each baseline is reported ("speedup" against "one at a
time", "speedup_one_call_per_point" against this one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _point_set(stac: str, year: int, side: int):
    import simulation
    from beam_jobs import runner
    from beam_jobs.io import points
    from beam_jobs.io import stac as stac_io
    from schemas.grid import GridWindow

    region = simulation.load_region(Path(stac).parent)
    w = region.windows[0]
    if side > min(w.height, w.width):
        raise SystemExit(f"--points: a {side} px square does not fit the {w.shape} px window")
    window = GridWindow(w.epsg, w.x0, w.y0, side, side, w.pixel_size)
    t0, t1 = runner.year_bounds_ms(year)
    obs = stac_io.read_observations(stac_io.StacCatalog.open(stac), window, t0, t1)
    return points.window_to_points(obs), t0, t1


def prepare_one_at_a_time(bundle, obs, t0: int, t1: int, n: int) -> list[dict]:
    """The previous embed-points preparation: every point prepared alone."""
    from beam_jobs import inference

    return [
        bundle.prepare(inference.take_points(obs, i, i + 1), t_start_ms=t0, t_end_ms=t1)
        for i in range(n)
    ]


def emit(doc: dict, out: str | None) -> None:
    """Print the figures as JSON, and write them to `out` when given."""
    text = json.dumps(doc, indent=2)
    if out:
        Path(out).write_text(text)
    print(text)


def one_call_per_point(bundle, obs, t0: int, t1: int, n: int) -> np.ndarray:
    """Each point prepared and embedded alone, one model call per point -> (n, D)."""
    from beam_jobs import inference

    return np.stack(
        [
            bundle.embed_batch(
                bundle.pad_batch(
                    [
                        bundle.prepare(
                            inference.take_points(obs, i, i + 1), t_start_ms=t0, t_end_ms=t1
                        )
                    ],
                    1,
                )
            )[0, 0, 0]
            for i in range(n)
        ]
    )


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference where both rows are finite (0.0 where none is)."""
    both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def batched(bundle, obs, t0: int, t1: int, batch_size: int) -> np.ndarray:
    """What embed-points runs per request: all points prepared at once."""
    from beam_jobs import inference

    return inference.embed_requests(bundle, [inference.EmbedRequest(obs, t0, t1)], batch_size)[0]


def run(argv: list[str] | None = None) -> int:
    from beam_jobs import inference
    from evaluation.report import machine_description

    p = argparse.ArgumentParser(prog="python -m benchmarks.embed_points_speed")
    p.add_argument("--stac", required=True, help="a simulated catalog (sim_params.json beside)")
    p.add_argument("--year", type=int, default=2023)
    p.add_argument("--points", type=int, default=10_000, help="a square number of points")
    p.add_argument("--one-at-a-time", type=int, default=200, help="points timed the old way")
    p.add_argument(
        "--one-call-per-point",
        type=int,
        default=200,
        help="points timed each prepared and embedded alone (a model call per point)",
    )
    p.add_argument("--batch-size", type=int, default=512, help="model items per call")
    p.add_argument("--model", default="model/weights/tiny")
    p.add_argument("--out", default=None, help="JSON of the figures")
    args = p.parse_args(argv)
    side = int(round(args.points**0.5))
    if side * side != args.points:
        raise SystemExit(f"--points {args.points} is not a square number")
    command = "python -m benchmarks.embed_points_speed " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    t = time.perf_counter()
    obs, t0, t1 = _point_set(args.stac, args.year, side)
    read_s = time.perf_counter() - t
    bundle = inference.load_bundle_cached(args.model)
    k = min(args.one_at_a_time, args.points, args.batch_size)
    head = inference.take_points(obs, 0, k)
    warm = inference.take_points(obs, 0, 2)
    batched(bundle, warm, t0, t1, args.batch_size)  # compile both paths' shapes
    prepare_one_at_a_time(bundle, warm, t0, t1, 2)

    t = time.perf_counter()
    emb_all = batched(bundle, obs, t0, t1, args.batch_size)
    batched_s = time.perf_counter() - t
    t = time.perf_counter()
    bundle.prepare_points(obs, t_start_ms=t0, t_end_ms=t1)
    batched_prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    items = prepare_one_at_a_time(bundle, head, t0, t1, k)
    one_prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    emb_one = inference.embed_items(bundle, items, args.batch_size)[:, 0, 0]
    model_s_per_batch = time.perf_counter() - t  # k <= batch size: one padded call
    # The previous path over all points: each prepared alone, then the same model batches.
    n_batches = -(-args.points // args.batch_size)
    one_total_s = one_prepare_s / k * args.points + model_s_per_batch * n_batches
    same_nan = bool(np.array_equal(np.isnan(emb_one), np.isnan(emb_all[:k])))
    m = min(args.one_call_per_point, args.points)
    one_call_per_point(bundle, obs, t0, t1, m)  # compiles every shape the timed pass meets
    t = time.perf_counter()
    emb_alone = one_call_per_point(bundle, obs, t0, t1, m)
    alone_s = time.perf_counter() - t
    doc = {
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine_description(),
        "model": str(bundle.version),
        "points": args.points,
        "read_s": read_s,
        "batched": {
            "points": args.points,
            "s": batched_s,
            "points_per_s": args.points / batched_s,
            "prepare_s": batched_prepare_s,
        },
        "one_at_a_time": {
            "points_timed": k,
            "prepare_s_per_point": one_prepare_s / k,
            "model_s_per_batch": model_s_per_batch,
            "s_for_all_points": one_total_s,
            "points_per_s": args.points / one_total_s,
        },
        "one_call_per_point": {
            "points_timed": m,
            "s_per_point": alone_s / m,
            "s_for_all_points": alone_s / m * args.points,
            "points_per_s": m / alone_s,
        },
        "prepare_speedup": (one_prepare_s / k) / (batched_prepare_s / args.points),
        "speedup": one_total_s / batched_s,
        "speedup_one_call_per_point": alone_s / m * args.points / batched_s,
        "max_abs_diff": _max_diff(emb_one, emb_all[:k]),
        "max_abs_diff_one_call_per_point": _max_diff(emb_alone, emb_all[:m]),
        "same_missing_points": same_nan
        and bool(np.array_equal(np.isnan(emb_alone), np.isnan(emb_all[:m]))),
        "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
