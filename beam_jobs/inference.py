"""The Flax model bundle behind Beam's RunInference: one handler for chips and point sets.

    handler = FlaxEmbeddingModelHandler("model/weights/tiny", batch_size=16)
    chips | RunInference(KeyedModelHandler(handler))  # (chip, EmbedRequest) -> (chip, result)

An element is an `EmbedRequest`: the observations of one square window (a chip with its halo)
or of a point set (H = N, W = 1), and the period its embedding summarizes. The handler turns
requests into the model's inputs with the bundle's own `prepare` / `prepare_points` (so the
frame selection and normalization are the ones the bundle was trained with; a window request
may arrive prepared, `EmbedRequest.items`: embed's reader thread prepares chips with the same
`prepare_items` while the model runs), stacks them into
batches of exactly `batch_size` items (the last one padded with empty inputs, so the jit
function compiles once per chip size), and returns per request a float32 array of unit vectors:
(P, P, 64) for a window, (N, 64) for a point set, NaN where a pixel had no valid observation.

Points are prepared all at once per request (vectorized; `bundle.prepare_points`), and a
point's inputs never depend on which points share its request (the output does not change
with --batch-size).

Loading: once per process (a bundle on gs:// is first copied to a local folder); Beam's
RunInference keeps the loaded model in a per-process shared cache. `share_across_processes=True`
(GPU or TPU workers) loads it once per VM instead, in a separate process that the SDK worker
processes call into, so several processes never fight over one accelerator's memory.
`compute_dtype="bfloat16"` runs the model in bf16 on accelerators. Batching:
`batch_elements_kwargs` asks BatchElements for batches of exactly `batch_size` model items (a
point-set request counts as N items), so no call runs a mostly padded batch except the last of
a bundle.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult

from beam_jobs import flags
from schemas.grid import GridWindow
from schemas.observations import Observations

log = logging.getLogger(__name__)

# Chips per model call (defined with the other defaults of the command line).
DEFAULT_BATCH_SIZE = flags.DEFAULT_CHIP_BATCH_SIZE
COMPUTE_DTYPES = ("float32", "bfloat16")
# Where the warm-up batch pretends to lie (any valid UTM window; its inputs are all padding).
_WARMUP_WINDOW = GridWindow(32631, 600_000.0, 5_600_000.0, 1, 1)


class EmbeddingBundle(Protocol):
    """What the handler needs of a model bundle (`model.load_bundle` returns one)."""

    version: str
    sha256: str
    config: dict
    embedding_dim: int

    def prepare(
        self, obs: Observations, *, t_start_ms: int, t_end_ms: int, seed: int = 0
    ) -> dict[str, np.ndarray]: ...

    def prepare_points(
        self, obs: Observations, *, t_start_ms: int, t_end_ms: int
    ) -> dict[str, np.ndarray]: ...

    def pad_batch(self, items: list[dict[str, np.ndarray]], batch_size: int) -> dict: ...

    def embed_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray: ...

    # model.Bundle also has batch_inputs(batch) -> inputs and embed_inputs(inputs), which
    # embed_items uses (when present) to free the stacked batch before the model runs.


@dataclasses.dataclass
class EmbedRequest:
    """Observations of one square window or one point set, and the period to summarize."""

    obs: Observations
    t_start_ms: int
    t_end_ms: int
    seed: int = 0
    # Carried unchanged to `PredictionResult.example` (embed: what the chip's result needs of
    # its observations, taken at read time).
    extra: Any = None
    # A window request only: the handler drops the observations' sources once the request is
    # prepared (`release_observations`), so a batch's observations are not held while the
    # model runs; `obs` keeps its window and read errors.
    release: bool = False
    # A window request only: its model items, prepared by the reader (`embed`'s prefetching
    # reader thread prepares chips while the model runs) with `obs` already released; None:
    # the handler prepares `obs`.
    items: list[dict[str, np.ndarray]] | None = None
    _bytes: int | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def is_points(self) -> bool:
        return self.obs.window is None

    def release_observations(self) -> None:
        """Replace `obs` by its window and errors alone (num_bytes keeps the input's size)."""
        self._bytes = self.num_bytes
        self.obs = Observations(sources={}, window=self.obs.window, errors=list(self.obs.errors))

    @property
    def num_items(self) -> int:
        """Model items this request becomes: 1 for a window, N for a point set."""
        return self.obs.spatial_shape[0] if self.is_points else 1

    def take_items(self) -> list[dict[str, np.ndarray]] | None:
        """The prepared items, handed over once (the request no longer holds them;
        num_bytes keeps their size)."""
        if self.items is not None and self._bytes is None:
            self._bytes = self.num_bytes
        items, self.items = self.items, None
        return items

    @property
    def num_bytes(self) -> int:
        if self._bytes is not None:
            return self._bytes
        if self.items is not None:
            return sum(v.nbytes for it in self.items for v in it.values())
        return sum(
            sf.values.nbytes + sf.valid.nbytes + sf.times_ms.nbytes
            for sf in self.obs.sources.values()
        )


# ------------------------------------------------------------------------------- loading


def local_bundle_dir(path: str) -> str:
    """A bundle on an object store (gs://...) copied to a fresh local folder; a local path
    as it is. model.load_bundle reads local files and verifies every digest after the copy."""
    if "://" not in path:
        return path
    from apache_beam.io.filesystems import FileSystems

    found = FileSystems.match([path.rstrip("/") + "/*"])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"no model bundle files under {path}")
    local = tempfile.mkdtemp(prefix="earthembed-bundle-")
    for meta in found:
        name = meta.path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(meta.path) as src, open(os.path.join(local, name), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    log.info("copied model bundle %s to %s", path, local)
    return local


def load_bundle(path: str, compute_dtype: str = "float32") -> EmbeddingBundle:
    """`model.load_bundle` on a local or object-store path, imported on first use (JAX
    starts only where a model runs)."""
    from model import load_bundle as _load

    return _load(local_bundle_dir(path), compute_dtype=compute_dtype)


_CACHE: dict[tuple[str, str], EmbeddingBundle] = {}
_CACHE_LOCK = threading.Lock()


def load_bundle_cached(path: str, compute_dtype: str = "float32") -> EmbeddingBundle:
    """One bundle per (path, dtype) per process: the launcher and every DoFn share it."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}; got {compute_dtype!r}")
    key = (str(path), compute_dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            started = time.perf_counter()
            _CACHE[key] = load_bundle(str(path), compute_dtype)
            log.info(
                "loaded model bundle %s (%s) in %.1f s",
                path,
                compute_dtype,
                time.perf_counter() - started,
            )
        return _CACHE[key]


def clear_bundle_cache() -> None:
    """Forget loaded bundles (tests swap the loader)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def empty_window_observations(patch_size: int) -> Observations:
    """Observations of a P x P window with no source at all: the model's padding input."""
    w = _WARMUP_WINDOW
    return Observations(sources={}, window=GridWindow(w.epsg, w.x0, w.y0, patch_size, patch_size))


def warm_up(bundle: EmbeddingBundle, patch_size: int, batch_size: int) -> float:
    """Compile the model for (batch_size, P) with one all-padding batch; returns seconds."""
    started = time.perf_counter()
    item = bundle.prepare(empty_window_observations(patch_size), t_start_ms=0, t_end_ms=1)
    np.asarray(bundle.embed_batch(bundle.pad_batch([item], batch_size)))
    return time.perf_counter() - started


# ------------------------------------------------------------------------------- heap

# Arrays above this many bytes get their own mmap (glibc's default threshold starts at
# 128 KiB but rises to 32 MiB after such blocks are freed, after which a chip's 4-20 MB
# arrays come from the heap and fragment it: resident memory that numpy has freed).
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _libc():
    """glibc (None elsewhere: musl, macOS; the heap is then left as it is)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def bound_heap() -> None:
    """A fixed mmap threshold for this process (large arrays go back to the OS when freed)."""
    if (libc := _libc()) is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim_heap() -> None:
    """Return the heap's free pages to the OS (after a batch: its arrays are freed)."""
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


# ------------------------------------------------------------------------------- inference


def take_points(obs: Observations, start: int, end: int) -> Observations:
    """The points [start, end) of a point-set Observations (all frames kept)."""
    if obs.point_ids is None:
        raise ValueError("take_points needs a point set")
    rows = slice(start, end)
    return Observations(
        sources={k: sf.crop(rows, slice(None)) for k, sf in obs.sources.items()},
        point_ids=obs.point_ids[rows],
        lon=None if obs.lon is None else obs.lon[rows],
        lat=None if obs.lat is None else obs.lat[rows],
        errors=list(obs.errors),
    )


def prepare_items(bundle: EmbeddingBundle, request: EmbedRequest) -> list[dict[str, np.ndarray]]:
    """A request -> the model items it becomes (one per window, one per point); a request
    the reader prepared hands over its items."""
    if (items := request.take_items()) is not None:
        return items
    if not request.is_points:
        h, w = request.obs.spatial_shape
        if h != w:
            raise ValueError(f"a window request must be square; got {h} x {w} px")
        return [
            bundle.prepare(
                request.obs,
                t_start_ms=request.t_start_ms,
                t_end_ms=request.t_end_ms,
                seed=request.seed,
            )
        ]
    # All points of the request at once; a point's inputs (its frame draw) do not depend on
    # which other points share the request, so the output does not depend on the chunking.
    stacked = bundle.prepare_points(
        request.obs, t_start_ms=request.t_start_ms, t_end_ms=request.t_end_ms
    )
    arrays = {k: np.asarray(v) for k, v in stacked.items()}
    return [{k: v[i] for k, v in arrays.items()} for i in range(request.num_items)]


def embed_items(
    bundle: EmbeddingBundle,
    items: list[Mapping[str, np.ndarray]],
    batch_size: int,
    *,
    release: bool = False,
) -> np.ndarray:
    """Model items -> (len(items), P, P, D) float32, in fixed batches of `batch_size`.

    `release` replaces each item of `items` by None once its batch is stacked, so a batch's
    prepared arrays are not held twice while the model runs (embed_requests: ~44 MB per
    128 px chip of the tiny bundle).
    """
    if not items:
        raise ValueError("embed_items needs at least one item")
    out = []
    for i in range(0, len(items), batch_size):
        batch = bundle.pad_batch([dict(x) for x in items[i : i + batch_size]], batch_size)
        n = min(batch_size, len(items) - i)
        if release:  # the stacked batch holds them now: free the items before the model runs
            items[i : i + n] = [None] * n
        to_inputs = getattr(bundle, "batch_inputs", None)  # model.Bundle: hold one copy
        if to_inputs is None:
            emb = np.asarray(bundle.embed_batch(batch), np.float32)
        else:
            inputs = to_inputs(batch)
            del batch
            emb = np.asarray(bundle.embed_inputs(inputs), np.float32)
            del inputs
        out.append(emb[:n])
    return np.concatenate(out)


def embed_requests(
    bundle: EmbeddingBundle, requests: Sequence[EmbedRequest], batch_size: int
) -> list[np.ndarray]:
    """Requests -> per request (P, P, D) for a window or (N, D) for a point set."""
    items: list[dict[str, np.ndarray]] = []
    counts = []
    for r in requests:
        new = prepare_items(bundle, r)
        if r.release and not r.is_points:
            r.release_observations()
        items += new
        counts.append(len(new))
        del new  # `items` alone holds them (embed_items releases them batch by batch)
    if not items:
        return [np.zeros((0, bundle.embedding_dim), np.float32) for _ in requests]
    emb = embed_items(bundle, items, batch_size, release=True)
    out, i = [], 0
    for r, n in zip(requests, counts, strict=True):
        part = emb[i : i + n]
        i += n
        out.append(part.reshape(n, -1) if r.is_points else part[0])
    return out


def _request_items(element: Any) -> int:
    """BatchElements weight of an element, keyed `(key, request)` or bare."""
    if isinstance(element, tuple) and len(element) == 2:
        element = element[1]
    return max(1, int(getattr(element, "num_items", 1)))


class FlaxEmbeddingModelHandler(ModelHandler[EmbedRequest, np.ndarray, EmbeddingBundle]):
    """RunInference handler for exported Flax embedding bundles.

    Args:
        bundle_path: the bundle directory (local or any path `model.load_bundle` opens).
        batch_size: model items per call; every call runs exactly this shape (padded).
        compute_dtype: 'float32', or 'bfloat16' for accelerators.
        share_across_processes: load one model per VM and share it between the SDK worker
            processes (GPU/TPU workers); otherwise one per process.
        warmup_patch_size: compile for (batch_size, P, P) at load time by running one
            all-padding batch (for latency-bound streaming use); None (the batch jobs) lets
            the first real batch compile, since the warm-up batch costs as much as a real
            one (on 2 CPU cores the tiny model's 16 x 128 px batch takes ~100 s).
    """

    def __init__(
        self,
        bundle_path: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compute_dtype: str = "float32",
        share_across_processes: bool = False,
        warmup_patch_size: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1; got {batch_size}")
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute dtype must be one of {COMPUTE_DTYPES}; got {compute_dtype!r}"
            )
        super().__init__(
            min_batch_size=batch_size,
            max_batch_size=batch_size,
            element_size_fn=_request_items,
            large_model=share_across_processes,
        )
        self._bundle_path = str(bundle_path)
        self._batch_size = batch_size
        self._compute_dtype = compute_dtype
        self._warmup_patch_size = warmup_patch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def load_model(self) -> EmbeddingBundle:
        """The bundle (cached per process), compiled for the job's chip shape."""
        bound_heap()
        bundle = load_bundle_cached(self._bundle_path, self._compute_dtype)
        if self._warmup_patch_size:
            s = warm_up(bundle, self._warmup_patch_size, self._batch_size)
            log.info(
                "compiled %s for batch %d x %d px in %.1f s",
                self._bundle_path,
                self._batch_size,
                self._warmup_patch_size,
                s,
            )
        else:
            log.info(
                "model %s loaded for inference (batches of %d, %s); the first batch compiles it",
                bundle.version,
                self._batch_size,
                self._compute_dtype,
            )
        return bundle

    def run_inference(
        self,
        batch: Sequence[EmbedRequest],
        model: EmbeddingBundle,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Requests -> PredictionResult(request, (P, P, D) or (N, D) float32 unit vectors)."""
        emb = embed_requests(model, list(batch), self._batch_size)
        trim_heap()
        return [PredictionResult(r, e) for r, e in zip(batch, emb, strict=True)]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError(f"the embedding handler takes no inference args; got {inference_args}")

    def get_num_bytes(self, batch: Sequence[EmbedRequest]) -> int:
        """Bytes of observations in a batch (what RunInference reports as its input size)."""
        return sum(r.num_bytes for r in batch)

    def get_metrics_namespace(self) -> str:
        return "embed_inference"


def keyed_handler(handler: FlaxEmbeddingModelHandler) -> KeyedModelHandler:
    """The handler for `(key, EmbedRequest)` pairs: chip ids or point-chunk ids ride along."""
    return KeyedModelHandler(handler)
