"""tf.data over the TFRecords of build-training-data, sharded per host, resumable by step.

A training run may read several build directories (for instance simulated patches of two
biomes and P = 1 point examples of a real table). Each directory has its own patch size and
frame count, so each gets its own pipeline; every step draws one directory (seeded by the
step, weighted by example counts) and takes that pipeline's next batch. Everything that
decides a batch is a function of (seed, step), so a run resumed at step k sees exactly the
batches an uninterrupted run would: each pipeline skips the records it had already used.

Batches come out as numpy dicts with the parsed feature names of `schemas.examples` (only the
ones the model and its probes read); `crop_features` cuts the random context window and
`model.features.to_model_inputs` normalizes.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from model import features
from schemas import examples, sensors

TARGET_KEYS = ("target/landcover", "target/class_id")


@dataclasses.dataclass(frozen=True)
class DataDir:
    """One build-training-data output: where, its shapes, example counts and stats."""

    path: str
    patch_size: int
    max_frames: int
    stats: dict
    num_train: int
    num_eval: int

    def shards(self, split: str) -> list[str]:
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(posixpath.join(self.path, f"{split}-*.tfrecord.gz")))


def open_data_dir(path: str) -> DataDir:
    """Read a build directory's stats.json (shapes, counts, normalization statistics)."""
    import tensorflow as tf

    stats_path = posixpath.join(path.rstrip("/"), "stats.json")
    if not tf.io.gfile.exists(stats_path):
        raise FileNotFoundError(
            f"--data {path}: no stats.json; is it an `earthembed build-training-data` output?"
        )
    with tf.io.gfile.GFile(stats_path) as f:
        stats = json.load(f)
    if int(stats.get("schema_version", examples.SCHEMA_VERSION)) != examples.SCHEMA_VERSION:
        raise ValueError(
            f"{stats_path}: schema_version {stats.get('schema_version')} but this code reads "
            f"{examples.SCHEMA_VERSION}; rebuild the training data"
        )
    counts = stats.get("examples", {})
    d = DataDir(
        path=path.rstrip("/"),
        patch_size=int(stats["patch_size"]),
        max_frames=int(stats["max_frames"]),
        stats=stats,
        num_train=int(counts.get("train", 0)) if isinstance(counts, Mapping) else 0,
        num_eval=int(counts.get("eval", 0)) if isinstance(counts, Mapping) else 0,
    )
    if not d.shards("train"):
        raise FileNotFoundError(f"--data {path}: no train-*.tfrecord.gz shards")
    return d


def tf_feature_spec(
    *, patch_size: int, max_frames: int, sources: Sequence[str] = sensors.SOURCE_IDS
) -> dict:
    """name -> tf.io.FixedLenFeature of the stored features (imports TensorFlow).

    Coded values and packed masks are one bytes value each; `parse_examples` decodes them.
    """
    import tensorflow as tf

    kinds = {"float": tf.float32, "int64": tf.int64, "bytes": tf.string}
    out = {}
    layout = examples.feature_layout(patch_size=patch_size, max_frames=max_frames, sources=sources)
    for name, f in layout.items():
        if f.stored in ("codec", "bits"):
            out[name] = tf.io.FixedLenFeature([], tf.string)
        else:
            out[name] = tf.io.FixedLenFeature(list(f.shape), kinds[f.stored])
    return out


def _tf_unplanes(tf, data, n: int, count: int):
    """[B] strings of `count` x four byte planes of n values -> [B, count, n] uint32."""
    b = tf.io.decode_raw(data, tf.uint8)  # [B, count * 4 * n]
    b = tf.transpose(tf.reshape(b, [-1, count, 4, n]), [0, 1, 3, 2])
    return tf.bitcast(b, tf.uint32)


def _tf_unzigzag(tf, z):
    """Zigzag codes -> the int32 they stand for, as uint32 (two's complement, modulo 2^32)."""
    one = tf.constant(1, tf.uint32)
    return tf.bitwise.bitwise_xor(
        tf.bitwise.right_shift(z, one), tf.constant(0, tf.uint32) - tf.bitwise.bitwise_and(z, one)
    )


def decode_values(source: str, data, valid, band_valid):
    """TF twin of `examples.decode_values`: [B] `{s}/values` strings, [B, T, P, P] valid and
    [B, T, C] band_valid -> [B, T, P, P, C] float32, bit-identical to the numpy decoder.

    Integer arithmetic is uint32 (wraps modulo 2^32, as the codec is defined), the
    reconstruction float32 multiply and add.
    """
    import tensorflow as tf

    shape = valid.shape[1:]  # T, P, P
    n = int(np.prod(shape))
    bands = sensors.get_sensor(source).bands
    codecs = [examples.band_codec(b) for b in bands]
    n_res = sum(c.mode == "scaled" for c in codecs)
    planes = _tf_unzigzag(tf, _tf_unplanes(tf, data, n, len(bands) + n_res))
    out, k = [], len(bands)
    for c, codec in enumerate(codecs):
        d = tf.reshape(planes[:, c], [-1, *shape])
        for _ in range(codec.order_y):
            d = tf.cumsum(d, axis=-2)
        for _ in range(codec.order_x):
            d = tf.cumsum(d, axis=-1)
        if codec.mode == "scaled":
            res = tf.reshape(planes[:, k], [-1, *shape])
            k += 1
            r = tf.cast(tf.bitcast(d, tf.int32), tf.float32) * tf.constant(codec.step, tf.float32)
            r = r + tf.constant(codec.offset, tf.float32)
            d = tf.bitcast(r, tf.uint32) + res
        out.append(tf.bitcast(d, tf.float32))
    values = tf.stack(out, axis=-1)
    usable = tf.logical_and(valid[..., None], band_valid[:, :, None, None, :])
    return tf.where(usable, values, tf.zeros_like(values))


def unpack_mask(packed, shape: Sequence[int]):
    """TF twin of `examples.unpack_mask`: [B] strings -> [B, *shape] bool."""
    import tensorflow as tf

    n = int(np.prod(shape))
    b = tf.cast(tf.io.decode_raw(packed, tf.uint8), tf.int32)  # [B, ceil(n / 8)]
    shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.int32)
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(b[..., None], shifts), 1)
    bits = tf.reshape(bits, [tf.shape(b)[0], -1])[:, :n]
    return tf.reshape(tf.cast(bits, tf.bool), [-1, *shape])


def parse_examples(
    serialized,
    *,
    patch_size: int,
    max_frames: int,
    sources: Sequence[str] = sensors.SOURCE_IDS,
    keys: Sequence[str] | None = None,
) -> dict:
    """Serialized examples (a [B] or scalar string tensor) -> name -> tf.Tensor.

    Shapes are those of `feature_layout` (with a leading batch dimension for a [B] input);
    masks come back as tf.bool, values as float32 decoded from their stored codes (the
    arrays `examples.example_features` built, bit for bit), the rest as stored. `keys`: only
    those features (default all). Records of another schema version fail with an
    InvalidArgumentError naming both versions. Use it in tf.data:
    `ds.batch(B).map(functools.partial(parse_examples, patch_size=P, max_frames=T))`.
    """
    import tensorflow as tf

    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    scalar = serialized.shape.rank == 0
    batch = serialized[None] if scalar else serialized
    layout = examples.feature_layout(patch_size=patch_size, max_frames=max_frames, sources=sources)
    spec = tf_feature_spec(patch_size=patch_size, max_frames=max_frames, sources=sources)
    want = list(keys) if keys is not None else list(layout)
    needed = set(want)
    for name in want:  # a source's values decode with its masks
        if layout[name].stored == "codec":
            source = name.split("/")[0]
            needed |= {f"{source}/valid", f"{source}/band_valid"}
    version = tf.io.parse_example(
        batch, {"schema_version": tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
    )["schema_version"]
    check = tf.debugging.assert_equal(
        version,
        tf.constant(examples.SCHEMA_VERSION, tf.int64),
        message=(
            f"examples of another schema_version (-1: none); this code reads schema_version "
            f"{examples.SCHEMA_VERSION} (values in source encodings since 2): rebuild the "
            "training data with `earthembed build-training-data`"
        ),
    )
    with tf.control_dependencies([check]):
        parsed = tf.io.parse_example(tf.identity(batch), {n: spec[n] for n in needed})
    out = {}
    for name in needed:
        f = layout[name]
        if f.stored == "bits":
            out[name] = unpack_mask(parsed[name], f.shape)
        elif f.dtype == "bool":
            out[name] = tf.cast(parsed[name], tf.bool)
        elif f.stored != "codec":
            out[name] = parsed[name]
    for name in want:
        if layout[name].stored == "codec":
            source = name.split("/")[0]
            out[name] = decode_values(
                source, parsed[name], out[f"{source}/valid"], out[f"{source}/band_valid"]
            )
    out = {name: out[name] for name in want}
    return {k: v[0] for k, v in out.items()} if scalar else out


def _keys(d: DataDir) -> list[str]:
    """The features training reads (the model's inputs and targets)."""
    return list(features.example_keys() + TARGET_KEYS)


def dataset(
    d: DataDir,
    split: str,
    *,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 256,
    repeat: bool = True,
    skip_records: int = 0,
    process_index: int = 0,
    process_count: int = 1,
):
    """Parsed, shuffled, batched tf.data.Dataset of one build directory (deterministic).

    Files are sharded over hosts (every host reads its own files; with fewer files than
    hosts, records are sharded instead). `skip_records` drops that many serialized records
    before parsing: how a resumed run catches up without decoding what it had used.
    """
    import tensorflow as tf

    files = d.shards(split)
    if not files:
        raise FileNotFoundError(f"{d.path}: no {split}-*.tfrecord.gz shards")
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if process_count > 1:
        ds = ds.shard(process_count, process_index)
    if repeat:
        ds = ds.repeat()
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if skip_records:
        ds = ds.skip(skip_records)
    keys = _keys(d)
    ds = ds.batch(batch_size, drop_remainder=repeat)
    ds = ds.map(
        lambda s: parse_examples(s, patch_size=d.patch_size, max_frames=d.max_frames, keys=keys),
        num_parallel_calls=2,
        deterministic=True,
    )
    return ds.prefetch(2)


def _as_numpy(batch: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for k, v in batch.items():
        a = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        out[k] = a.astype(bool) if k.endswith("/valid") or k.endswith("_valid") else a
    return out


def crop_features(
    feats: Mapping[str, np.ndarray], size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A random size x size window (one offset per batch) of the spatial features."""
    p = feats["target/landcover"].shape[1]
    if size >= p:
        return dict(feats)
    i, j = (int(v) for v in rng.integers(0, p - size + 1, size=2))
    out = {}
    for k, v in feats.items():
        if k.endswith("/values") or k.endswith("/valid"):
            out[k] = v[:, :, i : i + size, j : j + size]
        elif k == "target/landcover":
            out[k] = v[:, i : i + size, j : j + size]
        else:
            out[k] = v
    return out


def source_choice(seed: int, step: int, weights: np.ndarray) -> int:
    """Which data directory step `step` draws from (reproducible from seed and step)."""
    if len(weights) == 1:
        return 0
    u = np.random.default_rng([seed, step, 7]).random()
    return int(np.searchsorted(np.cumsum(weights) / np.sum(weights), u, side="right"))


class TrainBatches:
    """Iterator of (step, dir index, raw numpy batch) starting at `start_step`.

    `weights` (one per directory) set how often each is drawn; by default its example count.
    """

    def __init__(
        self,
        dirs: Sequence[DataDir],
        *,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        shuffle_buffer: int = 256,
        weights: Sequence[float] = (),
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.dirs = list(dirs)
        self.batch_size = batch_size
        self.seed = seed
        self.step = start_step
        if weights and len(weights) != len(self.dirs):
            raise ValueError(f"{len(weights)} data weights for {len(self.dirs)} data directories")
        self.weights = np.array(
            list(weights) or [max(d.num_train, 1) for d in self.dirs], np.float64
        )
        used = np.zeros(len(self.dirs), np.int64)
        for s in range(start_step):
            used[source_choice(seed, s, self.weights)] += 1
        self._iters = [
            iter(
                dataset(
                    d,
                    "train",
                    batch_size=batch_size,
                    seed=seed + k,
                    shuffle_buffer=shuffle_buffer,
                    skip_records=int(used[k]) * batch_size,
                    process_index=process_index,
                    process_count=process_count,
                )
            )
            for k, d in enumerate(self.dirs)
        ]

    def __iter__(self) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        return self

    def __next__(self) -> tuple[int, int, dict[str, np.ndarray]]:
        k = source_choice(self.seed, self.step, self.weights)
        batch = _as_numpy(next(self._iters[k]))
        step = self.step
        self.step += 1
        return step, k, batch


def eval_batches(
    d: DataDir, *, batch_size: int, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """The first `max_batches` batches of the eval split (falls back to train), in order."""
    split = "eval" if d.shards("eval") else "train"
    ds = dataset(d, split, batch_size=batch_size, seed=0, shuffle_buffer=0, repeat=False)
    for i, batch in enumerate(ds):
        if i >= max_batches:
            return
        yield _as_numpy(batch)
