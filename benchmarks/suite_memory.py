"""Summed memory of a command's whole process tree over time: issue 26's "under 8 GB for the
whole suite" for `make test` (two xdist workers, the subprocesses and Beam/Dask workers the
tests start, all at once).

    python -m benchmarks.suite_memory --every 3 -- bash .ci/run

Every --every seconds the PSS of every process in the tree is summed (proportional set size:
a page shared by n processes counts 1/n in each, so the sum is the memory the tree holds,
with the shared libraries counted once) and so is the RSS (shared pages counted in every
process: an upper bound). Prints one JSON document: the command's exit code, wall seconds,
the peak of the summed PSS with when it happened and the largest processes at that moment,
and the peak of the summed RSS. Sampling misses spikes shorter than the period: the peaks
are lower bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

from benchmarks.job_memory import sampler_args


def sample(root: psutil.Process) -> list[tuple[int, int, str]]:
    """(pss, rss, name) of `root` and every descendant alive now."""
    rows = []
    for p in [root, *root.children(recursive=True)]:
        try:
            m = p.memory_full_info()  # reads /proc/PID/smaps_rollup
            name = " ".join(p.cmdline()[:4])[-100:]
        except psutil.Error:
            continue  # ended between the listing and the read
        rows.append((m.pss, m.rss, name))
    return rows


def run(argv: list[str] | None = None) -> int:
    args, command = sampler_args(argv, "benchmarks.suite_memory", 3.0)
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    root = psutil.Process(proc.pid)
    peak_pss, peak_rss, at, top, samples = 0, 0, 0.0, [], 0
    while proc.poll() is None:
        rows = sample(root)
        samples += 1
        pss, rss = sum(r[0] for r in rows), sum(r[1] for r in rows)
        peak_rss = max(peak_rss, rss)
        if pss > peak_pss:
            peak_pss, at = pss, time.perf_counter() - started
            top = sorted(rows, reverse=True)[:5]
        time.sleep(args.every)
    doc = {
        "command": " ".join(command),
        "exit_code": proc.returncode,
        "wall_s": round(time.perf_counter() - started, 1),
        "samples": samples,
        "peak_summed_pss_gb": round(peak_pss / 1e9, 2),
        "peak_at_s": round(at, 1),
        "largest_at_peak": [{"pss_gb": round(r[0] / 1e9, 2), "process": r[2]} for r in top],
        "peak_summed_rss_gb": round(peak_rss / 1e9, 2),
    }
    print(json.dumps(doc, indent=1))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(run())
