"""The Flax embedding model: modules, losses, training, export and bundles.

`from model import load_bundle` loads an exported bundle (imports JAX on first use only).
"""

from __future__ import annotations


def load_bundle(path: str, compute_dtype: str = "float32"):
    """See `model.bundle.load_bundle`."""
    from model.bundle import load_bundle as _load

    return _load(path, compute_dtype)
