"""Embedding tiles -> an approximate-nearest-neighbour index (faiss) for planet-wide top-k, and
the search in it (`earthembed index`, `earthembed search`).

Runbook
-------
Locally (Python FnApiRunner):

    earthembed index --embeddings /tmp/demo_emb --period 2023 --out /tmp/demo_idx
    earthembed search --index /tmp/demo_idx --query 4.62,50.59 --k 10
    earthembed search --index /tmp/demo_idx --vector-file q.npy --k 100 --out hits.parquet

On Dataflow (tiles and index on GCS; CPU workers):

    earthembed index --embeddings gs://bucket/embeddings/v1 --period 2023 \\
        --out gs://bucket/index/v1_2023 --shard-vectors 500000000 \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

Input: the embedding tiles of one period (ours or AEF's public tiles, read through
`beam_jobs.io.embeddings`), int8 codes as stored; a pixel whose 64 codes are all -128 has no
embedding and is left out. The codes dequantize to unit vectors, so inner product = cosine.
`--min-confidence C` also leaves out the pixels whose quality-sidecar confidence is below C (or
unknown); the tiles must have our sidecar (AEF's have none: an error naming the tile, before
any work), and the manifest records C.

Kinds (`--kind`; benchmarks/index_bench.py measures them on 10^6 vectors):
- `exact`: the dequantized vectors in a flat inner-product index (float32, 264 B a vector with
  its id): exhaustive, exact; the yardstick.
- `ivf-fp16` (default): an inverted file (`nlist` k-means cells on a training sample, searched
  in the `nprobe` nearest cells) whose vectors are stored as float16 (136 B a vector). float16
  keeps the dequantized values to 2^-11, so the ranking is the exact one up to near-ties:
  recall@10 0.995 at the default nprobe (nlist / 8) on 10^6 clustered vectors.
- `ivf-sq8`: the same with faiss's 8-bit scalar quantizer of the residuals (72 B a vector).
  faiss's 8 bits are linear per dimension; re-quantizing the AEF square-root codes that way
  adds an error of the size of the stored one, and recall@10 against exact search stays below
  0.95 whatever `nprobe` (0.94 at nprobe 64 of 512 on the same vectors), so it is the compact
  choice, not the default.

How it works: the tiles are listed and numbered on the driver (errors before any work). For
the IVF kinds each tile gives a deterministic sample of its valid vectors, combined globally
(at most `--train-size`) and used to train one coarse quantizer shared by every shard, so
shards can be merged and their scores compared. Each tile is then read in 1024 px windows
and its vectors added (with their ids) to a copy of the trained index, written as a part;
the parts are merged in tile order into shards of at most `--shard-vectors` vectors; the
manifest is written last. A search reads the shards, searches each (fan-out) and merges their
top-k (a k-way merge by score).

Output in --out (faiss `write_index` files and JSON; nothing is pickled):

| path | what |
|---|---|
| `shards/{key}-{NNNNN}.faiss` | the shards, faiss indexes with the vectors' ids |
| `manifest.json` | kind, period, model version, min_confidence, nlist, nprobe, tiles, shards; written last |

A vector's id is `tile_number * 2**32 + row * width + col` (`tile_number`: the tile's place
in the manifest's `tiles`, whose entries carry id, path, CRS, north-up geotransform and size),
so a hit gives its tile, row and column, and the pixel centre's lon/lat, with no per-vector
table.

Resuming: a tile's part (`parts/{key}/`) and a shard are written atomically and reused by a
rerun with the same key (a hash of the kind, the training and the tiles' paths, sizes and
tags); the parts go when the manifest is written. Beam counters (namespace `index`): tiles,
vectors, parts_reused, shards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import posixpath
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import index_parser as build_parser
from beam_jobs.flags import search_parser
from beam_jobs.io import embeddings, files
from schemas.embedding import EMBEDDING_DIM, NODATA, dequantize

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

NAMESPACE = "index"
FORMAT = "earthembed-index/1"
MANIFEST = "manifest.json"
KINDS = ("exact", "ivf-fp16", "ivf-sq8")
DEFAULT_KIND = "ivf-fp16"
ID_BITS = 32  # pixel bits of an id: tiles up to 2^32 pixels (65536 x 65536)
DEFAULT_SHARD_VECTORS = 1 << 26  # 67M vectors: 9.1 GB of ivf-fp16, 4.8 GB of ivf-sq8
DEFAULT_TRAIN_SIZE = 1 << 17  # training vectors (8 MB of codes); enough for nlist 2048
MIN_POINTS_PER_CELL = 39  # faiss's k-means warns below this many training points a centroid
READ_BLOCK = 1024
ID_RULE = f"id = tile_number * 2**{ID_BITS} + row * width + col (north-up pixel indices)"

# ------------------------------------------------------------------------------- pure functions


def pixel_ids(tile_number: int, width: int, window: tuple[int, int, int, int]) -> np.ndarray:
    """int64 ids of a window's pixels (row-major) of tile `tile_number` (module docstring)."""
    r0, r1, c0, c1 = window
    rows = np.arange(r0, r1, dtype=np.int64)[:, None]
    cols = np.arange(c0, c1, dtype=np.int64)[None, :]
    return ((np.int64(tile_number) << ID_BITS) + rows * width + cols).reshape(-1)


def split_ids(ids: np.ndarray, widths: Sequence[int]) -> tuple[np.ndarray, ...]:
    """ids -> (tile_number, row, col), given each tile's width (by tile number)."""
    ids = np.asarray(ids, dtype=np.int64)
    number = ids >> ID_BITS
    pixel = ids & ((1 << ID_BITS) - 1)
    width = np.asarray(widths, dtype=np.int64)[number]
    return number, pixel // width, pixel % width


def valid_codes(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 64) int8 codes and their ids, without the pixels that have no embedding."""
    codes = np.asarray(codes).reshape(-1, EMBEDDING_DIM)
    keep = ~(codes == NODATA).all(axis=1)
    return codes[keep], np.asarray(ids, dtype=np.int64)[keep]


def choose_nlist(n_vectors: int, n_train: int) -> int:
    """Inverted-file cells: the power of two <= sqrt(n_vectors), at most n_train / 39, >= 1."""
    cap = max(1, min(int(math.isqrt(max(n_vectors, 1))), n_train // MIN_POINTS_PER_CELL))
    return 1 << (cap.bit_length() - 1)


def default_nprobe(nlist: int) -> int:
    """Cells searched: nlist / 8, at least 16 (or all of them). Measured on 10^6 clustered
    vectors (benchmarks/index_bench.py, nlist 512): recall@10 of ivf-fp16 0.905 at nprobe 16,
    0.968 at 32, 0.995 at 64."""
    return min(nlist, max(16, nlist // 8))


def new_index(kind: str, nlist: int = 1) -> faiss.Index:
    """An empty, untrained index of a kind (module docstring), inner product, with ids."""
    import faiss

    if kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(EMBEDDING_DIM))
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}; got {kind!r}")
    qtype = faiss.ScalarQuantizer.QT_fp16 if kind == "ivf-fp16" else faiss.ScalarQuantizer.QT_8bit
    quantizer = faiss.IndexFlatIP(EMBEDDING_DIM)
    # Residuals have a smaller range than the vectors: 8 bits go further; fp16 needs none.
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, EMBEDDING_DIM, nlist, qtype, faiss.METRIC_INNER_PRODUCT, kind == "ivf-sq8"
    )
    index.cp.seed = 1234
    index.cp.spherical = True  # centroids on the sphere, where the vectors are
    return index


def train_index(kind: str, sample: np.ndarray, *, nlist: int | None = None) -> faiss.Index:
    """An empty index of `kind` trained on sample codes (int8 (n, 64), nodata rows dropped).

    Args:
        kind: one of `KINDS`; `exact` needs no training (the sample is ignored).
        sample: int8 codes of the training vectors.
        nlist: inverted-file cells (None: `choose_nlist(len(sample) ...)`: the caller that
            knows the total count passes it).
    """
    if kind == "exact":
        return new_index(kind)
    codes, _ = valid_codes(sample, np.zeros(len(sample), np.int64))
    if len(codes) == 0:
        raise ValueError("no valid vectors to train the index on")
    nlist = nlist or choose_nlist(len(codes), len(codes))
    if nlist > len(codes):
        raise ValueError(f"--nlist {nlist} is more than the {len(codes)} training vectors")
    index = new_index(kind, nlist)
    index.train(dequantize(codes))
    return index


def clone_index(index: faiss.Index) -> faiss.Index:
    """A deep copy (faiss's own serialization)."""
    import faiss

    return faiss.deserialize_index(faiss.serialize_index(index))


def build_shard(
    codes: np.ndarray,
    ids: np.ndarray,
    *,
    kind: str = DEFAULT_KIND,
    trained: faiss.Index | None = None,
    nlist: int | None = None,
) -> faiss.Index:
    """An index of int8 codes as stored, with their ids.

    Args:
        codes: int8 (..., 64); pixels that are -128 in all 64 bands are left out.
        ids: int64 ids, one per pixel of `codes` (e.g. `pixel_ids`).
        kind: one of `KINDS`.
        trained: an empty trained index to copy (shards that will be merged or searched
            together share one); None trains one on these codes.
        nlist: cells when training here (None: `choose_nlist`).

    Returns:
        The index, holding the valid vectors under their ids.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.int8 or codes.shape[-1] != EMBEDDING_DIM:
        raise ValueError(
            f"codes must be int8 (..., {EMBEDDING_DIM}); got {codes.dtype} {codes.shape}"
        )
    codes, ids = valid_codes(codes, ids)
    if trained is None:
        index = train_index(kind, codes, nlist=nlist)
    else:
        index = clone_index(trained)
    if len(codes):
        index.add_with_ids(dequantize(codes), ids)
    return index


def merge_indexes(indexes: Iterable[faiss.Index]) -> faiss.Index:
    """One index holding every vector of `indexes` (same kind and training), ids kept."""
    indexes = list(indexes)
    if not indexes:
        raise ValueError("nothing to merge")
    out = clone_index(indexes[0])
    for other in indexes[1:]:
        out.merge_from(other, 0)
    return out


def merge_results(
    scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard top-k lists -> the overall top-k (a k-way merge by score).

    Args:
        scores: per shard, float (q, k_s) scores, best first.
        ids: per shard, int64 (q, k_s) ids; -1 where a shard had fewer hits.
        k: hits kept per query.

    Returns:
        (scores (q, k), ids (q, k)) best first; ties broken by the smaller id; -1 / -inf pad.
    """
    s = np.concatenate([np.asarray(a, np.float32) for a in scores], axis=1)
    i = np.concatenate([np.asarray(a, np.int64) for a in ids], axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    i[~np.isfinite(s)] = -1
    return s, i


def search_shards(
    shards: Iterable[faiss.Index], queries: np.ndarray, k: int, *, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard for the top-k of each query and merge (`merge_results`).

    Args:
        shards: indexes built by `build_shard` / `merge_indexes`.
        queries: float (q, 64) unit vectors.
        k: hits per query.
        nprobe: inverted-file cells searched per shard (None: the index's own setting).
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
    scores, ids = [], []
    for shard in shards:
        params = None
        if nprobe is not None and isinstance(shard, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        d, i = shard.search(queries, k, params=params)
        scores.append(d)
        ids.append(i)
    if not scores:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1)
    return merge_results(scores, ids, k)


def unit_queries(vectors: np.ndarray, what: str = "query") -> np.ndarray:
    """Query vectors -> float32 (q, 64) unit vectors; int8 codes are dequantized first."""
    v = np.asarray(vectors)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != EMBEDDING_DIM:
        raise ValueError(
            f"{what}: vectors of length {v.shape[-1] if v.ndim else 0}; expected {EMBEDDING_DIM}"
        )
    v = dequantize(v) if v.dtype == np.int8 else v.astype(np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    bad = ~np.isfinite(norm[:, 0]) | (norm[:, 0] == 0)
    if bad.any():
        raise ValueError(f"{what}: vector {int(np.flatnonzero(bad)[0])} is empty, zero or NaN")
    return v / norm


def read_vector_file(path: str) -> np.ndarray:
    """Query vectors from .npy (float or int8 codes), Parquet (an `embedding` list column) or
    text (numbers separated by commas or spaces, a vector a line) -> (q, 64) unit vectors."""
    if not files.is_remote(path) and not os.path.exists(path):
        raise FileNotFoundError(f"--vector-file {path}: no such file")
    try:
        if path.endswith(".npy"):
            v = np.load(path, allow_pickle=False)
        elif path.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            name = next(
                (n for n in ("embedding", "embedding_int8") if n in table.column_names), None
            )
            if name is None:
                raise ValueError(
                    f"no `embedding` column (columns: {', '.join(table.column_names)})"
                )
            col = table.column(name).combine_chunks().drop_null()
            v = np.asarray(col.flatten().to_numpy(zero_copy_only=False)).reshape(len(col), -1)
        else:
            with open(path, encoding="utf-8") as f:
                rows = [line.replace(",", " ").split() for line in f if line.strip()]
            if len({len(r) for r in rows}) > 1:
                raise ValueError("lines of different lengths")
            v = np.array(rows, dtype=np.float32)
    except (ValueError, OSError) as e:
        raise ValueError(f"--vector-file {path}: {e}") from None
    return unit_queries(v, f"--vector-file {path}")


def plan_shards(parts: Sequence[tuple[int, int]], shard_vectors: int) -> list[list[int]]:
    """Group parts (tile_number, n_vectors), in tile order, into shards of at most
    `shard_vectors` vectors (a bigger part is a shard of its own). Returns tile numbers."""
    if shard_vectors < 1:
        raise ValueError(f"--shard-vectors must be >= 1; got {shard_vectors}")
    shards: list[list[int]] = []
    size = 0
    for number, n in sorted(parts):
        if not shards or size + n > shard_vectors:
            shards.append([])
            size = 0
        shards[-1].append(number)
        size += n
    return shards


def lonlat_of_pixels(tile: dict, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pixel centres of a manifest tile entry -> (lon, lat) in EPSG:4326."""
    import pyproj

    a, _, c, _, e, f = tile["transform"]
    x = c + (np.asarray(cols) + 0.5) * a
    y = f + (np.asarray(rows) + 0.5) * e
    tr = pyproj.Transformer.from_crs(tile["crs_wkt"], "EPSG:4326", always_xy=True)
    return tr.transform(x, y)


def pixel_at(tile: embeddings.EmbeddingTile, lon: float, lat: float) -> tuple[int, int] | None:
    """(row, col) of the tile's pixel containing a lon/lat, or None outside the tile."""
    import pyproj

    tr = pyproj.Transformer.from_crs("EPSG:4326", tile.crs_wkt, always_xy=True)
    x, y = tr.transform(lon, lat)
    a, _, c, _, e, f = tile.transform
    col, row = math.floor((x - c) / a), math.floor((y - f) / e)
    if 0 <= row < tile.height and 0 <= col < tile.width:
        return row, col
    return None


def query_at(tiles: Sequence[embeddings.EmbeddingTile], lon: float, lat: float) -> np.ndarray:
    """The stored vector (float32 (64,), unit) of the pixel at lon/lat in one of `tiles`."""
    for tile in tiles:
        hit = pixel_at(tile, lon, lat)
        if hit is None:
            continue
        r, c = hit
        codes = embeddings.read_tile_codes(tile, (r, r + 1, c, c + 1)).reshape(EMBEDDING_DIM)
        if (codes == NODATA).all():
            raise ValueError(
                f"--query {lon},{lat}: pixel ({r}, {c}) of {tile.tile_id} has no embedding"
            )
        return unit_queries(codes, "--query")[0]
    raise ValueError(f"--query {lon},{lat} lies outside every tile ({len(tiles)} searched)")


# ------------------------------------------------------------------------------- index files


def _write_faiss(index: faiss.Index, path: str) -> None:
    """faiss `write_index`, atomically (object stores: the serialized bytes)."""
    import faiss

    if files.is_remote(path):
        runner.write_bytes_atomic(path, faiss.serialize_index(index).tobytes())
        return
    with files.atomic_target(path) as tmp:
        faiss.write_index(index, tmp)


def _read_faiss(path: str, *, mmap: bool = False) -> faiss.Index:
    """faiss `read_index`; with `mmap` a local file is memory-mapped read-only, so a search
    touches only the cells it probes (such an index cannot be copied or merged into)."""
    import faiss
    from apache_beam.io.filesystems import FileSystems

    if files.is_remote(path):
        with FileSystems.open(path) as f:
            return faiss.deserialize_index(np.frombuffer(f.read(), np.uint8))
    if not os.path.exists(path):
        raise FileNotFoundError(f"index shard missing: {path}")
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    return faiss.read_index(path, flags)


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def _read_json(path: str) -> Any:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def tile_entry(number: int, tile: embeddings.EmbeddingTile) -> dict:
    """A tile's manifest entry (what maps its ids to pixels and lon/lat)."""
    return {
        "number": number,
        "tile_id": tile.tile_id,
        "path": tile.path if files.is_remote(tile.path) else os.path.abspath(tile.path),
        "crs_wkt": tile.crs_wkt,
        "transform": list(tile.transform),
        "height": tile.height,
        "width": tile.width,
        "bottom_up": tile.bottom_up,
        "period": tile.period,
    }


def entry_tile(entry: dict) -> embeddings.EmbeddingTile:
    """A manifest tile entry -> the EmbeddingTile to read it with."""
    return embeddings.EmbeddingTile(
        path=entry["path"],
        tile_id=entry["tile_id"],
        period=entry.get("period"),
        crs_wkt=entry["crs_wkt"],
        transform=tuple(entry["transform"]),
        height=entry["height"],
        width=entry["width"],
        bottom_up=entry["bottom_up"],
    )


def tiles_fingerprint(tiles: Sequence[embeddings.EmbeddingTile]) -> str:
    """What a part or shard depends on besides the training: paths, sizes, tags, file stats."""
    doc = []
    for t in tiles:
        stat = None
        if not files.is_remote(t.path):
            s = os.stat(t.path)
            stat = [s.st_size, s.st_mtime_ns]
        doc.append([t.path, t.height, t.width, list(t.transform), list(t.tags), stat])
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


# ------------------------------------------------------------------------------- DoFns


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """The run: inputs, output, kind and sizes (what the DoFns need)."""

    out: str
    kind: str
    period: str
    n_tiles: int
    fingerprint: str
    shard_vectors: int = DEFAULT_SHARD_VECTORS
    train_size: int = DEFAULT_TRAIN_SIZE
    nlist: int | None = None
    nprobe: int | None = None
    block: int = READ_BLOCK
    min_confidence: float | None = None

    @property
    def per_tile_sample(self) -> int:
        return max(1, -(-self.train_size // self.n_tiles))

    def part_path(self, key: str, number: int, suffix: str) -> str:
        return posixpath.join(self.out, "parts", key, f"{number:06d}{suffix}")

    def shard_path(self, key: str, shard: int) -> str:
        return posixpath.join(self.out, "shards", f"{key}-{shard:05d}.faiss")


def _windows(
    tile: embeddings.EmbeddingTile, block: int, min_confidence: float | None = None
) -> Iterator[tuple]:
    """(window, int8 codes (h*w, 64)) of a tile, window by window; with `min_confidence`, the
    pixels whose sidecar confidence is below it (or unknown) are NODATA (left out)."""
    for window in embeddings.tile_windows(tile, block):
        codes = embeddings.read_tile_codes(tile, window)
        if min_confidence is not None:
            analysis.check_confidence([tile], min_confidence)
            conf = embeddings.read_tile_quality(tile, window)["confidence"]
            codes[~(conf >= min_confidence)] = NODATA  # NaN (unknown) too
        yield window, codes.reshape(-1, EMBEDDING_DIM)


class SampleTileFn(beam.DoFn):
    """(number, tile) -> (valid vector count, int8 sample of at most ~per_tile_sample codes)."""

    def __init__(self, spec: IndexSpec):
        self._spec = spec

    def process(self, numbered: tuple[int, embeddings.EmbeddingTile]) -> Iterator:
        number, tile = numbered
        rng = np.random.default_rng([number, 20240])
        frac = min(1.0, self._spec.per_tile_sample / (tile.height * tile.width))
        count, picked = 0, []
        for _, codes in _windows(tile, self._spec.block, self._spec.min_confidence):
            codes = codes[~(codes == NODATA).all(axis=1)]
            count += len(codes)
            picked.append(codes[rng.random(len(codes)) < frac])
        yield count, np.concatenate(picked) if picked else np.zeros((0, EMBEDDING_DIM), np.int8)


class _ConcatSamples(beam.CombineFn):
    """(count, codes) pairs -> (total count, all codes)."""

    def create_accumulator(self):
        return 0, []

    def add_input(self, acc, element):
        return acc[0] + element[0], [*acc[1], element[1]]

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), [x for a in accs for x in a[1]]

    def extract_output(self, acc):
        parts = [p for p in acc[1] if len(p)]
        codes = np.concatenate(parts) if parts else np.zeros((0, EMBEDDING_DIM), np.int8)
        return acc[0], codes


def train_from_sample(spec: IndexSpec, counted: tuple[int, np.ndarray]) -> dict:
    """The combined sample -> {key, nlist, nprobe, index: serialized trained index}."""
    import faiss

    count, codes = counted
    if count == 0:
        raise ValueError(f"the tiles of period {spec.period} hold no valid pixel")
    if len(codes) > spec.train_size:
        keep = np.random.default_rng(0).choice(len(codes), spec.train_size, replace=False)
        codes = codes[np.sort(keep)]
    nlist = spec.nlist or choose_nlist(count, len(codes))
    index = train_index(spec.kind, codes, nlist=nlist)
    blob = faiss.serialize_index(index)
    key = hashlib.sha256(spec.fingerprint.encode() + blob.tobytes()).hexdigest()[:16]
    nprobe = spec.nprobe or default_nprobe(nlist)
    log.info("trained %s on %d of %d vectors: nlist %d", spec.kind, len(codes), count, nlist)
    return {"key": key, "nlist": nlist, "nprobe": nprobe, "index": blob}


def untrained(spec: IndexSpec) -> dict:
    """The `exact` kind's stand-in for training: an empty flat index."""
    import faiss

    blob = faiss.serialize_index(new_index("exact"))
    key = hashlib.sha256(spec.fingerprint.encode() + blob.tobytes()).hexdigest()[:16]
    return {"key": key, "nlist": 1, "nprobe": 1, "index": blob}


class BuildPartFn(beam.DoFn):
    """(number, tile) -> (number, n_vectors): the tile's vectors in a copy of the trained index,
    written to parts/{key}/ (reused when a rerun finds it)."""

    def __init__(self, spec: IndexSpec):
        self._spec = spec
        self._tiles = Metrics.counter(NAMESPACE, "tiles")
        self._vectors = Metrics.counter(NAMESPACE, "vectors")
        self._reused = Metrics.counter(NAMESPACE, "parts_reused")

    def process(self, numbered: tuple[int, embeddings.EmbeddingTile], trained: dict) -> Iterator:
        import faiss

        number, tile = numbered
        spec = self._spec
        done = spec.part_path(trained["key"], number, ".json")
        self._tiles.inc()
        if _exists(done):
            self._reused.inc()
            yield number, int(_read_json(done)["n_vectors"])
            return
        if tile.height * tile.width > 1 << ID_BITS:
            raise ValueError(f"{tile.path}: {tile.height} x {tile.width} px is over 2^{ID_BITS}")
        index = faiss.deserialize_index(trained["index"])
        for window, codes in _windows(tile, spec.block, spec.min_confidence):
            codes, ids = valid_codes(codes, pixel_ids(number, tile.width, window))
            if len(codes):
                index.add_with_ids(dequantize(codes), ids)
        _write_faiss(index, spec.part_path(trained["key"], number, ".faiss"))
        runner.write_bytes_atomic(done, _json_bytes({"n_vectors": int(index.ntotal)}))
        self._vectors.inc(int(index.ntotal))
        yield number, int(index.ntotal)


def merge_shard(spec: IndexSpec, shard: int, numbers: list[int], trained: dict) -> dict:
    """Merge the parts of tiles `numbers` into shard `shard`; returns its manifest entry."""
    path = spec.shard_path(trained["key"], shard)
    if _exists(path):  # the key fixes the content: a rerun's shard is the same
        index = _read_faiss(path)
    else:
        parts = [_read_faiss(spec.part_path(trained["key"], n, ".faiss")) for n in numbers]
        index = merge_indexes(parts)
        _write_faiss(index, path)
    Metrics.counter(NAMESPACE, "shards").inc()
    return {
        "path": posixpath.relpath(path, spec.out),
        "n_vectors": int(index.ntotal),
        "tiles": numbers,
    }


# ------------------------------------------------------------------------------- PTransforms


class BuildIndex(beam.PTransform):
    """(number, tile) pairs -> the index in spec.out (a singleton of its manifest)."""

    def __init__(self, spec: IndexSpec, manifest_base: dict):
        super().__init__()
        self._spec = spec
        self._base = manifest_base

    def expand(self, numbered):
        spec, base = self._spec, self._base
        tiles = numbered | "Redistribute" >> beam.Reshuffle()
        if spec.kind == "exact":
            trained = tiles.pipeline | "NoTraining" >> beam.Create([untrained(spec)])
        else:
            trained = (
                tiles
                | "SampleTiles" >> beam.ParDo(SampleTileFn(spec))
                | "CombineSamples" >> beam.CombineGlobally(_ConcatSamples())
                | "Train" >> beam.Map(lambda counted: train_from_sample(spec, counted))
            )
        side = beam.pvalue.AsSingleton(trained)
        parts = tiles | "BuildParts" >> beam.ParDo(BuildPartFn(spec), side)

        def shards_of(parts: list) -> list:
            return list(enumerate(plan_shards(parts, spec.shard_vectors)))

        def write_manifest(shards: list, parts: list, trained: dict) -> dict:
            return write_index_manifest(spec, base, trained, shards, dict(parts))

        return (
            parts
            | "GatherParts" >> beam.combiners.ToList()
            | "PlanShards" >> beam.FlatMap(shards_of)
            | "RedistributeShards" >> beam.Reshuffle()
            | "MergeShards" >> beam.Map(lambda s, t: merge_shard(spec, s[0], s[1], t), side)
            | "GatherShards" >> beam.combiners.ToList()
            | "WriteManifest"
            >> beam.Map(
                write_manifest,
                beam.pvalue.AsSingleton(parts | "PartsList" >> beam.combiners.ToList()),
                side,
            )
        )


def write_index_manifest(
    spec: IndexSpec, base: dict, trained: dict, shards: list[dict], counts: dict[int, int]
) -> dict:
    """Write manifest.json last (atomically), then drop the parts and stale shards."""
    from apache_beam.io.filesystems import FileSystems

    shards = sorted(shards, key=lambda s: s["path"])
    shard_of = {n: s["path"] for s in shards for n in s["tiles"]}
    tiles = [
        {**t, "n_vectors": counts[t["number"]], "shard": shard_of[t["number"]]}
        for t in base["tiles"]
    ]
    manifest = {
        **base,
        "key": trained["key"],
        "nlist": trained["nlist"],
        "nprobe": trained["nprobe"],
        "n_vectors": int(sum(counts.values())),
        "shards": shards,
        "tiles": tiles,
    }
    runner.write_bytes_atomic(posixpath.join(spec.out, MANIFEST), _json_bytes(manifest))
    keep = {posixpath.join(spec.out, s["path"]) for s in shards}
    pattern = posixpath.join(spec.out, "shards", "*.faiss")
    stale = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    stale = [path for path in stale if path not in keep]
    parts = posixpath.join(spec.out, "parts")
    if files.is_remote(parts):
        stale += [m.path for r in FileSystems.match([parts + "/*/*"]) for m in r.metadata_list]
    else:
        shutil.rmtree(parts, ignore_errors=True)
    if stale:
        FileSystems.delete(stale)
    return manifest


# ------------------------------------------------------------------------------- pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[embeddings.EmbeddingTile],
    spec: IndexSpec,
    manifest_base: dict,
) -> beam.Pipeline:
    """Add the job to `pipeline`: numbered tiles -> shards + manifest in spec.out."""
    _ = (
        pipeline
        | "Tiles" >> beam.Create(list(enumerate(tiles)))
        | "BuildIndex" >> BuildIndex(spec, manifest_base)
    )
    return pipeline


def period_label(text: str) -> str:
    """--period -> the folder name `embed` gives it: 2023 stays, START/END ISO dates and
    YYYYMMDD_YYYYMMDD become `embed.period_label`'s (a calendar year: the year)."""
    text = str(text).strip()
    if len(text) == 17 and text[8] == "_" and (text[:8] + text[9:]).isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:8]}/{text[9:13]}-{text[13:15]}-{text[15:]}"
    if "/" in text:
        from beam_jobs.embed import period_label as label

        return label(*runner.parse_period(text))
    return text


def model_of(tiles: Sequence[embeddings.EmbeddingTile]) -> dict:
    """The model version and sha256 the tiles' tags name (None for AEF's untagged tiles)."""
    seen = {(t.tag_dict.get("model_version"), t.tag_dict.get("model_sha256")) for t in tiles}
    if len(seen) > 1:
        raise ValueError(f"tiles of several models in one index: {sorted(seen, key=str)}")
    version, sha = seen.pop()
    return {"model_version": version, "model_sha256": sha}


def build_index(
    embeddings_path: str,
    period: str,
    out: str,
    *,
    kind: str = DEFAULT_KIND,
    shard_vectors: int = DEFAULT_SHARD_VECTORS,
    train_size: int = DEFAULT_TRAIN_SIZE,
    nlist: int | None = None,
    nprobe: int | None = None,
    min_confidence: float | None = None,
    beam_args: Sequence[str] = (),
    command: str = "",
) -> dict:
    """Build the index of a period's tiles with Beam (module docstring); returns the manifest.

    Raises:
        FileNotFoundError / ValueError: a bad input, naming the option, before any work.
    """
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}; got {kind!r}")
    for name, value in (("--shard-vectors", shard_vectors), ("--train-size", train_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    for name, value in (("--nlist", nlist), ("--nprobe", nprobe)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    period = period_label(period)
    tiles = embeddings.list_embedding_tiles(embeddings_path, period)
    analysis.check_confidence(tiles, min_confidence)
    base = {
        "format": FORMAT,
        "kind": kind,
        "metric": "inner product of unit vectors (cosine)",
        "dim": EMBEDDING_DIM,
        "period": period,
        **model_of(tiles),
        "min_confidence": min_confidence,
        "embeddings": os.fspath(embeddings_path),
        "id_rule": ID_RULE,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "software_version": embeddings._software_version(),
        "command": command,
        "tiles": [tile_entry(i, t) for i, t in enumerate(tiles)],
    }
    spec = IndexSpec(
        out=os.fspath(out),
        kind=kind,
        period=period,
        n_tiles=len(tiles),
        fingerprint=kind
        + tiles_fingerprint(tiles)
        + str(shard_vectors)
        + str(nlist)
        + f"min_confidence={min_confidence}",
        shard_vectors=shard_vectors,
        train_size=train_size,
        nlist=nlist,
        nprobe=nprobe,
        min_confidence=min_confidence,
    )
    log.info("indexing %d tiles of period %s (%s) -> %s", len(tiles), period, kind, spec.out)
    pipeline = runner.create_pipeline(runner.pipeline_options(list(beam_args)))
    build_pipeline(pipeline, tiles, spec, base)
    pipeline.run().wait_until_finish()
    return _read_json(posixpath.join(spec.out, MANIFEST))


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed index`."""
    import shlex

    started = time.time()
    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "earthembed index " + shlex.join(argv)
    try:
        manifest = build_index(
            args.embeddings,
            args.period,
            args.out,
            kind=args.kind,
            shard_vectors=args.shard_vectors,
            train_size=args.train_size,
            nlist=args.nlist,
            nprobe=args.nprobe,
            min_confidence=args.min_confidence,
            beam_args=beam_args,
            command=command,
        )
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"earthembed index: {e}") from None
    log.info(
        "done in %.1f s: %d vectors of %d tiles in %d shard(s), %s, nlist %d, nprobe %d -> %s",
        time.time() - started,
        manifest["n_vectors"],
        len(manifest["tiles"]),
        len(manifest["shards"]),
        manifest["kind"],
        manifest["nlist"],
        manifest["nprobe"],
        args.out,
    )
    return 0


# ------------------------------------------------------------------------------- search


@dataclasses.dataclass
class AnnIndex:
    """An index directory opened for search: its manifest, shards loaded on first use."""

    root: str
    manifest: dict
    _shards: list | None = None

    @property
    def tiles(self) -> list[embeddings.EmbeddingTile]:
        return [entry_tile(t) for t in self.manifest["tiles"]]

    def shards(self) -> list[faiss.Index]:
        if self._shards is None:
            self._shards = [
                _read_faiss(posixpath.join(self.root, s["path"]), mmap=True)
                for s in self.manifest["shards"]
            ]
        return self._shards

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None) -> pa.Table:
        """Top-k hits of each query (float (q, 64) or (64,)) -> `hits_table`."""
        if k < 1:
            raise ValueError(f"--k must be >= 1; got {k}")
        if nprobe is not None and nprobe < 1:
            raise ValueError(f"--nprobe must be >= 1; got {nprobe}")
        q = unit_queries(queries)
        scores, ids = search_shards(self.shards(), q, k, nprobe=nprobe or self.manifest["nprobe"])
        return hits_table(self.manifest, scores, ids)


def open_index(path: str | os.PathLike) -> AnnIndex:
    """Open an index directory written by `earthembed index`; errors name --index."""
    root = os.fspath(path)
    manifest_path = posixpath.join(root, MANIFEST)
    if not _exists(manifest_path):
        what = (
            "no such directory"
            if not _exists(root)
            else f"no {MANIFEST} (not built, or unfinished)"
        )
        raise FileNotFoundError(f"--index {root}: {what}")
    manifest = _read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"--index {root}: format {manifest.get('format')!r}, expected {FORMAT}")
    return AnnIndex(root, manifest)


def hits_table(manifest: dict, scores: np.ndarray, ids: np.ndarray) -> pa.Table:
    """(q, k) scores and ids -> one row per hit: query, rank, score, tile_id, row, col, lon,
    lat (the pixel centre); schema metadata `earthembed` names the index's period and model."""
    q, k = ids.shape
    query = np.repeat(np.arange(q, dtype=np.int32), k)
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), q)
    flat_ids, flat_scores = ids.reshape(-1), scores.reshape(-1)
    keep = flat_ids >= 0
    query, rank, flat_ids, flat_scores = query[keep], rank[keep], flat_ids[keep], flat_scores[keep]
    tiles = manifest["tiles"]
    number, rows, cols = split_ids(flat_ids, [t["width"] for t in tiles])
    lon = np.zeros(len(flat_ids))
    lat = np.zeros(len(flat_ids))
    for n in np.unique(number):
        at = number == n
        lon[at], lat[at] = lonlat_of_pixels(tiles[int(n)], rows[at], cols[at])
    table = pa.table(
        {
            "query": pa.array(query, pa.int32()),
            "rank": pa.array(rank, pa.int32()),
            "score": pa.array(flat_scores.astype(np.float32)),
            "tile_id": pa.array([tiles[int(n)]["tile_id"] for n in number], pa.string()),
            "row": pa.array(rows.astype(np.int32)),
            "col": pa.array(cols.astype(np.int32)),
            "lon": pa.array(lon),
            "lat": pa.array(lat),
        }
    )
    meta = {k: manifest.get(k) for k in ("period", "model_version", "model_sha256", "kind")}
    return table.replace_schema_metadata({"earthembed": json.dumps(meta, sort_keys=True)})


def _parse_lonlat(text: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--query must be LON,LAT; got {text!r}") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"--query {text}: lon/lat out of range")
    return lon, lat


def query_vectors(
    index: AnnIndex,
    *,
    lonlats: Sequence[tuple[float, float]] = (),
    vector_file: str | None = None,
    embeddings_path: str | None = None,
    period: str | None = None,
) -> np.ndarray:
    """The queries of a search: stored vectors at lon/lats (in the indexed tiles, or in
    `embeddings_path` for `period`) or a vector file's; errors name the option."""
    if vector_file is not None:
        return read_vector_file(vector_file)
    indexed = index.manifest["period"]
    if period is not None and embeddings_path is None and period_label(period) != indexed:
        raise ValueError(f"--period {period}: the index holds period {indexed}")
    if embeddings_path is not None:
        tiles = embeddings.list_embedding_tiles(embeddings_path, period_label(period or indexed))
    else:
        tiles = index.tiles
    return np.stack([query_at(tiles, lon, lat) for lon, lat in lonlats])


def _print_hits(table: pa.Table) -> None:
    cols = ["query", "rank", "score", "tile_id", "row", "col", "lon", "lat"]
    print("\t".join(cols))
    for row in table.to_pylist():
        cells = [
            f"{row[c]:.6f}"
            if c == "score"
            else f"{row[c]:.7f}"
            if c in ("lon", "lat")
            else str(row[c])
            for c in cols
        ]
        print("\t".join(cells))


def run_search(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed search`."""
    import pyarrow.parquet as pq

    p = search_parser()
    args = p.parse_args(argv)
    try:
        index = open_index(args.index)
        lonlats = [_parse_lonlat(q) for q in args.query or []]
        queries = query_vectors(
            index,
            lonlats=lonlats,
            vector_file=args.vector_file,
            embeddings_path=args.embeddings,
            period=args.period,
        )
        table = index.search(queries, args.k, nprobe=args.nprobe)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"earthembed search: {e}") from None
    if args.out:
        with files.atomic_target(args.out) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        print(f"wrote {table.num_rows} hits to {args.out}")
    else:
        _print_hits(table)
    return 0
