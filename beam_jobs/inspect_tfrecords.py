"""Inspect a training-data directory: counts, frames per source, value ranges, a PNG strip.

Runbook
-------
    earthembed inspect-tfrecords /tmp/demo_td                  # summary JSON on stdout,
                                                               # /tmp/demo_td/inspect.png
    earthembed inspect-tfrecords gs://bucket/training/v1 --max-records 1000 --out strip.png

Reads the `train-*` and `eval-*` gzip TFRecord shards that `build-training-data` writes,
decodes them with numpy (schemas.examples.decode_example; no TensorFlow start-up) and
checks every record's CRCs. The summary holds, per split, the example count; per source,
frames per example (min/mean/max of frame_valid) and the valid-pixel fraction of real
frames; per band, min/mean/max of usable values (valid pixel and valid band, in the stored
model-transformed units); and the land-cover class counts of the examples. The PNG shows a
few examples as rows of true-colour Sentinel-2 frames (B04, B03, B02 scaled 0-0.3; invalid
pixels grey) followed by the land-cover target.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Iterator, Sequence

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.flags import DEFAULT_STRIP_FRAMES
from beam_jobs.flags import inspect_tfrecords_parser as build_parser
from schemas import examples, sensors

SPLITS = ("train", "eval")
SHARD_SUFFIX = ".tfrecord.gz"
RGB_BANDS = ("B04", "B03", "B02")
RGB_MAX = 0.3
DEFAULT_STRIP_EXAMPLES = 4


# ------------------------------------------------------------------------------- reading


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_records(path: str, *, check_crc: bool = True) -> Iterator[bytes]:
    """Records of one gzip TFRecord file; ValueError on a truncated or corrupt record."""
    with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) != 12:
                raise ValueError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", head[:8])
            data = f.read(length)
            tail = f.read(4)
            if len(data) != length or len(tail) != 4:
                raise ValueError(f"{path}: truncated record")
            if check_crc:
                if struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]):
                    raise ValueError(f"{path}: bad length CRC")
                if struct.unpack("<I", tail)[0] != _masked_crc(data):
                    raise ValueError(f"{path}: bad data CRC")
            yield data


def list_shards(directory: str) -> dict[str, list[str]]:
    """split -> its shard paths, sorted."""
    out = {}
    for split in SPLITS:
        pattern = posixpath.join(directory.rstrip("/"), f"{split}-*{SHARD_SUFFIX}")
        out[split] = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return out


# ------------------------------------------------------------------------------- summary


class _BandRange:
    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def add(self, x: np.ndarray) -> None:
        if x.size:
            self.n += x.size
            self.total += float(x.sum(dtype=np.float64))
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def to_json(self) -> dict:
        if not self.n:
            return {"count": 0}
        return {"count": self.n, "min": self.lo, "mean": self.total / self.n, "max": self.hi}


class Summary:
    """Streaming summary of decoded examples."""

    def __init__(self) -> None:
        self.counts = {s: 0 for s in SPLITS}
        self.frames = {s: [] for s in sensors.SOURCE_IDS}
        self.valid_fraction = {s: [0, 0] for s in sensors.SOURCE_IDS}
        self.bands = {
            s: {b: _BandRange() for b in sensors.get_sensor(s).band_names}
            for s in sensors.SOURCE_IDS
        }
        self.classes: dict[str, int] = {}
        self.shapes: set[tuple[int, int]] = set()

    def add(self, split: str, ex: dict[str, np.ndarray]) -> None:
        self.counts[split] += 1
        self.shapes.add((int(ex["patch_size"]), int(ex["max_frames"])))
        for source in sensors.SOURCE_IDS:
            fv = ex[f"{source}/frame_valid"]
            valid = ex[f"{source}/valid"]
            self.frames[source].append(int(fv.sum()))
            self.valid_fraction[source][0] += int(valid[fv].sum())
            self.valid_fraction[source][1] += int(valid[fv].size)
            usable = valid[..., None] & ex[f"{source}/band_valid"][:, None, None, :]
            values = ex[f"{source}/values"]
            for c, band in enumerate(sensors.get_sensor(source).band_names):
                self.bands[source][band].add(values[..., c][usable[..., c]])
        key = str(int(ex["target/class_id"]))
        text = ex["target/text"].item()
        if text:
            key += f" {text.decode()}"
        self.classes[key] = self.classes.get(key, 0) + 1

    def to_json(self) -> dict:
        out: dict = {
            "examples": dict(self.counts),
            "patch_size_max_frames": sorted(self.shapes),
            "classes": dict(sorted(self.classes.items())),
            "sources": {},
        }
        for source in sensors.SOURCE_IDS:
            f = np.asarray(self.frames[source]) if self.frames[source] else np.zeros(1)
            v, n = self.valid_fraction[source]
            out["sources"][source] = {
                "frames": {"min": int(f.min()), "mean": float(f.mean()), "max": int(f.max())},
                "valid_fraction": v / n if n else 0.0,
                "bands": {b: r.to_json() for b, r in self.bands[source].items()},
            }
        return out


def summarize(
    directory: str, *, max_records: int | None = None
) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """(summary JSON, the first few decoded training examples for the strip)."""
    shards = list_shards(directory)
    if not any(shards.values()):
        raise FileNotFoundError(f"no train-*{SHARD_SUFFIX} or eval-*{SHARD_SUFFIX} in {directory}")
    summary = Summary()
    keep: list[dict[str, np.ndarray]] = []
    for split in SPLITS:
        seen = 0
        for path in shards[split]:
            for data in iter_records(path):
                if max_records is not None and seen >= max_records:
                    break
                ex = examples.decode_example(data)
                summary.add(split, ex)
                if len(keep) < DEFAULT_STRIP_EXAMPLES:
                    keep.append(ex)
                seen += 1
    out = summary.to_json()
    out["directory"] = directory
    out["shards"] = {s: len(p) for s, p in shards.items()}
    return out, keep


# ------------------------------------------------------------------------------- picture


def true_colour(ex: dict[str, np.ndarray], frame: int) -> np.ndarray:
    """(P, P, 3) float RGB of one Sentinel-2 frame: B04, B03, B02 / 0.3, grey where invalid."""
    s2 = sensors.get_sensor("sentinel2_l2a")
    idx = [s2.band_index(b) for b in RGB_BANDS]
    rgb = np.clip(ex["sentinel2_l2a/values"][frame][..., idx] / RGB_MAX, 0.0, 1.0)
    ok = ex["sentinel2_l2a/valid"][frame] & ex["sentinel2_l2a/band_valid"][frame][idx].all()
    return np.where(ok[..., None], rgb, 0.5)


def render_strip(
    exs: Sequence[dict[str, np.ndarray]], path: str, *, max_frames: int = DEFAULT_STRIP_FRAMES
) -> None:
    """A PNG: one row per example, its Sentinel-2 frames in time order, then the land cover."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(exs))
    cols = max_frames + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, ex in enumerate(exs):
        frames = np.flatnonzero(ex["sentinel2_l2a/frame_valid"])[:max_frames]
        for c, t in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(true_colour(ex, t), interpolation="nearest")
            day = np.datetime64(int(ex["sentinel2_l2a/times_ms"][t]), "ms").astype("datetime64[D]")
            ax.set_title(str(day), fontsize=6)
        ax = axes[r, -1]
        lc = np.ma.masked_less(ex["target/landcover"], 0)
        ax.imshow(lc, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
        text = ex["target/text"].item().decode() or "?"
        ax.set_title(f"{ex['sample_id'].item().decode()}\n{text}", fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with FileSystems.create(path) as f:
        f.write(buf.getvalue())


# ------------------------------------------------------------------------------- entry


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed inspect-tfrecords`."""
    args = build_parser().parse_args(argv)
    summary, strip = summarize(args.directory, max_records=args.max_records)
    png = args.out or posixpath.join(args.directory.rstrip("/"), "inspect.png")
    render_strip(strip, png, max_frames=args.frames)
    summary["png"] = png
    print(json.dumps(summary, indent=2))
    return 0
