"""`earthembed export`: a trained workdir -> a model bundle (no pickle anywhere).

    earthembed export --workdir /tmp/run --out /tmp/bundle

A bundle is a directory:

    params.msgpack   the EMA teacher's parameters (flax.serialization msgpack: plain arrays)
    config.json      the full training config (model section used to rebuild the module)
    stats.json       the normalization statistics the model was trained with
    bundle.json      schema_version, model name and version, parameter count, training step,
                     created time, software version, and sha256 of each file above plus
                     `sha256`, the digest of those digests (the bundle's content hash)

`model.load_bundle(path)` checks every digest before it builds the model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from schemas import examples

BUNDLE_FILES = ("params.msgpack", "config.json", "stats.json")
BUNDLE_FORMAT = 1


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(digests: Mapping[str, str]) -> str:
    """One digest over the files' digests (sorted by name)."""
    text = "\n".join(f"{name} {digests[name]}" for name in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("earthembed")
    except Exception:
        return "unknown"


def write_bundle(
    out: str,
    params,
    config: Mapping,
    stats: Mapping,
    *,
    step: int,
) -> str:
    """Write a bundle directory atomically (built beside `out`, then renamed into place)."""
    import flax.serialization
    import jax

    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is shared like any package data
    try:
        with open(os.path.join(tmp, "params.msgpack"), "wb") as f:
            f.write(flax.serialization.msgpack_serialize(params))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(dict(config), f, indent=2, sort_keys=True, default=list)
        stats = {k: v for k, v in stats.items() if k != "data"}
        with open(os.path.join(tmp, "stats.json"), "w") as f:
            json.dump(stats, f, indent=2, sort_keys=True)
        digests = {name: sha256_file(os.path.join(tmp, name)) for name in BUNDLE_FILES}
        sha = content_hash(digests)
        n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
        meta = {
            "bundle_format": BUNDLE_FORMAT,
            "schema_version": examples.SCHEMA_VERSION,
            "name": config.get("name", "model"),
            "version": f"{config.get('name', 'model')}-{sha[:12]}",
            "parameters": n_params,
            "step": int(step),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "software_version": software_version(),
            "files": digests,
            "sha256": sha,
        }
        with open(os.path.join(tmp, "bundle.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        if os.path.exists(out):
            old = f"{out}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_workdir(workdir: str, out: str) -> str:
    """The latest checkpoint of a training workdir -> a bundle at `out`."""
    import ml_collections
    import tensorflow as tf

    from model import train

    with tf.io.gfile.GFile(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with tf.io.gfile.GFile(os.path.join(workdir, "stats.json")) as f:
        stats = json.load(f)
    params, step = train.restore_latest(workdir, config)
    return write_bundle(out, params, config.to_dict(), stats, step=step)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="earthembed export",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--workdir", required=True, help="training workdir (checkpoints, config.json) (required)"
    )
    p.add_argument("--out", required=True, help="bundle directory to write (required)")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = export_workdir(args.workdir, args.out)
    with open(os.path.join(out, "bundle.json")) as f:
        meta = json.load(f)
    print(f"wrote {out}: {meta['version']}, {meta['parameters']} parameters, step {meta['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
