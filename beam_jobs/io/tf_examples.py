"""The TensorFlow parser of the training examples of schemas/examples.py (tf.io.parse_example).

The layout is the contract in `schemas.examples.feature_layout`; this module only turns it
into a `tf.io` feature spec and parses serialized examples with it, for tf.data. TensorFlow is
imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import sensors
from schemas.examples import feature_layout


def tf_feature_spec(
    *, patch_size: int, max_frames: int, sources: Sequence[str] = sensors.SOURCE_IDS
) -> dict:
    """name -> tf.io.FixedLenFeature for `tf.io.parse_example` (imports TensorFlow)."""
    import tensorflow as tf

    kinds = {"float": tf.float32, "int64": tf.int64, "bytes": tf.string}
    return {
        name: tf.io.FixedLenFeature(list(f.shape), kinds[f.stored])
        for name, f in feature_layout(
            patch_size=patch_size, max_frames=max_frames, sources=sources
        ).items()
    }


def parse_examples(
    serialized,
    *,
    patch_size: int,
    max_frames: int,
    sources: Sequence[str] = sensors.SOURCE_IDS,
) -> dict:
    """Serialized examples (a [B] or scalar string tensor) -> name -> tf.Tensor.

    Shapes are those of `feature_layout` (with a leading batch dimension for a [B] input);
    masks (`valid`, `frame_valid`) come back as tf.bool, the rest as stored. Use it in
    tf.data: `ds.batch(B).map(functools.partial(parse_examples, patch_size=P, max_frames=T))`.
    """
    import tensorflow as tf

    spec = tf_feature_spec(patch_size=patch_size, max_frames=max_frames, sources=sources)
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    if serialized.shape.rank == 0:
        parsed = tf.io.parse_single_example(serialized, spec)
    else:
        parsed = tf.io.parse_example(serialized, spec)
    layout = feature_layout(patch_size=patch_size, max_frames=max_frames, sources=sources)
    out = {}
    for name, tensor in parsed.items():
        out[name] = tf.cast(tensor, tf.bool) if layout[name].dtype == "bool" else tensor
    return out
