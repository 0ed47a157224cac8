"""Peak resident memory of any `earthembed` command, per process (the command's own and
every worker process it starts), sampled while it runs in this process.

    python -m benchmarks.job_memory -- evaluate --dataset sim:101:tropical \\
        --embedder model/weights/tiny --out /tmp/eval
    python -m benchmarks.job_memory -- build-training-data --stac demo_out/sim/catalog.json \\
        --years 2023 --num-samples 32 --out /tmp/td --direct_num_workers 2 \\
        --direct_running_mode multi_processing

Prints one JSON document: the command, its exit code, wall seconds, the peak of this process
(the driver, which runs the whole job with the in-process runner) and the peaks of the child
processes (multi-processing workers first, largest first). The sampler is
`benchmarks.engines.PeakMemory` (every --every seconds, /proc via psutil), so short spikes
between samples can be missed: a lower bound on the true peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def sampler_args(
    argv: list[str] | None, prog: str, every: float
) -> tuple[argparse.Namespace, list[str]]:
    """`[--every S] -- COMMAND ARGS...` (sys.argv's when `argv` is None) -> (options, command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit(f"usage: python -m {prog} [--every S] -- COMMAND ARGS...")
    i = argv.index("--")
    p = argparse.ArgumentParser(prog=f"python -m {prog}")
    p.add_argument("--every", type=float, default=every, help="sampling period (s)")
    return p.parse_args(argv[:i]), argv[i + 1 :]


def run(argv: list[str] | None = None) -> int:
    from beam_jobs import cli
    from benchmarks.engines import PeakMemory

    args, command = sampler_args(argv, "benchmarks.job_memory", 0.1)
    started = time.perf_counter()
    with PeakMemory(args.every) as mem:
        try:
            rc = cli.main(command)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    wall = time.perf_counter() - started
    driver = mem.peaks.pop(os.getpid(), ("", 0))[1]
    children = sorted(((rss, name) for name, rss in mem.peaks.values()), reverse=True)
    doc = {
        "command": "earthembed " + " ".join(command),
        "exit_code": rc,
        "wall_s": round(wall, 1),
        "driver_peak_gb": round(driver / 1e9, 2),
        "child_peaks_gb": [round(rss / 1e9, 2) for rss, _ in children],
        "children": [name for _, name in children],
    }
    print(json.dumps(doc, indent=1))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
