"""Cost model: worker-hours and dollars per area from measured end-to-end throughputs.

Runbook:

    python -m benchmarks.cost --px-per-s 945 --measured-vcpus 2      # a figure you measured
    python -m benchmarks.cost --from-json out/bench/embed_speed/embed_speed.json

    python -m benchmarks.run_all --only cost --reuse    # the RESULTS.md section, from the
                                                        # embed benchmark's embed_speed.json

Arithmetic (every input is a named constant or an argument below):

    worker px/s      = measured px/s x worker vCPUs / vCPUs of the measurement
                       (linear in vCPUs: the embed pipeline is CPU-bound and embarrassingly
                       parallel over chips; a Dataflow worker runs one SDK process per vCPU)
    worker-hours     = pixels / worker px/s / 3600
    dollars          = worker-hours x the worker's hourly list price
    hourly price     = vCPUs x vCPU-hour + memory GB x GB-hour + disk GB x PD GB-hour

Areas: 1,000 km2 at 10 m is 10^7 px (10^9 m2 / 100 m2 per pixel); a global year of land is
about 1.5 x 10^12 px (~1.5 x 10^8 km2 of land at 10 m, one annual embedding).

Prices are list prices (on demand, no committed-use or FlexRS discount) of Dataflow batch
workers in us-central1; see DATAFLOW_PRICE_SOURCE. The model counts worker time only:
reading the inputs from cloud storage, egress and storage of the outputs are not priced.

Anchors printed beside our rows are other systems' published figures, not measured here:
TESSERA's inference throughput (CPU and L4 GPU) and Presto's cost on Vertex AI. A GPU row of
ours is printed only from a measured figure (`--gpu-px-per-s`); otherwise it says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# ---------------------------------------------------------------------------- areas

PIXEL_AREA_M2 = 10.0 * 10.0
PX_PER_1000_KM2 = 1000 * 1e6 / PIXEL_AREA_M2  # 1e7
GLOBAL_LAND_YEAR_PX = 1.5e12
SECONDS_PER_HOUR = 3600.0

# ---------------------------------------------------------------------------- prices

# Dataflow batch worker list prices, us-central1 (USD). Figures as published on
# https://cloud.google.com/dataflow/pricing ("Worker CPU and memory", batch; "Persistent
# Disk", standard), as of 2026-12-06 to our knowledge: the stored copy of that page searched
# in this session does not show the figures, a public cost script carries the same three
# constants. Check them before quoting a dollar figure.
DATAFLOW_BATCH_VCPU_HOUR_USD = 0.056
DATAFLOW_BATCH_MEMORY_GB_HOUR_USD = 0.003557
DATAFLOW_STANDARD_PD_GB_HOUR_USD = 0.000054
DATAFLOW_PRICE_SOURCE = (
    "https://cloud.google.com/dataflow/pricing (us-central1, batch, list; as of 2026-12-06)"
)

# Presto on Vertex AI, as issue 26 quotes it: $5-10 per 1,000 km2.
PRESTO_VERTEX_USD_PER_1000_KM2 = (5.0, 10.0)
# TESSERA's reported inference throughputs (issue 26): ~500 px/s on a Xeon CPU, ~2,800 px/s
# on an NVIDIA L4.
TESSERA_CPU_PX_PER_S = 500.0
TESSERA_L4_PX_PER_S = 2800.0


@dataclasses.dataclass(frozen=True)
class WorkerType:
    """A Dataflow worker machine and what one hour of it costs at list price."""

    name: str
    vcpus: int
    memory_gb: float
    disk_gb: float  # persistent disk per worker (25 GB: batch jobs using Dataflow Shuffle)

    @property
    def usd_per_hour(self) -> float:
        return (
            self.vcpus * DATAFLOW_BATCH_VCPU_HOUR_USD
            + self.memory_gb * DATAFLOW_BATCH_MEMORY_GB_HOUR_USD
            + self.disk_gb * DATAFLOW_STANDARD_PD_GB_HOUR_USD
        )


N1_STANDARD_4 = WorkerType("n1-standard-4", vcpus=4, memory_gb=15.0, disk_gb=25.0)


# ---------------------------------------------------------------------------- arithmetic


def worker_px_per_s(measured_px_per_s: float, measured_vcpus: int, worker: WorkerType) -> float:
    """A measured rate scaled to the worker's vCPUs (linear; see the module docstring)."""
    if measured_px_per_s <= 0 or measured_vcpus < 1:
        raise ValueError(
            f"need a positive throughput and >= 1 vCPU; got {measured_px_per_s} px/s on "
            f"{measured_vcpus} vCPUs"
        )
    return measured_px_per_s * worker.vcpus / measured_vcpus


def worker_hours(pixels: float, px_per_s: float) -> float:
    """Hours of one worker running at `px_per_s` to embed `pixels`."""
    if px_per_s <= 0:
        raise ValueError(f"throughput must be positive; got {px_per_s} px/s")
    return pixels / px_per_s / SECONDS_PER_HOUR


@dataclasses.dataclass(frozen=True)
class CostRow:
    """One line of the table: what runs, at what rate, what 1,000 km2 and the globe cost."""

    label: str
    px_per_s: float | None  # per worker; None: not measured
    usd_per_hour: float | None  # None: not priced
    note: str = ""

    def hours(self, pixels: float) -> float | None:
        return None if self.px_per_s is None else worker_hours(pixels, self.px_per_s)

    def usd(self, pixels: float) -> float | None:
        h = self.hours(pixels)
        return None if h is None or self.usd_per_hour is None else h * self.usd_per_hour


def dataflow_row(
    label: str,
    measured_px_per_s: float,
    measured_vcpus: int,
    worker: WorkerType = N1_STANDARD_4,
    note: str = "",
) -> CostRow:
    """Our measured rate on a Dataflow worker of type `worker`."""
    rate = worker_px_per_s(measured_px_per_s, measured_vcpus, worker)
    return CostRow(label, rate, worker.usd_per_hour, note)


def anchor_rows(worker: WorkerType = N1_STANDARD_4) -> list[CostRow]:
    """The published anchors, as rows (dollars only where a price follows from them)."""
    return [
        CostRow(
            "TESSERA, Xeon CPU (published rate)",
            TESSERA_CPU_PX_PER_S,
            worker.usd_per_hour,
            f"priced as if one {worker.name} ran at that rate",
        ),
        CostRow(
            "TESSERA, NVIDIA L4 (published rate)",
            TESSERA_L4_PX_PER_S,
            None,
            "hours of one L4; not priced here",
        ),
    ]


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def cost_table(rows: Sequence[CostRow], *, gpu_note: str | None = None) -> str:
    """The markdown table of `rows`, the Presto anchor and (optionally) a GPU placeholder."""
    lines = [
        "| what | px/s per worker | $ / worker-hour | worker-h / 1,000 km2 | $ / 1,000 km2 "
        "| worker-h / global land year | $ / global land year | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {_fmt(r.px_per_s, 0)} | {_fmt(r.usd_per_hour, 4)} "
            f"| {_fmt(r.hours(PX_PER_1000_KM2))} | {_fmt(r.usd(PX_PER_1000_KM2))} "
            f"| {_fmt(r.hours(GLOBAL_LAND_YEAR_PX), 0)} | {_fmt(r.usd(GLOBAL_LAND_YEAR_PX), 0)} "
            f"| {r.note} |"
        )
    if gpu_note is not None:
        lines.append(f"| ours, GPU | — | — | — | — | — | — | {gpu_note} |")
    lo, hi = PRESTO_VERTEX_USD_PER_1000_KM2
    scale = GLOBAL_LAND_YEAR_PX / PX_PER_1000_KM2
    lines.append(
        f"| Presto on Vertex AI (published cost) | — | — | — | {lo:.0f}-{hi:.0f} | — "
        f"| {lo * scale:,.0f}-{hi * scale:,.0f} | the quoted $ per 1,000 km2 scaled by area |"
    )
    return "\n".join(lines)


def inputs_markdown(worker: WorkerType = N1_STANDARD_4) -> str:
    """The constants the table rests on, for RESULTS.md."""
    return (
        f"Inputs: {worker.name} = {worker.vcpus} vCPU, {worker.memory_gb:g} GB, "
        f"{worker.disk_gb:g} GB standard PD at ${DATAFLOW_BATCH_VCPU_HOUR_USD} / vCPU-h, "
        f"${DATAFLOW_BATCH_MEMORY_GB_HOUR_USD} / GB-h, ${DATAFLOW_STANDARD_PD_GB_HOUR_USD} / "
        f"PD GB-h = ${worker.usd_per_hour:.4f} / h ({DATAFLOW_PRICE_SOURCE}); 1,000 km2 = "
        f"{PX_PER_1000_KM2:.0e} px at 10 m; global land year = {GLOBAL_LAND_YEAR_PX:.1e} px; "
        "throughput scaled linearly from the measuring machine's vCPUs to the worker's; "
        "worker time only (no storage, egress, or job start-up)."
    )


def memory_note(peak_rss_gb: float | None, worker: WorkerType = N1_STANDARD_4) -> str:
    """Whether one process's measured peak memory fits the worker's share per SDK process."""
    if peak_rss_gb is None:
        return ""
    share = worker.memory_gb / worker.vcpus
    verdict = "fits" if peak_rss_gb <= share else "does NOT fit"
    return (
        f"; peak RSS {peak_rss_gb:.1f} GB per process {verdict} the {share:.2f} GB a process "
        f"gets on {worker.name} (one SDK process per vCPU)"
    )


def from_embed_speed(doc: dict) -> tuple[float, int, str]:
    """(end-to-end px/s, vCPUs, description) of an embed_speed.json (benchmarks/embed_speed)."""
    try:
        rate = float(doc["end_to_end"]["px_per_s"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("embed_speed.json has no end_to_end.px_per_s") from None
    vcpus = int(doc.get("vcpus") or _vcpus_of(doc.get("machine", "")))
    what = f"{doc.get('model', '?')} ({doc.get('compute_dtype', '?')}), {doc.get('date', '?')}"
    # the embed job's own sampled peak; the benchmark process's ru_maxrss (`max_rss_gb`) also
    # counts its bare-model phase, which holds every prepared chip at once
    peak = doc["end_to_end"].get("peak_rss_gb") or doc.get("max_rss_gb")
    return rate, vcpus, what + memory_note(peak)


def _vcpus_of(machine: str) -> int:
    """The core count a `report.machine_description()` string starts with ('2 cores, ...')."""
    head = machine.split(" cores")[0].strip() if " cores" in machine else ""
    if not head.isdigit():
        raise ValueError(f"cannot tell the vCPUs of the measuring machine from {machine!r}")
    return int(head)


def markdown(
    measured_px_per_s: float,
    measured_vcpus: int,
    *,
    what: str,
    command: str,
    gpu_px_per_s: float | None = None,
    gpu_usd_per_hour: float | None = None,
) -> str:
    """The RESULTS.md section body: the command, the inputs, the table."""
    rows = [
        dataflow_row(
            f"ours, Dataflow {N1_STANDARD_4.name} (measured)",
            measured_px_per_s,
            measured_vcpus,
            note=f"{measured_px_per_s:,.0f} px/s on {measured_vcpus} vCPUs: {what}",
        )
    ]
    gpu_note = None
    if gpu_px_per_s is not None:
        rows.append(CostRow("ours, GPU (measured)", gpu_px_per_s, gpu_usd_per_hour, ""))
    else:
        gpu_note = "not measured (no GPU in this session)"
    rows += anchor_rows()
    return "\n".join(
        [
            "## Cost per area",
            "",
            f"Command: `{command}`",
            "",
            inputs_markdown(),
            "",
            cost_table(rows, gpu_note=gpu_note),
        ]
    )


def run(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cost", description=__doc__.split("\n")[0]
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--px-per-s", type=float, help="measured end-to-end px/s")
    src.add_argument("--from-json", help="an embed_speed.json (benchmarks/embed_speed.py)")
    p.add_argument("--measured-vcpus", type=int, default=None, help="vCPUs of that measurement")
    p.add_argument("--peak-rss-gb", type=float, default=None, help="its peak memory per process")
    p.add_argument("--gpu-px-per-s", type=float, default=None, help="a measured GPU rate")
    p.add_argument("--gpu-usd-per-hour", type=float, default=None, help="its hourly price")
    args = p.parse_args(argv)
    if args.from_json:
        rate, vcpus, what = from_embed_speed(json.loads(Path(args.from_json).read_text()))
        vcpus = args.measured_vcpus or vcpus
    else:
        if args.measured_vcpus is None:
            p.error("--px-per-s needs --measured-vcpus")
        rate, vcpus = args.px_per_s, args.measured_vcpus
        what = "given on the command line" + memory_note(args.peak_rss_gb)
    command = "python -m benchmarks.cost " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        markdown(
            rate,
            vcpus,
            what=what,
            command=command,
            gpu_px_per_s=args.gpu_px_per_s,
            gpu_usd_per_hour=args.gpu_usd_per_hour,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
