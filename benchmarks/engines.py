"""embed on the two local distributed engines: Beam's FnApiRunner in multi-processing mode and
a dask.distributed LocalCluster through `--runner DaskRunner` (beam_jobs/dask_engine.py), two
worker processes each, on the same tiles: the tiles must be byte-identical; wall time and the
peak resident memory of each worker process are recorded.

    python -m benchmarks.engines --stac demo_out/sim/catalog.json --aoi demo_out/aoi.geojson \\
        --period 2023-05-01/2023-08-01 --out-root /tmp/engines

(the demo region at 64 px tiles: 8 x 4 = 32 tiles). Writes `engines.json` and `engines.md`
in --out-root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from beam_jobs import embed, inference
from evaluation.report import machine_description

ENGINES = ("fnapi_multiprocessing", "dask_localcluster")


class PeakMemory:
    """Samples the resident memory of this process and of every descendant every `period` s."""

    def __init__(self, period: float = 0.5):
        self.period = period
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                    name = " ".join(p.cmdline()[:3])[-80:]
                except psutil.Error:
                    continue
                if rss > self.peaks.get(p.pid, ("", 0))[1]:
                    self.peaks[p.pid] = (name, rss)
            self._stop.wait(self.period)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name.endswith((".tif", ".parquet"))
    }


def run_engine(engine: str, embed_argv: list[str], out: Path) -> dict:
    """One embed run on `engine`; its wall time and per-process peaks (driver first)."""
    extra: list[str] = []
    cluster = client = None
    if engine == "dask_localcluster":
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        )  # fmt: skip
        client = Client(cluster)
        extra = ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]
    else:
        extra = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    inference.clear_bundle_cache()
    started = time.time()
    try:
        with PeakMemory() as mem:
            rc = embed.run([*embed_argv, "--out", str(out), *extra])
    finally:
        if client is not None:
            client.close()
            cluster.close()
    wall = time.time() - started
    driver = mem.peaks.pop(os.getpid(), ("", 0))[1]
    workers = sorted(rss for _, rss in mem.peaks.values())
    return {
        "rc": rc,
        "wall_s": round(wall, 1),
        "driver_peak_gb": round(driver / 1e9, 2),
        "process_peaks_gb": [round(r / 1e9, 2) for r in workers],
    }


def markdown(doc: dict) -> str:
    lines = [
        f"Command: `{doc['command']}`",
        "",
        f"Date {doc['date']}; machine: {doc['machine']}. {doc['tiles']} tiles, "
        f"{doc['files']} files (COG, quality sidecar, GeoParquet per tile); byte-identical "
        f"across the engines: **{'yes' if doc['identical'] else 'NO'}**.",
        "",
        "| engine | wall s | driver peak GB | child process peaks GB (the workers first) |",
        "|---|---|---|---|",
    ]
    for name in ENGINES:
        r = doc["runs"][name]
        peaks = ", ".join(str(v) for v in sorted(r["process_peaks_gb"], reverse=True))
        lines.append(f"| {name} | {r['wall_s']} | {r['driver_peak_gb']} | {peaks} |")
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stac", required=True)
    p.add_argument("--aoi", required=True)
    p.add_argument("--period", default="2023-05-01/2023-08-01")
    p.add_argument("--tile-size", default="64")
    p.add_argument("--chip-size", default="32")
    p.add_argument("--halo", default="8")
    p.add_argument("--batch-size", default="2")
    p.add_argument("--out-root", type=Path, required=True)
    args = p.parse_args(argv)
    embed_argv = ["--stac", args.stac, "--aoi", args.aoi, "--period", args.period]
    embed_argv += ["--tile-size", args.tile_size, "--chip-size", args.chip_size]
    embed_argv += ["--halo", args.halo, "--batch-size", args.batch_size]
    runs, sums = {}, {}
    for engine in ENGINES:
        out = args.out_root / engine
        runs[engine] = run_engine(engine, embed_argv, out)
        sums[engine] = digests(out)
        print(engine, json.dumps(runs[engine]), flush=True)
    first = sums[ENGINES[0]]
    doc = {
        "command": "python -m benchmarks.engines " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(),
        "tiles": sum(1 for k in first if k.endswith(".tif") and not k.endswith("_quality.tif")),
        "files": len(first),
        "identical": all(s == first for s in sums.values()) and bool(first),
        "runs": runs,
    }
    (args.out_root / "engines.json").write_text(json.dumps(doc, indent=2))
    (args.out_root / "engines.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0 if doc["identical"] else 1


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    raise SystemExit(run())
